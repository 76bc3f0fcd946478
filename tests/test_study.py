"""The GLUE study's analysis: which sub-network a budget selects, relative performance, the generated report."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import accuracy_score, f1_score
from tiny_runs import search

import select_and_extract

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import study_glue  # noqa: E402
from study_glue import (  # noqa: E402
    BENCHMARKS_BEGIN,
    BENCHMARKS_END,
    BUDGETS,
    COMPARED_BUDGETS,
    StudySettings,
    TaskRuns,
    ablation_rows,
    ablation_table,
    analyse_task,
    best_under_budget,
    compare_predictions,
    compare_with_rfp,
    compared_metric,
    goal_failures,
    goal_verdicts,
    hypervolumes,
    markdown_report,
    missing_rfp_budgets,
    phase_ablation,
    phase_paper_baselines,
    phase_rfp_comparison,
    pick_name,
    read_goal_lines,
    record_results,
    recovered_points,
    recovery_table,
    relative_performance,
    replace_between_markers,
    rfp_comparison_table,
    search_points,
    task_section,
)


def point(error: float, layer_params: int, test_accuracy: float) -> dict:
    return {"error": error, "num_layer_parameters": layer_params, "params": 0.5 + layer_params / 200,
            "test": {"accuracy": test_accuracy}}


def test_budget_selects_the_best_validation_point_within_the_encoder_budget():
    points = [point(0.10, 90, 0.91), point(0.20, 50, 0.70), point(0.15, 60, 0.80), point(0.20, 40, 0.75)]
    assert best_under_budget(points, 0.5, 100) is points[1]  # tie on error: the larger one
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
        cells = {str(budget): cell if budget >= 0.5 else None for budget in BUDGETS}  # nothing found below 45%
        return {"budgets": {"accuracy": cells}, "hypervolume": {"validation": hv, "test": hv}}

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


GOAL_LINE = BUDGETS.index(0.5)  # the task's lines: one per budget, then the hypervolume line
HV_LINE = len(BUDGETS)


def test_goal_lines_judge_the_recovered_sub_network_of_the_best_row_in_their_fixed_form():
    verdicts = goal_verdicts({"tasks": {"sst2": verdict_analysis(0.88)}})
    assert len(verdicts) == len(BUDGETS) + 1  # no comparison with RFP yet: no RFP line
    # recovered test 0.88 against unpruned 0.9 and trivial 0.5: normalised 0.95, raw 0.98
    assert verdicts[GOAL_LINE] == (
        "sst2: at ≤50% encoder parameters, (f) (c) + importance ordering + recovery selects a sub-network with "
        "45% of the encoder (70% of all parameters), test accuracy 0.8800 vs unpruned 0.9000: normalised 0.95, "
        "raw 0.98 → goal (normalised ≥0.90) HOLDS"
    )
    assert verdicts[0] == "sst2: no sub-network within 10% of the encoder parameters was found"
    # ≤60%: the best row's own pick (no recovery there), no target at that budget
    assert verdicts[GOAL_LINE + 1] == (
        "sst2: at ≤60% encoder parameters, (c) + importance ordering selects a sub-network with 45% of the encoder "
        "(70% of all parameters), test accuracy 0.8000 vs unpruned 0.9000: normalised 0.70, raw 0.90 → no target set "
        "for this task and budget"
    )
    # the hypervolume line compares with the two baselines the issue names, not with RFP
    assert verdicts[HV_LINE] == (
        "sst2: validation HV of (c) + importance ordering 0.400 vs random_search on standard (baseline) 0.380, "
        "layer dropping (standard, baseline) 0.200 → above both"
    )


def test_a_missed_goal_says_by_how_much_and_which_ablation_step_gained_most():
    verdicts = goal_verdicts({"tasks": {"stsb": verdict_analysis(None)}})
    # no recovery yet: the best row's own pick (normalised 0.70); target 0.85; (b) → (c) gained 0.40
    assert verdicts[GOAL_LINE].endswith(
        "normalised 0.70, raw 0.90 → goal (normalised ≥0.85) does NOT hold: short by 0.15; "
        "largest gain of the ablation: (c) + importance ordering (+0.40)"
    )
    assert verdicts[GOAL_LINE].startswith("stsb: at ≤50% encoder parameters, (c) + importance ordering selects")


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
    assert verdicts[HV_LINE] == (
        "sst2: validation HV of (c) + importance ordering 0.400 vs layer dropping (standard, baseline) 0.200 → "
        "above the finished one; random_search on standard (baseline) not finished yet"
    )



class RecordingRuns(TaskRuns):
    """Records which rows the ablation phase would train and search, instead of running them."""

    searched: list

    def search(self, row) -> None:
        self.searched.append(row.key)


ISSUE_32_ROWS = ["g_importance_space", "h_init_teacher", "i_rfp_seeds"]


@pytest.mark.parametrize("task, rows, expected", [
    ("stsb", None, ["a_raw_labels", "b_one_shot", "c_importance", "d_teacher", "d2_hidden", "e_params",
                    *ISSUE_32_ROWS]),
    ("sst2", None, ["b_one_shot", "c_importance", "d_teacher", "d2_hidden", "e_params", *ISSUE_32_ROWS]),  # (a):
    ("rte", None, ["b_one_shot", "c_importance", "d_teacher", "d2_hidden", "e_params", *ISSUE_32_ROWS]),  # regression
    ("sst2", "c_importance,b_one_shot", ["c_importance", "b_one_shot"]),
    ("sst2", "a_raw_labels,d_teacher", ["d_teacher"]),
    ("mrpc", "i_rfp_seeds,h_init_teacher,g_importance_space", ISSUE_32_ROWS[::-1]),
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
        "test_predictions/search_e_params_seed0_12.json": '{"predictions": [1, 0], "labels": [1, 1]}',
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


# ----------------------------------------------------------------------------- RFP at every budget, compared with it


class FakeStageRun:
    """Stands in for subprocess.run in the study: records each stage's command and succeeds."""

    def __init__(self):
        self.commands = []

    def __call__(self, command, **kwargs):
        self.commands.append(command)
        return subprocess.CompletedProcess(command, 0)


