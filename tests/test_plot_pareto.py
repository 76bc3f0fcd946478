"""plot_pareto.py: the hypervolume it prints, writes and draws is the front's, checked against a hand computation."""

import json

import pytest

import plot_pareto
from nas_llm.common.errors import UsageError

# (error, params) of five sub-networks; (0.4, 0.6) is dominated by (0.2, 0.5).
EVALUATIONS = [(0.3, 0.2), (0.2, 0.5), (0.1, 0.8), (0.4, 0.6), (0.5, 0.1)]
# By hand, the front sorted by error, with reference (1, 1): each point adds the strip between its params and
# the previous point's: 0.9 * (1 - 0.8) + 0.8 * (0.8 - 0.5) + 0.7 * (0.5 - 0.2) + 0.5 * (0.2 - 0.1).
HAND_HYPERVOLUME = 0.18 + 0.24 + 0.21 + 0.05


def test_plotted_printed_and_written_hypervolume_is_the_hand_computed_one(tmp_path, capsys, monkeypatch):
    results = tmp_path / "results_rte.json"
    results.write_text(json.dumps({"evaluations": [{"error": e, "params": p} for e, p in EVALUATIONS]}))
    legends = []
    close = plot_pareto.plt.close

    def record_legend_then_close(figure) -> None:
        legends.extend(text.get_text() for text in figure.axes[0].get_legend().get_texts())
        close(figure)

    monkeypatch.setattr(plot_pareto.plt, "close", record_legend_then_close)
    plot_pareto.main([str(results), "--output", str(tmp_path / "pareto.png"), "--labels", "search"])
    written = json.loads((tmp_path / "pareto.json").read_text())["hypervolume"][str(results)]
    assert written == pytest.approx(HAND_HYPERVOLUME)
    assert f"hypervolume {HAND_HYPERVOLUME:.4f}  {results}" in capsys.readouterr().out
    assert legends == [f"search: HV {HAND_HYPERVOLUME:.3f}"]


def test_files_that_are_not_results_and_missing_costs_are_one_line_errors(tmp_path):
    not_results = tmp_path / "config.json"
    not_results.write_text(json.dumps({"model_type": "bert"}))
    without_latency = tmp_path / "results_rte.json"
    without_latency.write_text(json.dumps({"evaluations": [{"error": 0.2, "params": 0.5}]}))
    output = ["--output", str(tmp_path / "pareto.png")]
    with pytest.raises(UsageError, match=f"^results file '{tmp_path}/missing.json' does not exist; pass the "
                                         "results_<task>.json of run_offline_search.py$"):
        plot_pareto.main([str(tmp_path / "missing.json"), *output])
    with pytest.raises(UsageError, match=rf"^'{not_results}' is not a results file of run_offline_search.py "
                                         r"\(no 'evaluations'\)$"):
        plot_pareto.main([str(not_results), *output])
    with pytest.raises(UsageError, match="^the results hold no 'latency' costs; choose one of: params, flops, memory, "
                                         "latency$"):
        plot_pareto.main([str(without_latency), "--cost", "latency", *output])
