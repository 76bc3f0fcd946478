"""prune.py end to end on tiny models and data: the shipped models score, reloaded with plain transformers in a fresh
process, what summary.json says; they fit their budgets; a run killed in any stage resumes to the same outputs; a
finished run reruns in seconds; an added budget trains nothing; report.html is offline and its commands work.

The reference computations here use no project code beyond data loading for the causal LM's blocks: the
checkpoints are loaded with transformers' Auto classes, the metrics computed with numpy/scipy, the parameters
counted from the state dicts.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from scipy.stats import pearsonr, spearmanr
from tiny_assets import write_tiny_model_dir, write_tiny_rte, write_tiny_stsb

from nas_llm.search.report import read_points

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR / "bench"))
from make_tiny_lm import write_corpus, write_tiny_lm  # noqa: E402

BUDGETS = "0.3,0.6"
TINY = ["--num_train_epochs", "1", "--num_samples", "6", "--recover_epochs", "1", "--num_calibration_samples", "16",
        "--per_device_train_batch_size", "8", "--cost_seq_len", "16"]
LAYER_PARAMETER = re.compile(r"\.(layer|layers|h)\.\d+\.")  # BERT's encoder.layer.i, Llama's layers.i, GPT-2's h.i
STAGES = ("teacher", "supernet", "search", "rfp", "search-budget-0.3", "rfp-budget-0.3", "search-budget-0.6")


@dataclass(frozen=True)
class Task:
    """One tiny task prune.py runs on: its model, its data flags and its test split for the reference."""

    name: str
    model_dir: Path
    data_flags: tuple[str, ...]
    test_file: Path

    def argv(self, output_dir: Path, budgets: str = BUDGETS) -> list[str]:
        return ["--model_name_or_path", str(self.model_dir), "--task_name", self.name, *self.data_flags,
                "--budgets", budgets, "--output_dir", str(output_dir), *TINY]


def make_task(kind: str, root: Path) -> Task:
    if kind == "lm":
        train, test = write_corpus(root / "train.txt", 300, seed=0), write_corpus(root / "test.txt", 60, seed=1)
        return Task("lm", write_tiny_lm(root / "model", "llama"),
                    ("--train_file", str(train), "--validation_file", str(test), "--block_size", "16"), test)
    if kind == "classification":
        data = write_tiny_rte(root / "data")
        return Task("rte", write_tiny_model_dir(root / "model", "bert"), ("--data_dir", str(data)),
                    data / "RTE" / "dev.tsv")
    data = write_tiny_stsb(root / "data")
    return Task("stsb", write_tiny_model_dir(root / "model", "bert", num_labels=1), ("--data_dir", str(data)),
                data / "STS-B" / "dev.tsv")


def run_prune(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "prune.py", *argv], cwd=PROJECT_DIR, capture_output=True, text=True,
                          **kwargs)


@pytest.fixture(scope="module", params=["classification", "regression", "lm"])
def finished(request, tmp_path_factory) -> tuple[Task, Path]:
    if request.param == "classification":
        return request.getfixturevalue("classification")
    root = tmp_path_factory.mktemp(request.param)
    task = make_task(request.param, root)
    completed = run_prune(task.argv(root / "out"))
    assert completed.returncode == 0, completed.stderr[-3000:]
    return task, root / "out"


def summary_of(output_dir: Path) -> dict:
    return json.loads((output_dir / "summary.json").read_text())


RELOAD = """
import csv, json, sys, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
model_dir, test_file = sys.argv[1], sys.argv[2]
model = AutoModelForSequenceClassification.from_pretrained(model_dir, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(model_dir)
rows = list(csv.DictReader(open(test_file), delimiter="\\t", quoting=csv.QUOTE_NONE))
with torch.no_grad():
    outputs = [model(**tokenizer(row["sentence1"], row["sentence2"], return_tensors="pt")).logits[0].tolist()
               for row in rows]
print(json.dumps({"outputs": outputs, "label2id": model.config.label2id}))
"""
RELOAD_LM = """
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
sys.path.insert(0, sys.argv[3])
from nas_llm.data.data import DataArguments
from nas_llm.data.lm_data import LMArguments, load_blocks
model_dir, test_file = sys.argv[1], sys.argv[2]
model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
tokenizer = AutoTokenizer.from_pretrained(model_dir)
args = DataArguments(task_name="lm", train_file=test_file, validation_file=test_file)
blocks = load_blocks(args, LMArguments(block_size=16), tokenizer, model.config, ("test",))["test"]
with torch.no_grad():
    losses = [model(input_ids=torch.tensor(block)[None], labels=torch.tensor(block)[None]).loss.item()
              for block in blocks["input_ids"]]
print(json.dumps({"loss": sum(losses) / len(losses)}))
"""


def correlation(statistic, predictions: np.ndarray, labels: np.ndarray) -> float:
    """A correlation, 0 for constant predictions (a sub-network without layers predicts one value for all), as
    the project's metrics define it (scipy gives nan)."""
    return 0.0 if np.ptp(predictions) == 0 else float(statistic(predictions, labels)[0])


def reloaded_test_metrics(task: Task, model_dir: Path) -> dict[str, float]:
    """The shipped checkpoint's test metrics, computed in a fresh process with plain transformers."""
    script, extra = (RELOAD_LM, [str(PROJECT_DIR)]) if task.name == "lm" else (RELOAD, [])
    completed = subprocess.run([sys.executable, "-c", script, str(model_dir), str(task.test_file), *extra],
                               capture_output=True, text=True, check=True)
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    if task.name == "lm":
        return {"loss": result["loss"]}
    rows = list(csv.DictReader(task.test_file.open(), delimiter="\t", quoting=csv.QUOTE_NONE))
    outputs = np.array(result["outputs"])
    if task.name == "stsb":
        labels = np.array([float(row["score"]) for row in rows])
        return {"pearson": correlation(pearsonr, outputs[:, 0], labels),
                "spearmanr": correlation(spearmanr, outputs[:, 0], labels)}
    labels = np.array([result["label2id"][row["label"]] for row in rows])
    return {"accuracy": float((outputs.argmax(1) == labels).mean())}


def layer_parameters(model_dir: Path) -> int:
    """Parameters of the transformer layers, counted from the checkpoint's tensors."""
    tensors = load_file(str(model_dir / "model.safetensors"))
    return sum(tensor.size for name, tensor in tensors.items() if LAYER_PARAMETER.search("." + name))


def test_shipped_models_reload_with_plain_transformers_and_score_what_the_summary_says(finished):
    task, output_dir = finished
    summary = summary_of(output_dir)
    assert {0.3, 0.6} <= {row["budget"] for row in summary["budgets"]}
    for row in summary["budgets"]:
        model_dir = Path(row["model_dir"])
        assert (model_dir / "README.md").read_text().count("How prune.py chose it") == 1
        reloaded = reloaded_test_metrics(task, model_dir)
        for name, value in reloaded.items():
            assert value == pytest.approx(row["test"][name], abs=1e-5), (row["budget"], name)


def test_shipped_models_fit_their_budget_of_the_encoder(finished):
    task, output_dir = finished
    unpruned = layer_parameters(task.model_dir)
    for row in summary_of(output_dir)["budgets"]:
        kept = layer_parameters(Path(row["model_dir"]))
        assert kept == row["num_layer_parameters"]
        assert kept <= row["budget"] * unpruned


def test_each_budget_ships_the_candidate_with_the_lower_validation_error(finished):
    task, output_dir = finished
    for row in summary_of(output_dir)["budgets"]:
        candidates = row["candidates"]
        assert set(candidates) == ({"search"} if task.name == "lm" else {"search", "rfp"})
        assert row["validation"]["error"] == min(scores["validation"]["error"] for scores in candidates.values())
        assert row["validation"] == candidates[row["method"]]["validation"]


def test_the_search_runs_ehvi_unless_told_otherwise(finished):
    """prune.py's searcher is EHVI (docs/benchmarks/searchers.md); the search's own results say which ran."""
    task, output_dir = finished
    results = json.loads(next((output_dir / "search").glob("results_*.json")).read_text())
    assert results["settings"]["search_strategy"] == "ehvi"


def test_a_finished_run_reruns_in_seconds_without_running_a_stage(finished):
    task, output_dir = finished
    logs_before = {path: path.stat().st_mtime_ns for path in (output_dir / "logs").iterdir()}
    start = time.time()
    completed = run_prune(task.argv(output_dir))
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert time.time() - start < 10
    assert "already finished" in completed.stdout
    assert {path: path.stat().st_mtime_ns for path in (output_dir / "logs").iterdir()} == logs_before


def test_a_changed_setting_of_a_finished_stage_is_refused(finished):
    task, output_dir = finished
    argv = task.argv(output_dir)
    argv[argv.index("--num_train_epochs") + 1] = "2"
    completed = run_prune(argv)
    assert completed.returncode != 0
    assert "--num_train_epochs 1" in completed.stderr and "--overwrite_output_dir" in completed.stderr


@pytest.fixture(scope="module")
def classification(tmp_path_factory) -> tuple[Task, Path]:
    root = tmp_path_factory.mktemp("classification_shared")
    task = make_task("classification", root)
    completed = run_prune(task.argv(root / "out"))
    assert completed.returncode == 0, completed.stderr[-3000:]
    return task, root / "out"


def test_both_candidates_are_rescaled_by_least_squares_before_their_recovery_epochs(classification):
    """RFP's model comes rescaled from run_rfp.py; the search's pick gets the same step in its extraction, kept
    only where it does not raise the validation error (--recover_lstsq_if_better)."""
    _, output_dir = classification
    stages = json.loads((output_dir / "stages.json").read_text())
    for row in summary_of(output_dir)["budgets"]:
        candidates = output_dir / "candidates" / Path(row["model_dir"]).name
        search, rfp = (json.loads((candidates / name / "extraction.json").read_text()) for name in ("search", "rfp"))
        assert search["lstsq_recovery"]["num_calibration_samples"] > 0
        assert stages[f"search-{Path(row['model_dir']).name}"]["--recover_lstsq_if_better"] == "True"
        lstsq = search["lstsq_recovery"]
        assert lstsq["kept"] is (lstsq["validation_after"]["error"] <= lstsq["validation_before"]["error"])
        assert len(search["recovery"]["validation_per_epoch"]) == 1  # --recover_epochs 1, after the rescaling
        assert "lstsq_recovery" not in rfp and len(rfp["recovery"]["validation_per_epoch"]) == 1


def shipped_weights(output_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    return {row["model_dir"].rsplit("/", 1)[1]: load_file(str(Path(row["model_dir"]) / "model.safetensors"))
            for row in summary_of(output_dir)["budgets"]}


def scores(output_dir: Path) -> list[tuple]:
    """What each of the budgets 0.3 and 0.6 shipped and scored (a test may have added a budget)."""
    return [(row["budget"], row["method"], row["num_parameters"], row["validation"], row["test"],
             row["candidates"]) for row in summary_of(output_dir)["budgets"] if row["budget"] in (0.3, 0.6)]


def test_a_run_killed_in_every_stage_in_turn_ends_as_an_uninterrupted_one(classification, tmp_path):
    task, reference = classification
    output_dir = tmp_path / "out"
    for stage in STAGES:
        process = subprocess.Popen([sys.executable, "prune.py", *task.argv(output_dir)], cwd=PROJECT_DIR,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = output_dir / "logs" / f"{stage}.log"
        while not (log.is_file() and len(log.read_text().splitlines()) > 2) and process.poll() is None:
            time.sleep(0.2)  # the stage's script has started and written a line
        assert process.poll() is None, f"prune.py ended before stage {stage} was under way"
        process.send_signal(signal.SIGKILL)
        process.wait()
    completed = run_prune(task.argv(output_dir))
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert scores(output_dir) == scores(reference)
    resumed, uninterrupted = shipped_weights(output_dir), shipped_weights(reference)
    assert resumed.keys() == {"budget-0.3", "budget-0.6"}
    for budget, tensors in resumed.items():
        assert uninterrupted[budget].keys() == tensors.keys()
        for name, tensor in tensors.items():
            np.testing.assert_array_equal(uninterrupted[budget][name], tensor, err_msg=f"{budget} {name}")


def test_an_added_budget_runs_no_training_and_only_its_own_extraction(classification):
    task, output_dir = classification
    logs_before = {path.name: path.stat().st_mtime_ns for path in (output_dir / "logs").iterdir()}
    weights_before = shipped_weights(output_dir)
    completed = run_prune(task.argv(output_dir, budgets="0.3,0.45,0.6"))
    assert completed.returncode == 0, completed.stderr[-3000:]
    logs_after = {path.name: path.stat().st_mtime_ns for path in (output_dir / "logs").iterdir()}
    changed = {name for name, mtime in logs_after.items() if logs_before.get(name) != mtime}
    # run_rfp.py prunes the new budget only (no training); then the new budget's extractions and the report
    assert changed == {"rfp.log", "search-budget-0.45.log", "rfp-budget-0.45.log", "report.log"}
    for budget, tensors in weights_before.items():
        after = shipped_weights(output_dir)[budget]
        assert all(np.array_equal(after[name], tensor) for name, tensor in tensors.items())


def test_the_report_is_offline_and_holds_every_evaluated_sub_network(classification):
    task, output_dir = classification
    text = (output_dir / "report.html").read_text()
    markup = re.sub(r"<script[^>]*>.*?</script>", "", text, flags=re.S)  # the document without the scripts' code
    assert not re.search(r"(https?:)?//", markup), "the report's markup links to the web"
    assert not re.search(r"<script[^>]*\bsrc\b", text), "a script is loaded rather than embedded"
    assert '"displaylogo": false' in text  # plotly's only link out of a scatter plot, the logo, is off
    points = read_points(output_dir / "report.html")
    summary = summary_of(output_dir)
    evaluations = [json.loads(Path(summary[key]).read_text())["evaluations"] for key in ("search_results",
                                                                                         "rfp_results")]
    assert len(points) == sum(map(len, evaluations))
    for point in points:
        assert {"layers", "heads", "units", "num_parameters", "macs", "latency_ms", "validation", "test",
                "command"} <= point.keys()
    assert "Plotly.newPlot" in text and "Shipped models" in text


def test_every_report_point_s_command_writes_a_checkpoint_of_that_point_s_size(classification, tmp_path):
    _, output_dir = classification
    points = read_points(output_dir / "report.html")
    assert any(point["test"] is None for point in points)  # off the front: selected by --iteration
    assert any("--pareto_index" in point["command"] for point in points)  # RFP's budgets
    for number, point in enumerate(points):
        command = shlex.split(point["command"])
        command[command.index("--output_dir") + 1] = str(tmp_path / str(number))
        subprocess.run([sys.executable, *command[1:]], cwd=PROJECT_DIR, check=True, capture_output=True)
        tensors = load_file(str(tmp_path / str(number) / "model.safetensors"))
        assert sum(tensor.size for tensor in tensors.values()) == point["num_parameters"], point["command"]


def test_a_search_seeded_with_rfp_scores_rfp_s_masks_first_in_the_importance_space(tmp_path):
    """--seed_search_with_rfp True runs RFP before the search, whose first records are RFP's masks (raced, with
    --multi_fidelity True, like every proposal; --least_padding reaches the search too); its
    --budget_on params budgets become layer budgets from the super-network's own parameter counts (hand-counted
    here from the teacher's tensors); --search_space importance reaches the super-network and the search, not the
    teacher (a standard fine-tune scores no unit importance, which that space needs)."""
    task = make_task("classification", tmp_path)
    budgets = (0.8, 0.9)
    argv = task.argv(tmp_path / "out", budgets=",".join(map(str, budgets))) + [
        "--budget_on", "params", "--search_space", "importance", "--init_from_teacher", "True",
        "--seed_search_with_rfp", "True", "--multi_fidelity", "True", "--least_padding", "True"]
    completed = run_prune(argv)
    assert completed.returncode == 0, completed.stderr[-3000:]
    out = tmp_path / "out"
    stages = [line.split("] ", 1)[1].split(":", 1)[0] for line in completed.stderr.splitlines()
              if re.match(r"\[\d+/\d+\] \S+: ", line) and ": done in" not in line]
    assert stages[:4] == ["teacher", "supernet", "rfp", "search"]
    tensors = load_file(str(out / "teacher" / "model.safetensors"))
    total = sum(tensor.size for tensor in tensors.values())
    layers = layer_parameters(out / "teacher")
    rfp = json.loads((out / "rfp" / "results_rte.json").read_text())
    assert [point["budget"] for point in rfp["pareto_set"]] == pytest.approx(
        [(budget * total - (total - layers)) / layers for budget in budgets], abs=1e-6)
    records = [json.loads(line) for line in (out / "search" / "evaluations.jsonl").read_text().splitlines()]
    assert [record.get("seeded_from", {}).get("budget") for record in records[:3]] == [
        point["budget"] for point in rfp["pareto_set"]] + [None]
    assert all("fidelity" in record for record in records)  # --multi_fidelity reached the search
    assert json.loads((out / "search" / "results_rte.json").read_text())["settings"]["least_padding"] is True
    assert json.loads((out / "stages.json").read_text())["search"]["--initial_sub_networks"] == str(
        out.resolve() / "rfp" / "results_rte.json")
    assert json.loads((out / "stages.json").read_text())["teacher"]["--search_space"] == "small"
    assert summary_of(out)["search_seeded_with_rfp"] is True
    named = ("--search_space importance", "--init_from_teacher True", "the search seeded with RFP's masks")
    assert all(change in summary_of(out)["recipe"] for change in named)
    for row in summary_of(out)["budgets"]:  # a card names the recipe where the search's model shipped
        card = (Path(row["model_dir"]) / "README.md").read_text()
        assert (summary_of(out)["recipe"] in card) == (row["method"] == "search")


def test_seeding_with_rfp_is_refused_for_a_causal_lm(tmp_path):
    task = make_task("lm", tmp_path)
    completed = run_prune(task.argv(tmp_path / "out") + ["--seed_search_with_rfp", "True"])
    assert completed.returncode != 0
    assert "--seed_search_with_rfp True needs retraining-free pruning" in completed.stderr
    assert "Traceback" not in completed.stderr


def plain_wrongness(task: Task, model_dir: Path) -> np.ndarray:
    """Per test example, 1 where the checkpoint, reloaded with plain transformers in a fresh process, is wrong."""
    completed = subprocess.run([sys.executable, "-c", RELOAD, str(model_dir), str(task.test_file)],
                               capture_output=True, text=True, check=True)
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    rows = list(csv.DictReader(task.test_file.open(), delimiter="\t", quoting=csv.QUOTE_NONE))
    labels = np.array([result["label2id"][row["label"]] for row in rows])
    return (np.array(result["outputs"]).argmax(1) != labels).astype(float)


def test_the_rfp_comparison_of_a_run_pairs_the_shipped_candidates_test_predictions(classification, tmp_path):
    """bench/prune_vs_rfp.py: after recovery, each budget's search and RFP candidates score what plain transformers
    gives their checkpoints, their difference's standard error is the paired one over the test examples, and the
    goal lines are those bench/study_glue.py --check_goal reads."""
    task, output_dir = classification
    report_md = tmp_path / "comparison.md"
    command = [sys.executable, "bench/prune_vs_rfp.py", str(output_dir), "--output", str(report_md)]
    completed = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr[-3000:]
    # a stage run again after the first comparison leaves a stale cache of predictions: it is scored again
    stale = output_dir / "rfp_comparison" / "budget-0.3-search-after.json"
    cached = json.loads(stale.read_text())
    stale.write_text(json.dumps(cached | {"predictions": [0] * len(cached["predictions"]),
                                          "test": {"accuracy": -1.0}}))
    completed = subprocess.run(command, cwd=PROJECT_DIR, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr[-3000:]
    record = json.loads(report_md.with_suffix(".json").read_text())
    for budget in ("0.3", "0.6"):
        wrong = {method: plain_wrongness(task, output_dir / "candidates" / f"budget-{budget}" / method)
                 for method in ("search", "rfp")}
        after = record["comparisons"][budget]["after"]
        assert after["test"] == pytest.approx(1 - wrong["search"].mean())
        assert after["rfp_test"] == pytest.approx(1 - wrong["rfp"].mean())
        differences = wrong["rfp"] - wrong["search"]
        assert after["difference"] == pytest.approx(differences.mean())
        assert after["standard_error"] == pytest.approx(differences.std(ddof=1) / np.sqrt(len(differences)))
        for method, field_name in (("search", "test"), ("rfp", "rfp_test")):  # as select_and_extract.py scored it
            extraction = json.loads((output_dir / "candidates" / f"budget-{budget}" / method / "extraction.json"
                                     ).read_text())
            assert record["comparisons"][budget]["before"][field_name] == pytest.approx(
                extraction["test_extracted"]["accuracy"])
        shipped_weights = (output_dir / "models" / f"budget-{budget}" / "model.safetensors").read_bytes()
        assert (output_dir / "candidates" / f"budget-{budget}" / record["shipped"][budget] / "model.safetensors"
                ).read_bytes() == shipped_weights  # the column names the candidate whose weights models/ holds
    sys.path.insert(0, str(PROJECT_DIR / "bench"))
    from study_glue import read_goal_lines

    goal = read_goal_lines(report_md.read_text())["rte"]
    assert set(goal["budgets"]) == {row["budget"] for row in summary_of(output_dir)["budgets"]}
    assert goal["rfp"]["before"][1] == goal["rfp"]["after"][1] == 6


def hand_picked_iteration(records: list[dict], labels: np.ndarray, budget: float, unpruned_layers: int) -> int:
    """By hand: the largest record within `budget` whose accuracy error is above the best's by at most one
    standard error of the per-example differences of wrongness (the best: lowest error, then the largest)."""
    within = [r for r in records if r["num_layer_parameters"] <= budget * unpruned_layers]
    best = min(within, key=lambda r: (r["error"], -r["num_layer_parameters"]))
    wrong = {r["iteration"]: np.array(r["validation_predictions"]) != labels for r in within}

    def ties(record: dict) -> bool:
        differences = wrong[record["iteration"]].astype(float) - wrong[best["iteration"]]
        return differences.mean() <= differences.std(ddof=1) / np.sqrt(len(labels)) * (1 + 1e-9)
    return max((r for r in within if ties(r)), key=lambda r: (r["num_layer_parameters"], -r["error"]))["iteration"]


def test_ties_within_noise_extract_the_largest_sub_network_validation_cannot_tell_from_the_best(tmp_path):
    """--ties_within_noise True: the search records its validation predictions, and each budget's search candidate
    is the largest sub-network within one paired standard error of the best (computed here by hand from the
    recorded predictions and labels); the summary and recipe say so. At 0.8 of the encoder the tiny search's best
    (12 validation examples) ties with a larger sub-network, so the rule changes that budget's pick."""
    task = make_task("classification", tmp_path)
    budgets = (0.3, 0.8)
    completed = run_prune(task.argv(tmp_path / "out", budgets=",".join(map(str, budgets)))
                          + ["--ties_within_noise", "True", "--num_samples", "12"])
    assert completed.returncode == 0, completed.stderr[-3000:]
    out = tmp_path / "out"
    results = json.loads((out / "search" / "results_rte.json").read_text())
    records = [json.loads(line) for line in (out / "search" / "evaluations.jsonl").read_text().splitlines()]
    labels = np.array(results["recorded_validation"]["labels"])
    stages = json.loads((out / "stages.json").read_text())
    assert stages["search"]["--record_validation_predictions"] == "True"
    unpruned_layers = results["unpruned"]["num_layer_parameters"]
    for budget in budgets:
        expected = hand_picked_iteration(records, labels, budget, unpruned_layers)
        assert stages[f"search-budget-{budget:g}"]["--iteration"] == str(expected)
    within = [r for r in records if r["num_layer_parameters"] <= 0.8 * unpruned_layers]
    best = min(within, key=lambda r: (r["error"], -r["num_layer_parameters"]))
    assert stages["search-budget-0.8"]["--iteration"] != str(best["iteration"])  # the premise: the rule changed it
    assert summary_of(out)["ties_within_noise"] is True
    assert "ties within the validation noise to the largest" in summary_of(out)["recipe"]


def test_ties_within_noise_refuse_a_multi_fidelity_search(tmp_path):
    task = make_task("classification", tmp_path)
    completed = run_prune(task.argv(tmp_path / "out") + ["--ties_within_noise", "True", "--multi_fidelity", "True"])
    assert completed.returncode != 0
    assert "--ties_within_noise True needs an exact search" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "out").exists()