def write_rfp_results(runs: TaskRuns, budgets, layer_params=None, errors=None, tests=None) -> None:
    """run_rfp.py's results: one point per budget, each with its own pruned checkpoint."""
    points = [{"budget": budget, "error": 0.2 if errors is None else errors[i], "params": 0.5 + budget / 2,
               "num_layer_parameters": round(budget * 100) if layer_params is None else layer_params[i],
               "test": {"accuracy": 0.8 if tests is None else tests[i]},
               "trial_checkpoint_dir": f"/elsewhere/rfp/budget-{budget:g}"} for i, budget in enumerate(budgets)]
    results = runs.rfp_results()
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps({"runtime_s": 1.0, "evaluations": points, "pareto_set": points}))


@pytest.mark.parametrize("budgets, runs_again", [
    (None, True),  # never ran
    ((0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), True),  # the study's earlier budget list: ≤10% and ≤20% missing
    ((0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8), True),
    ((0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), False),
])
def test_the_rfp_stage_runs_again_until_its_results_hold_every_budget(tmp_path, monkeypatch, budgets, runs_again):
    fake = FakeStageRun()
    monkeypatch.setattr(study_glue.subprocess, "run", fake)
    runs = TaskRuns("sst2", StudySettings(), "unused", tmp_path / "runs")
    if budgets is not None:
        write_rfp_results(runs, budgets)
    runs.rfp()
    assert len(fake.commands) == int(runs_again)
    if runs_again:  # every budget asked for: run_rfp.py keeps those it finished and adds the others
        command = fake.commands[0]
        assert command[command.index("--budgets") + 1] == "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"
        assert command[command.index("--output_dir") + 1] == str(runs.folder / "rfp")


# ----------------------------------------------------------------------------- issue 32's rows, RTE

E_FLAGS = {"--sampling_strategy": "one_shot", "--reorder_units": "importance", "--distill_hidden_states": "True",
           "--sampling_distribution": "params"}  # row (e)'s training flags, by hand (and the standard model as teacher)


def stage_flags(command: list[str]) -> dict[str, str]:
    """A stage's flags and their values: the command is python, the script, then --flag value pairs."""
    return dict(zip(command[2::2], command[3::2], strict=True))


def searched_commands(tmp_path, monkeypatch, row_key: str, finished=lambda runs: None) -> tuple[TaskRuns, list]:
    """The stage commands the study runs to search one row on RTE, once `finished` has written what exists."""
    fake = FakeStageRun()
    monkeypatch.setattr(study_glue.subprocess, "run", fake)
    monkeypatch.setattr(study_glue, "minilm_path", lambda: "minilm")
    runs = TaskRuns("rte", StudySettings(), "glue", tmp_path / "runs")
    finished(runs)
    runs.search(ablation_rows(row_key)[0])
    return runs, fake.commands


@pytest.mark.parametrize("key, space, from_teacher", [
    ("e_params", "small", False), ("g_importance_space", "importance", False), ("h_init_teacher", "importance", True)])
