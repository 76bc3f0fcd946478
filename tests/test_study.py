"""The GLUE study's analysis: which sub-network a budget selects, relative performance, the generated report."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from study_glue import (  # noqa: E402
    BENCHMARKS_BEGIN,
    BENCHMARKS_END,
    StudySettings,
    TaskRuns,
    ablation_rows,
    ablation_table,
    analyse_task,
    best_under_budget,
    goal_verdicts,
    hypervolumes,
    phase_ablation,
    phase_paper_baselines,
    record_results,
    recovery_table,
    relative_performance,
    replace_between_markers,
)


def point(error: float, layer_params: int, test_accuracy: float) -> dict:
    return {"error": error, "num_layer_parameters": layer_params, "params": 0.5 + layer_params / 200,
            "test": {"accuracy": test_accuracy}}


def test_budget_selects_the_best_validation_point_within_the_encoder_budget():
    points = [point(0.10, 90, 0.91), point(0.20, 50, 0.70), point(0.15, 60, 0.80), point(0.20, 40, 0.75)]
    assert best_under_budget(points, 0.5, 100) is points[3]  # tie on error: the smaller one
    assert best_under_budget(points, 0.6, 100) is points[2]  # the test metric plays no part
    assert best_under_budget(points, 0.3, 100) is None


def test_relative_performance_is_raw_and_normalised_against_the_trivial_predictor():
    # MRPC dev: "always paraphrase" scores F1 0.812, a fine-tuned MiniLM 0.842
    relative = relative_performance(0.812, 0.842, 0.812)
    assert relative["raw"] > 0.96 and relative["normalised"] == 0.0
    assert math.isclose(relative_performance(0.827, 0.842, 0.812)["normalised"], 0.5)
    assert math.isnan(relative_performance(0.5, 0.5, 0.5)["normalised"])


def test_hypervolume_of_one_point_is_its_dominated_rectangle():
    hv = hypervolumes([point(0.2, 100, 0.7)], "accuracy")  # params 1.0: on the reference, nothing dominated
    assert hv == {"validation": 0.0, "test": 0.0}
    single = {"error": 0.2, "params": 0.5, "num_layer_parameters": 0, "test": {"accuracy": 0.7}}
    hv = hypervolumes([single], "accuracy")
    assert math.isclose(hv["validation"], 0.8 * 0.5) and math.isclose(hv["test"], 0.7 * 0.5)


def test_report_replaces_only_its_block_in_benchmarks_md(tmp_path):
    benchmarks = tmp_path / "BENCHMARKS.md"
    benchmarks.write_text("# Benchmarks\n\nhand-written\n")
    replace_between_markers(benchmarks, "first\n")
    replace_between_markers(benchmarks, "second\n")
    text = benchmarks.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written\n")
    assert f"{BENCHMARKS_BEGIN}\nsecond\n{BENCHMARKS_END}" in text and "first" not in text


def mrpc_point(error: float, layer_params: int, f1: float, accuracy: float) -> dict:
    return {"error": error, "num_layer_parameters": layer_params, "params": 0.5 + layer_params / 200,
            "test": {"f1": f1, "accuracy": accuracy}}


def test_mrpc_is_reported_by_f1_and_accuracy_each_against_its_own_trivial_predictor():
    unpruned = {"test": {"f1": 0.9, "accuracy": 0.85}, "validation": {}, "num_parameters": 1000}
    trivial = {"f1": 0.8, "accuracy": 0.7}
    methods = {"(b) one_shot": [mrpc_point(0.2, 50, 0.85, 0.80), mrpc_point(0.1, 90, 0.88, 0.82)]}
    analysis = analyse_task("mrpc", methods, unpruned, trivial, 100, {"(b) one_shot": 0.123})
    assert analysis["metrics"] == ["f1", "accuracy"]
    cells = analysis["methods"]["(b) one_shot"]["budgets"]
    assert math.isclose(cells["f1"]["0.5"]["normalised"], (0.85 - 0.8) / (0.9 - 0.8))
    assert math.isclose(cells["accuracy"]["0.5"]["normalised"], (0.80 - 0.7) / (0.85 - 0.7))
    assert math.isclose(cells["accuracy"]["0.9"]["raw"], 0.82 / 0.85)
    assert cells["f1"]["0.4"] is None
    # a searched row's validation hypervolume is the mean over its seeds' fronts, not the pooled front's
    assert analysis["methods"]["(b) one_shot"]["hypervolume"]["validation"] == 0.123


def test_mrpcs_recovery_table_gives_f1_and_accuracy_before_and_after():
    label = "(e) + budget-aware sampling"
    recovered = {"budget": 0.5, "encoder_fraction": 0.49, "total_fraction": 0.76, "runtime_s": 905.2,
                 "kept_epoch": 1, "test_before": {"f1": 0.84351, "accuracy": 0.76716},
                 "test_after": {"f1": 0.85246, "accuracy": 0.77941},
                 "reload": {"test": {"f1": 0.85246, "accuracy": 0.77941}, "matches_recorded": True}}
    analysis = {"main_metric": "f1", "metrics": ["f1", "accuracy"], "recovery": {label: [recovered]},
                "lstsq_recovery": {label: [{"budget": 0.5, "test_after": {"f1": 0.83, "accuracy": 0.7},
                                            "runtime_s": 669}]}}
    lines = recovery_table(analysis, label)
    assert lines[0].startswith(f"(f) {label} + recovery: test f1 / accuracy before and after")
    assert lines[4] == "| ≤50% | 0.49 | 0.76 | 0.8435 / 0.7672 | 0.8525 / 0.7794 (905) | 1 | 0.8300 / 0.7000 (669) |"
    assert lines[6].endswith("the ≤50% checkpoint scores test f1 0.8525: the metric extraction.json records.")


def verdict_analysis(recovered_accuracy: float | None) -> dict:
    def row(normalised: float, hv: float) -> dict:
        cell = {"test": 0.8, "normalised": normalised, "raw": 0.9, "validation_error": 0.2,
                "encoder_fraction": 0.45, "total_fraction": 0.7}
        return {"budgets": {"accuracy": {"0.5": cell}}, "hypervolume": {"validation": hv, "test": hv}}

    recovery = [] if recovered_accuracy is None else [{
        "budget": 0.5, "encoder_fraction": 0.45, "total_fraction": 0.7, "test_before": {"accuracy": 0.8},
        "runtime_s": 5.0,
        "test_after": {"accuracy": recovered_accuracy}}]
    return {
        "main_metric": "accuracy", "unpruned_test": {"accuracy": 0.9}, "trivial_test": {"accuracy": 0.5},
        "best_row": "(c) + importance ordering", "recovery": {"(c) + importance ordering": recovery},
        "complete_rows": ["(b) one_shot", "(c) + importance ordering", "(d) + fine-tuned teacher (logits)"],
        "methods": {
            "(b) one_shot": row(0.30, 0.30), "(c) + importance ordering": row(0.70, 0.40),
            "(d) + fine-tuned teacher (logits)": row(0.60, 0.35),
            "random_search on standard (baseline)": row(0.1, 0.38),
            "layer dropping (standard, baseline)": row(0.1, 0.20),
            "retraining-free pruning (Kwon et al., baseline)": row(0.9, 0.90),
        },
    }


def test_goal_lines_judge_the_recovered_sub_network_of_the_best_row_in_their_fixed_form():
    verdicts = goal_verdicts({"tasks": {"sst2": verdict_analysis(0.88)}})
    # recovered test 0.88 against unpruned 0.9 and trivial 0.5: normalised 0.95, raw 0.98
    assert verdicts[0] == (
        "sst2: at ≤50% encoder parameters, (f) (c) + importance ordering + recovery selects a sub-network with "
        "45% of the encoder (70% of all parameters), test accuracy 0.8800 vs unpruned 0.9000: normalised 0.95, "
        "raw 0.98 → goal (normalised ≥0.90) HOLDS"
    )
    # the hypervolume line compares with the two baselines the issue names, not with RFP
    assert verdicts[1] == (
        "sst2: validation HV of (c) + importance ordering 0.400 vs random_search on standard (baseline) 0.380, "
        "layer dropping (standard, baseline) 0.200 → above both"
    )


def test_a_missed_goal_says_by_how_much_and_which_ablation_step_gained_most():
    verdicts = goal_verdicts({"tasks": {"stsb": verdict_analysis(None)}})
    # no recovery yet: the best row's own pick (normalised 0.70); target 0.85; (b) → (c) gained 0.40
    assert verdicts[0].endswith(
        "normalised 0.70, raw 0.90 → goal (normalised ≥0.85) does NOT hold: short by 0.15; "
        "largest gain of the ablation: (c) + importance ordering (+0.40)"
    )
    assert verdicts[0].startswith("stsb: at ≤50% encoder parameters, (c) + importance ordering selects")


def test_the_ablation_table_gives_each_finished_rows_gain_over_the_previous_one():
    analysis = verdict_analysis(None)
    # (b) → (c): HV 0.30 → 0.40, normalised 0.30 → 0.70; (c) → (d): HV 0.40 → 0.35, normalised 0.70 → 0.60
    assert ablation_table(analysis)[-3:] == [
        "| (b) one_shot → (c) + importance ordering | +0.100 | +0.40 |",
        "| (c) + importance ordering → (d) + fine-tuned teacher (logits) | -0.050 | -0.10 |",
        "",
    ]
    analysis["methods"]["(b) one_shot"]["budgets"]["accuracy"]["0.5"] = None  # (b) found nothing within 50%
    assert ablation_table(analysis)[-3] == "| (b) one_shot → (c) + importance ordering | +0.100 | — |"
    analysis["complete_rows"] = ["(c) + importance ordering"]
    assert ablation_table(analysis) == []


def test_the_hypervolume_line_says_which_baseline_has_not_finished():
    analysis = verdict_analysis(0.88)
    del analysis["methods"]["random_search on standard (baseline)"]
    verdicts = goal_verdicts({"tasks": {"sst2": analysis}})
    assert verdicts[1] == (
        "sst2: validation HV of (c) + importance ordering 0.400 vs layer dropping (standard, baseline) 0.200 → "
        "above the finished one; random_search on standard (baseline) not finished yet"
    )



class RecordingRuns(TaskRuns):
    """Records which rows the ablation phase would train and search, instead of running them."""

    searched: list

    def search(self, row) -> None:
        self.searched.append(row.key)


@pytest.mark.parametrize("task, rows, expected", [
    ("stsb", None, ["a_raw_labels", "b_one_shot", "c_importance", "d_teacher", "d2_hidden", "e_params"]),
    ("sst2", None, ["b_one_shot", "c_importance", "d_teacher", "d2_hidden", "e_params"]),  # raw labels: regression
    ("sst2", "c_importance,b_one_shot", ["c_importance", "b_one_shot"]),
    ("sst2", "a_raw_labels,d_teacher", ["d_teacher"]),
])
def test_the_ablation_phase_runs_the_rows_asked_for(tmp_path, task, rows, expected):
    runs = RecordingRuns(task, StudySettings(), "unused", tmp_path, ablation_rows(rows))
    runs.searched = []
    phase_ablation(runs)
    assert runs.searched == expected


class PaperBaselineRuns(TaskRuns):
    """Records the paper's baselines the last phase would run, instead of running them."""

    ran: list

    def recover(self, row, budget, method="epochs") -> None:
        self.ran.append(("recover", row.key, budget, method))

    def rfp(self) -> None:
        self.ran.append(("rfp",))

    def standard_nas(self, wallclock_s: float) -> None:
        self.ran.append(("standard_nas", wallclock_s))