def test_a_row_trains_and_searches_its_super_network_in_its_own_search_space(tmp_path, monkeypatch, key, space,
                                                                             from_teacher):
    runs, commands = searched_commands(tmp_path, monkeypatch, key)
    assert [command[1] for command in commands] == ["train_supernet.py", "run_offline_search.py",
                                                    "run_offline_search.py"]
    supernet = str(runs.folder / f"supernet_{key}")
    expected = E_FLAGS | {"--teacher_model_name_or_path": str(runs.folder / "supernet_standard"),
                          "--search_space": space, "--output_dir": supernet}
    train = stage_flags(commands[0])
    assert {flag: train.get(flag) for flag in expected} == expected
    assert train.get("--init_from_teacher") == ("True" if from_teacher else None)
    for seed, command in zip(StudySettings().seeds, commands[1:], strict=True):
        search = stage_flags(command)
        assert (search["--search_space"], search["--checkpoint_dir_model"], search["--seed"]) == (
            space, supernet, str(seed))
        assert "--initial_sub_networks" not in search


def test_row_i_runs_rfp_then_searches_row_hs_super_network_seeded_with_rfps_masks(tmp_path, monkeypatch):
    runs, commands = searched_commands(tmp_path, monkeypatch, "i_rfp_seeds")
    assert [command[1] for command in commands] == ["train_supernet.py", "run_rfp.py", "run_offline_search.py",
                                                    "run_offline_search.py"]
    supernet = str(runs.folder / "supernet_h_init_teacher")
    train = stage_flags(commands[0])  # (h)'s super-network: (i) has none of its own
    assert (train["--output_dir"], train["--init_from_teacher"], train["--search_space"]) == (
        supernet, "True", "importance")
    assert stage_flags(commands[1])["--checkpoint_dir_model"] == str(runs.folder / "supernet_standard")
    for seed, command in zip(StudySettings().seeds, commands[2:], strict=True):
        search = stage_flags(command)
        assert search["--checkpoint_dir_model"] == supernet and search["--search_space"] == "importance"
        assert search["--initial_sub_networks"] == str(runs.folder / "rfp" / "results_rte.json")
        assert search["--output_dir"] == str(runs.folder / f"search_i_rfp_seeds_seed{seed}")


def test_row_i_reuses_row_hs_trained_super_network_and_finished_rfp(tmp_path, monkeypatch):
    def finished(runs: TaskRuns) -> None:
        (runs.folder / "supernet_h_init_teacher").mkdir(parents=True)
        (runs.folder / "supernet_h_init_teacher" / "results.json").write_text('{"runtime_s": 1}')
        write_rfp_results(runs, BUDGETS)

    _, commands = searched_commands(tmp_path, monkeypatch, "i_rfp_seeds", finished)
    assert [command[1] for command in commands] == ["run_offline_search.py", "run_offline_search.py"]


def test_standard_nas_gets_row_hs_training_and_row_is_search_when_row_i_is_the_best(tmp_path):
    runs = PaperBaselineRuns("rte", StudySettings(), "unused", tmp_path)
    runs.ran = []
    (runs.folder / "supernet_h_init_teacher").mkdir(parents=True)
    (runs.folder / "supernet_h_init_teacher" / "results.json").write_text(json.dumps({"runtime_s": 2000}))
    for key, error in (("i_rfp_seeds", 0.1), ("e_params", 0.3)):  # (i): validation HV 0.45, (e): 0.35
        for seed in (0, 1):
            results = runs.folder / f"search_{key}_seed{seed}" / "results_rte.json"
            results.parent.mkdir(parents=True)
            point = {"error": error, "params": 0.5}
            results.write_text(json.dumps({"runtime_s": 300, "evaluations": [point], "pareto_set": [point]}))
    assert [row.key for row in study_glue.complete_rows(runs)] == ["e_params", "i_rfp_seeds"]
    phase_paper_baselines(runs)
    assert runs.ran[-1] == ("standard_nas", 2300)


def test_rte_is_the_fourth_task_and_its_searches_score_on_its_whole_splits():
    assert study_glue.settings_from(study_glue.parse_args([])).tasks == ("stsb", "sst2", "mrpc", "rte")
    assert study_glue.settings_from(study_glue.parse_args(["--tasks", "rte,mrpc"])).tasks == ("rte", "mrpc")
    # 2,490 training examples: the whole 70% split trains, the whole 30% validates, all 277 dev ones test
    assert study_glue.data_flags("rte", StudySettings(), "glue") == [
        "--task_name", "rte", "--data_dir", "glue", "--max_seq_length", "128"]
    assert study_glue.data_flags("rte", study_glue.QUICK, "glue")[-6:] == [
        "--max_train_samples", "64", "--max_eval_samples", "32", "--max_test_samples", "32"]


def test_the_missing_rfp_budgets_are_named(tmp_path):
    runs = TaskRuns("sst2", StudySettings(), "unused", tmp_path / "runs")
    assert missing_rfp_budgets(runs.rfp_results()) == list(BUDGETS)
    write_rfp_results(runs, (0.3, 0.5, 0.9))
    assert missing_rfp_budgets(runs.rfp_results()) == [0.1, 0.2, 0.4, 0.6, 0.7, 0.8]


def test_the_tables_have_budget_columns_from_10_percent_with_empty_cells_where_nothing_fits():
    unpruned = {"test": {"accuracy": 0.9}, "validation": {}, "num_parameters": 1000}
    # encoder shares 0.15 and 0.46: nothing within 10%, the 15% point within 20%
    methods = {"(b) one_shot": [point(0.30, 15, 0.70), point(0.10, 46, 0.86)]}
    analysis = analyse_task("sst2", methods, unpruned, {"accuracy": 0.5}, 100, {})
    analysis |= {"complete_rows": ["(b) one_shot"], "best_row": "(b) one_shot", "recovery": {}, "rfp_comparison": {},
                 "rfp_missing_budgets": list(BUDGETS), "machines": [], "wall_clock_s": {},
                 "plot": "bench/study_v2/sst2_pareto.png"}
    lines = task_section("sst2", analysis, Path(study_glue.PROJECT_DIR) / "bench" / "study_v2" / "study.md")
    header = next(line for line in lines if line.startswith("| method |"))
    assert header.split(" | ")[3:5] == ["≤10% enc.", "≤20% enc."]
    row = next(line for line in lines if line.startswith("| (b) one_shot |")).split(" | ")
    # (0.70 - 0.5) / (0.9 - 0.5) = 0.50 normalised, 0.70 / 0.9 = 0.78 raw; 0.15 of the encoder, 0.575 of the total
    assert row[3] == "—" and row[4] == "0.700: 0.50 / 0.78 (0.15, 0.57)"
    assert row[5] == "0.700: 0.50 / 0.78 (0.15, 0.57)" and row[7] == "0.860: 0.90 / 0.96 (0.46, 0.73)"
    assert not any(line.startswith("RFP has not run") for line in lines)  # no RFP results: no RFP row either


def test_rfp_results_of_an_earlier_budget_list_are_named_as_such_in_the_report():
    unpruned = {"test": {"accuracy": 0.9}, "validation": {}, "num_parameters": 1000}
    methods = {study_glue.RFP.label: [point(0.2, 30, 0.8), point(0.1, 50, 0.85)]}
    analysis = analyse_task("sst2", methods, unpruned, {"accuracy": 0.5}, 100, {})
    analysis |= {"complete_rows": [], "best_row": None, "recovery": {}, "rfp_comparison": {},
                 "rfp_missing_budgets": [0.1, 0.2], "machines": [], "wall_clock_s": {},
                 "plot": "bench/study_v2/sst2_pareto.png"}
    lines = task_section("sst2", analysis, Path(study_glue.PROJECT_DIR) / "bench" / "study_v2" / "study.md")
    assert "RFP has not run at budget(s) ≤10%, ≤20% yet: its cells there are empty until the study's RFP stage runs " \
           "again (it keeps the budgets it finished)." in lines
    row = next(line for line in lines if line.startswith(f"| {study_glue.RFP.label} |")).split(" | ")
    assert row[3:5] == ["—", "—"] and row[5].startswith("0.800: ")


def hand_paired_accuracy(ours, rfp, labels) -> tuple[float, float]:
    """Δ accuracy and its standard error from the per-example differences of correctness, by hand."""
    differences = (np.array(ours) == labels).astype(float) - (np.array(rfp) == labels)
    return differences.mean(), differences.std(ddof=1) / np.sqrt(len(labels))


LABELS = np.array([0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0, 1])


@pytest.mark.parametrize("ours, rfp, outcome", [
    # right on 9 vs 8 of 12: Δ = +1/12
    ([0, 1, 1, 0, 1, 0, 1, 1, 0, 0, 1, 0], [0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1], "at least"),
    # 8 vs 9: Δ = -1/12, below by less than its SE (differences -1, +1, -1: SE 0.1124 by hand)
    ([0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1], [0, 1, 1, 0, 1, 0, 1, 1, 0, 0, 1, 0], "tie"),
    # 10 vs 12: Δ = -2/12, differences two -1 and ten 0: SE 0.1124 by hand, below by 1.5 of them, a miss
    ([0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 1, 0], LABELS.tolist(), "miss"),
])
def test_a_pick_against_rfp_is_at_least_a_tie_or_a_miss_by_the_paired_standard_error(ours, rfp, outcome):
    difference, standard_error = hand_paired_accuracy(ours, rfp, LABELS)
    compared = compare_predictions("sst2", "accuracy", np.array(ours), np.array(rfp), LABELS)
    assert compared["outcome"] == outcome
    assert compared["difference"] == pytest.approx(difference, abs=1e-12)
    assert compared["standard_error"] == pytest.approx(standard_error, abs=1e-12)
    assert compared["test"] == pytest.approx((np.array(ours) == LABELS).mean())
    assert compared["rfp_test"] == pytest.approx((np.array(rfp) == LABELS).mean())