@pytest.mark.parametrize("task", ["sst2", "stsb", "mrpc"])
def test_standard_nas_runs_on_every_task_given_the_best_rows_training_plus_one_search(tmp_path, task):
    runs = PaperBaselineRuns(task, StudySettings(), "unused", tmp_path)
    runs.ran = []
    # (d'): validation HV 0.4 (error 0.2 at half the parameters), (b): 0.35, so (d') is the best row.
    for key, error, train_s, search_s in (("b_one_shot", 0.3, 100, 10), ("d2_hidden", 0.2, 1694, 300)):
        (runs.folder / f"supernet_{key}").mkdir(parents=True)
        (runs.folder / f"supernet_{key}" / "results.json").write_text(json.dumps({"runtime_s": train_s}))
        for seed, runtime_s in ((0, search_s), (1, 9999)):
            results = runs.folder / f"search_{key}_seed{seed}" / f"results_{task}.json"
            results.parent.mkdir(parents=True)
            point = {"error": error, "params": 0.5}
            results.write_text(json.dumps({"runtime_s": runtime_s, "evaluations": [point], "pareto_set": [point]}))
    phase_paper_baselines(runs)
    assert runs.ran == [("recover", "e_params", 0.5, "lstsq"), ("rfp",), ("standard_nas", 1994)]