def test_mrpc_is_compared_with_rfp_by_accuracy_and_by_f1():
    ours = np.array([0, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1])
    rfp = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1])  # "always paraphrase"
    accuracy = compare_predictions("mrpc", "accuracy", ours, rfp, LABELS)
    difference, standard_error = hand_paired_accuracy(ours, rfp, LABELS)
    assert accuracy["difference"] == pytest.approx(difference) and accuracy["standard_error"] == pytest.approx(
        standard_error)
    # F1: a paired bootstrap, the same resampled examples for both picks (the study's seed, 200 resamples)
    rows = np.random.default_rng(0).integers(0, len(LABELS), size=(200, len(LABELS)))
    f1 = [f1_score(LABELS[row], ours[row], zero_division=0.0) - f1_score(LABELS[row], rfp[row], zero_division=0.0)
          for row in rows]
    compared = compare_predictions("mrpc", "f1", ours, rfp, LABELS)
    assert compared["difference"] == pytest.approx(f1_score(LABELS, ours) - f1_score(LABELS, rfp))
    assert compared["standard_error"] == pytest.approx(np.std(f1, ddof=1))


def test_spearman_against_rfp_has_the_standard_error_of_a_paired_bootstrap():
    rng = np.random.default_rng(5)
    labels = rng.normal(size=40)
    ours, rfp = labels + rng.normal(scale=0.8, size=40), labels + rng.normal(scale=1.0, size=40)
    rows = np.random.default_rng(0).integers(0, 40, size=(200, 40))
    resampled = [spearmanr(ours[row], labels[row]).statistic - spearmanr(rfp[row], labels[row]).statistic
                 for row in rows]
    compared = compare_predictions("stsb", "spearmanr", ours, rfp, labels)
    assert compared["difference"] == pytest.approx(
        spearmanr(ours, labels).statistic - spearmanr(rfp, labels).statistic)
    assert compared["standard_error"] == pytest.approx(np.std(resampled, ddof=1))


def comparison_runs(tmp_path) -> TaskRuns:
    """A task whose best row (b) and RFP each pick a sub-network within 30% (Pareto index 0 of search seed 1;
    RFP's ≤30% budget folder), with both picks' test predictions recorded before and after recovery; within 20%
    only (b) has one."""
    runs = TaskRuns("sst2", StudySettings(), "unused", tmp_path / "runs")
    runs.folder.mkdir(parents=True)
    (runs.folder / "layer_dropping.json").write_text(json.dumps({"unpruned_num_layer_parameters": 100}))
    row = ablation_rows("b_one_shot")[0]
    for seed, error in ((0, 0.3), (1, 0.25)):
        results = runs.search_results(row, seed)
        results.parent.mkdir(parents=True)
        pareto_set = [{"error": error, "params": 0.6, "num_layer_parameters": 28, "test": {"accuracy": 0.7}},
                      {"error": 0.4, "params": 0.55, "num_layer_parameters": 18, "test": {"accuracy": 0.6}}]
        results.write_text(json.dumps({"runtime_s": 1.0, "evaluations": pareto_set, "pareto_set": pareto_set}))
    write_rfp_results(runs, (0.3, 0.5), errors=(0.2, 0.1))
    predictions = {
        "search_b_one_shot_seed1_0": [0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1],  # 8 right of 12
        "rfp_budget-0.3": [0, 1, 1, 0, 1, 0, 1, 1, 0, 0, 1, 0],  # 9 right
        "recovered_b_one_shot_seed1_0": [0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0, 1],  # 12 right
        "recovered_rfp_budget-0.3": [0, 1, 1, 0, 1, 0, 1, 1, 0, 0, 1, 0],  # 9 right
    }
    (runs.folder / "test_predictions").mkdir()
    for name, values in predictions.items():
        (runs.folder / "test_predictions" / f"{name}.json").write_text(
            json.dumps({"predictions": values, "labels": LABELS.tolist()}))
    return runs


def test_the_comparison_with_rfp_reads_both_picks_predictions_before_and_after_recovery(tmp_path):
    runs = comparison_runs(tmp_path)
    row = ablation_rows("b_one_shot")[0]
    before = compare_with_rfp(runs, row, 0.3, False, "accuracy")
    difference, standard_error = hand_paired_accuracy(
        [0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1], [0, 1, 1, 0, 1, 0, 1, 1, 0, 0, 1, 0], LABELS)
    assert before == {"test": 8 / 12, "rfp_test": 9 / 12, "difference": pytest.approx(difference),
                      "standard_error": pytest.approx(standard_error), "outcome": "tie"}
    after = compare_with_rfp(runs, row, 0.3, True, "accuracy")
    assert after["outcome"] == "at least" and after["difference"] == pytest.approx(3 / 12)
    # ≤20%: RFP never ran there; ≤50%: RFP's ≤50% point is there, but no predictions of it yet
    assert compare_with_rfp(runs, row, 0.2, False, "accuracy") == {
        "outcome": "not measured", "reason": "RFP has not run at this budget yet"}
    assert compare_with_rfp(runs, row, 0.5, True, "accuracy") == {
        "outcome": "not measured", "reason": "no test predictions of RFP's recovered pick yet"}
    assert runs.recovery_dir(runs.selected(study_glue.RFP, 0.3)) == runs.folder / "recovered_rfp_budget-0.3"


def test_picks_scored_on_different_test_examples_are_not_compared(tmp_path):
    runs = comparison_runs(tmp_path)
    rfp_file = runs.folder / "test_predictions" / "rfp_budget-0.3.json"
    rfp_file.write_text(json.dumps({"predictions": LABELS.tolist(), "labels": LABELS[::-1].tolist()}))
    assert compare_with_rfp(runs, ablation_rows("b_one_shot")[0], 0.3, False, "accuracy") == {
        "outcome": "not measured", "reason": "the two picks were scored on different test examples"}


@pytest.mark.parametrize("task, metric", [("mrpc", "accuracy"), ("stsb", "spearmanr"), ("sst2", "accuracy"),
                                          ("rte", "accuracy")])
def test_the_goal_compares_mrpc_with_rfp_by_accuracy_and_other_tasks_by_their_main_metric(task, metric):
    assert compared_metric(task) == metric


def comparison_analysis(before: list[dict], after: list[dict]) -> dict:
    analysis = verdict_analysis(0.88)
    analysis["compared_metric"] = "accuracy"
    analysis["rfp_comparison"] = {"accuracy": {
        str(budget): {"before": b, "after": a} for budget, b, a in zip(COMPARED_BUDGETS, before, after, strict=True)}}
    return analysis


AT_LEAST = {"test": 0.8, "rfp_test": 0.79, "difference": 0.01, "standard_error": 0.02, "outcome": "at least"}
TIE = {"test": 0.78, "rfp_test": 0.79, "difference": -0.0125, "standard_error": 0.02, "outcome": "tie"}
MISS = {"test": 0.7, "rfp_test": 0.79, "difference": -0.09, "standard_error": 0.03, "outcome": "miss"}
NOT_MEASURED = {"outcome": "not measured", "reason": "RFP has not run at this budget yet"}


def test_the_rfp_line_counts_ties_and_names_each_tie_and_miss_with_its_size_and_standard_error():
    analysis = comparison_analysis([NOT_MEASURED, TIE, AT_LEAST, AT_LEAST, MISS, AT_LEAST], [AT_LEAST] * 6)
    verdicts = goal_verdicts({"tasks": {"mrpc": analysis}})
    assert verdicts[-1] == (
        "mrpc: before recovery ≥ RFP at 4 of 6 budgets [≤20% not measured: RFP has not run at this budget yet, "
        "≤30% tie by 0.0125 (SE 0.0200), ≤60% miss by 0.0900 (SE 0.0300)]; after recovery ≥ RFP + recovery at 6 of "
        "6 budgets — test accuracy, paired over the test examples"
    )


def test_the_comparison_table_gives_both_picks_the_difference_and_its_standard_error():
    analysis = comparison_analysis([NOT_MEASURED, TIE, AT_LEAST, AT_LEAST, MISS, AT_LEAST], [AT_LEAST] * 6)
    lines = rfp_comparison_table(analysis, "accuracy")
    assert lines[2] == ("| budget | (c) + importance ordering | RFP | Δ (SE) | | (f) (c) + importance ordering + "
                        "recovery | RFP + recovery | Δ (SE) | |")
    assert lines[4] == ("| ≤20% | — | — | — | not measured: RFP has not run at this budget yet | 0.8000 | 0.7900 | "
                        "+0.0100 (0.0200) | ≥ |")
    assert lines[5].startswith("| ≤30% | 0.7800 | 0.7900 | -0.0125 (0.0200) | tie |")
    assert lines[8].startswith("| ≤60% | 0.7000 | 0.7900 | -0.0900 (0.0300) | miss |")