def test_an_unknown_row_is_refused_by_name():
    with pytest.raises(SystemExit, match="unknown row.*'f_typo'"):
        ablation_rows("b_one_shot,f_typo")


def test_the_record_keeps_every_result_file_and_no_weights_and_survives_a_lost_run_folder(tmp_path):
    runs = TaskRuns("stsb", StudySettings(), "unused", tmp_path / "runs")
    measured = {
        "supernet_standard/results.json": '{"runtime_s": 667}',
        "search_e_params_seed0/results_stsb.json": json.dumps({"pareto_set": [{"neurons": [0, 2]}]}, indent=2),
        "layer_dropping.json": '{"points": []}',
        "recovered_e_params_seed0_12/extraction.json": '{"test": {}}',
        "recovered_e_params_seed0_12/reload.json": '{"test": {}}',
        "machines.json": '["AMD EPYC, 2 cores"]',
    }
    not_results = ["supernet_standard/model.safetensors", "supernet_standard/checkpoint-1/results.json",
                   "recovered_e_params_seed0_12/model.safetensors", "search_e_params_seed0/evaluations.jsonl"]
    for name in [*measured, *not_results]:
        (runs.folder / name).parent.mkdir(parents=True, exist_ok=True)
        (runs.folder / name).write_text(measured.get(name, "weights or logs"))
    record_dir = tmp_path / "record"
    lost_earlier = record_dir / "stsb" / "search_standard_seed0" / "results_stsb.json"  # its run folder is gone
    lost_earlier.parent.mkdir(parents=True)
    lost_earlier.write_text('{"pareto_set": [1]}')
    (record_dir / "stsb" / "layer_dropping.json").write_text('{"stale": true}')  # rerun since: replaced

    recorded = record_results(runs, record_dir)

    assert recorded.folder == record_dir / "stsb"
    files = {str(path.relative_to(recorded.folder)) for path in recorded.folder.rglob("*") if path.is_file()}
    assert files == {*measured, "search_standard_seed0/results_stsb.json"}
    for name, text in measured.items():
        assert json.loads((recorded.folder / name).read_text()) == json.loads(text)
    assert (recorded.folder / "search_e_params_seed0/results_stsb.json").read_text() == (
        '{"pareto_set":[{"neurons":[0,2]}]}')  # written compactly
    assert lost_earlier.read_text() == '{"pareto_set": [1]}'


def test_each_machine_a_task_ran_on_is_noted_once_in_order(tmp_path):
    runs = TaskRuns("sst2", StudySettings(), "unused", tmp_path / "runs")
    for description in ("AMD EPYC, 2 cores, no GPU", "Xeon, 16 cores, NVIDIA H200", "AMD EPYC, 2 cores, no GPU"):
        runs.note_machine(description)
    assert json.loads((runs.folder / "machines.json").read_text()) == [
        "AMD EPYC, 2 cores, no GPU", "Xeon, 16 cores, NVIDIA H200"]


def test_a_finished_stage_is_recorded_at_once_and_a_failed_one_is_not(tmp_path):
    runs = TaskRuns("sst2", StudySettings(), "unused", tmp_path / "runs", record_dir=tmp_path / "record")
    results = runs.folder / "search_e_params_seed0" / "results_sst2.json"
    write = f"import pathlib; p = pathlib.Path({str(results)!r}); p.parent.mkdir(parents=True); p.write_text('{{}}')"
    runs.run_stage([sys.executable, "-c", write], runs.log("search"), results)
    assert (tmp_path / "record" / "sst2" / "search_e_params_seed0" / "results_sst2.json").read_text() == "{}"

    failed = runs.folder / "supernet_b_one_shot" / "results.json"
    with pytest.raises(SystemExit, match="stage failed"):
        runs.run_stage([sys.executable, "-c", "raise SystemExit(3)"], runs.log("train"), failed)
    assert not (tmp_path / "record" / "sst2" / "supernet_b_one_shot").exists()


def test_sigterm_stops_the_study_and_its_running_stage(tmp_path):
    """`timeout` or a scheduler signals the study's process only; the stage it runs must not outlive it."""
    pid_file = tmp_path / "stage.pid"
    stage = f"import os, pathlib, time; pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid())); time.sleep(60)"
    study = (
        "import signal, sys\n"
        "from pathlib import Path\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1] / 'bench')!r})\n"
        "from study_glue import run_stage, stop_on_sigterm\n"
        "signal.signal(signal.SIGTERM, stop_on_sigterm)\n"
        f"run_stage([sys.executable, '-c', {stage!r}], Path({str(tmp_path / 'log')!r}), "
        f"Path({str(tmp_path / 'done')!r}))\n"
    )
    process = subprocess.Popen([sys.executable, "-c", study], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not pid_file.is_file() or not pid_file.read_text():
        assert time.time() < deadline and process.poll() is None, "the stage never started"
        time.sleep(0.1)
    stage_pid = int(pid_file.read_text())
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1 and "stopped by SIGTERM" in stderr
    with pytest.raises(ProcessLookupError):
        os.kill(stage_pid, 0)