def test_the_goal_check_reads_every_line_the_report_writes(tmp_path):
    analysis = comparison_analysis([TIE] + [AT_LEAST] * 5, [AT_LEAST] * 5 + [MISS])
    analysis["recovery"]["(c) + importance ordering"].append({  # ≤20% recovered: 0.88 → normalised 0.95, raw 0.98
        "budget": 0.2, "encoder_fraction": 0.19, "total_fraction": 0.6, "test_before": {"accuracy": 0.7},
        "runtime_s": 5.0, "test_after": {"accuracy": 0.88}})
    report = {"command": "python bench/study_glue.py", "date": "today", "commit": "abc", "machine": "here",
              "settings": {}, "tasks": {}}
    report["verdicts"] = goal_verdicts({"tasks": {"sst2": analysis}})
    tasks = read_goal_lines(markdown_report(report, tmp_path / "study.md"))
    budgets = tasks["sst2"]["budgets"]
    assert budgets[0.1] is None and budgets[0.3] is None  # nothing within 10% or 30%
    assert budgets[0.2] == {"normalised": 0.95, "raw": 0.98, "holds": True}  # target 0.90 at ≤20%
    assert budgets[0.5] == {"normalised": 0.95, "raw": 0.98, "holds": True}
    assert budgets[0.6] == {"normalised": 0.7, "raw": 0.9, "holds": None}  # no target at ≤60%
    assert tasks["sst2"]["rfp"] == {"before": (6, 6), "after": (5, 6)}
    assert goal_failures(tasks) == ["sst2: after recovery at least RFP + recovery at 5 of 6 budgets, not at all 6"]


@pytest.mark.parametrize("change, failure", [
    (lambda t: t["sst2"]["budgets"].update({0.2: {"normalised": 0.85, "raw": 0.9, "holds": False}}),
     "sst2: the target at ≤20% (normalised ≥0.90) does not hold"),
    (lambda t: t["sst2"]["budgets"].pop(0.5), "sst2: the target at ≤50% (normalised ≥0.90) does not hold"),
    (lambda t: t["sst2"].pop("rfp"), "sst2: no comparison with RFP"),
    (lambda t: t["sst2"]["rfp"].update({"before": (5, 5)}), "sst2: before recovery at least RFP at 5 of 5 budgets, "
     "not at all 6"),
])
def test_the_goal_check_fails_on_a_missed_target_or_a_budget_below_rfp(change, failure):
    held = {"normalised": 0.95, "raw": 0.98, "holds": True}
    tasks = {"sst2": {"budgets": {0.2: held, 0.5: held}, "rfp": {"before": (6, 6), "after": (6, 6)}},
             "mrpc": {"budgets": {0.5: {"normalised": 0.9, "raw": 0.99, "holds": None}},
                      "rfp": {"before": (6, 6), "after": (6, 6)}}}
    assert goal_failures(tasks) == []
    change(tasks)
    assert goal_failures(tasks) == [failure]


def test_check_goal_exits_non_zero_with_the_failures_and_zero_when_the_goal_holds(tmp_path, capsys):
    lines = [
        "- mrpc: at ≤50% encoder parameters, (f) (e) + recovery selects a sub-network with 49% of the encoder (76% of "
        "all parameters), test f1 0.8525 vs unpruned 0.8571: normalised 0.90, raw 0.99 → no target set for this task",
        "- mrpc: before recovery ≥ RFP at 6 of 6 budgets [≤30% tie by 0.0100 (SE 0.0200)]; after recovery ≥ RFP + "
        "recovery at 6 of 6 budgets — test accuracy, paired over the test examples",
    ]
    (tmp_path / "study.md").write_text("### mrpc\n\n### Does the goal hold?\n\n" + "\n".join(lines) + "\n")
    study_glue.main(["--check_goal", "--report_dir", str(tmp_path)])
    assert capsys.readouterr().out == "the goal holds on mrpc\n"
    below = lines[1].replace("at 6 of 6 budgets [", "at 5 of 6 budgets [")
    (tmp_path / "study.md").write_text(f"### Does the goal hold?\n\n{below}\n")
    with pytest.raises(SystemExit, match="does NOT hold:\nmrpc: before recovery at least RFP at 5 of 6"):
        study_glue.main(["--check_goal", "--report_dir", str(tmp_path)])


class ComparisonRuns(TaskRuns):
    """Records what the comparison phase would recover and score, instead of running it."""

    ran: list

    def recover(self, row, budget, method="epochs") -> None:
        self.ran.append(("recover", row.key, budget))

    def record_test_predictions(self, point, recovered) -> None:
        self.ran.append(("predictions", pick_name(point), recovered))


def test_the_comparison_phase_recovers_rfp_at_every_budget_then_scores_both_rows_picks(tmp_path):
    runs = ComparisonRuns("sst2", StudySettings(), "unused", tmp_path / "runs")
    runs.ran = []
    comparison_runs(tmp_path)  # writes the same task folder: (b) is the only finished row, so the best
    phase_rfp_comparison(runs)
    assert runs.ran[:len(BUDGETS)] == [("recover", "rfp", budget) for budget in BUDGETS]
    # ≤20%: (b)'s 18% point, RFP none; ≤30% and ≤40%: (b)'s 28% point (lower error), RFP's ≤30%; ≤50% on: RFP's ≤50%
    picks = {0.2: ["search_b_one_shot_seed0_1"], 0.3: ["search_b_one_shot_seed1_0", "rfp_budget-0.3"]}
    picks[0.4] = picks[0.3]
    picks |= dict.fromkeys((0.5, 0.6, 0.7), ["search_b_one_shot_seed1_0", "rfp_budget-0.5"])
    assert runs.ran[len(BUDGETS):] == [("predictions", name, recovered) for budget in COMPARED_BUDGETS
                                       for name in picks[budget] for recovered in (False, True)]


def test_rfps_recovered_picks_are_the_row_rfp_plus_recovery(tmp_path):
    runs = comparison_runs(tmp_path)
    recovered = runs.folder / "recovered_rfp_budget-0.3" / "extraction.json"
    recovered.parent.mkdir()
    recovered.write_text(json.dumps({"recovery": {"test_before": {"accuracy": 0.75}, "test_after": {"accuracy": 0.8},
                                                  "runtime_s": 12.0, "kept_epoch": 2}}))
    points = recovered_points(runs, study_glue.RFP)
    assert [(p["budget"], p["test"]["accuracy"]) for p in points] == [(0.3, 0.8), (0.4, 0.8)]  # ≤50%: not yet
    analysis = {"main_metric": "accuracy", "metrics": ["accuracy"], "lstsq_recovery": {}, "recovery": {
        study_glue.RFP.label: [{"budget": 0.3, "encoder_fraction": 0.3, "total_fraction": 0.65,
                                "test_before": {"accuracy": 0.75}, "test_after": {"accuracy": 0.8},
                                "runtime_s": 12.0, "kept_epoch": 2, "reload": None}]}}
    lines = recovery_table(analysis, study_glue.RFP.label)
    assert lines[0].startswith("RFP + recovery: test accuracy before and after fine-tuning distilled")
    assert lines[4] == "| ≤30% | 0.30 | 0.65 | 0.7500 | 0.8000 (12) | 2 | — |"


def test_a_picks_recorded_test_predictions_are_those_of_its_sub_network_and_of_its_saved_checkpoint(
        tmp_path, trained_bert):
    model_dir, data_dir, checkpoint = trained_bert
    search(tmp_path, model_dir, data_dir, checkpoint, "random_search")
    results_file = tmp_path / "results_random_search_0" / "results_rte.json"
    runs = TaskRuns("rte", StudySettings(max_eval_samples={}), str(data_dir), tmp_path / "runs",
                    record_dir=tmp_path / "record")
    pick = search_points(results_file)[-1]  # the largest sub-network of the front
    runs.record_test_predictions(pick, False)
    before = json.loads(runs.predictions_file(pick, False).read_text())
    assert len(before["labels"]) == 16  # the tiny RTE's dev set, the study's test split
    # the search scored the sub-network sliced from the super-network: the same test accuracy (sklearn here)
    assert accuracy_score(before["labels"], before["predictions"]) == pytest.approx(pick["test"]["accuracy"])
    assert (tmp_path / "record" / "rte" / "test_predictions" / f"results_random_search_0_{pick['pareto_index']}.json"
            ).is_file()

    # its checkpoint as select_and_extract.py writes it (no recovery here): the same prediction for every example
    select_and_extract.main(["--results", str(results_file), "--pareto_index", str(pick["pareto_index"]),
                             "--output_dir", str(runs.recovery_dir(pick))])
    runs.record_test_predictions(pick, True)
    after = json.loads(runs.predictions_file(pick, True).read_text())
    assert runs.predictions_file(pick, True).name == f"recovered_results_random_search_0_{pick['pareto_index']}.json"
    assert after["labels"] == before["labels"] and after["predictions"] == before["predictions"]
