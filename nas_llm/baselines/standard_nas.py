"""Standard NAS, the baseline of weight sharing: every sub-network is fine-tuned on its own.

Syne Tune runs the trials (`standard_nas_trial.py`): each extracts one sub-network from the pre-trained
model, fine-tunes it for up to `--max_epochs` epochs and reports its validation error and relative
parameter count after every epoch. Multi-objective ASHA stops trials that are not among the best
1/`--reduction_factor` (by non-dominated sorting of (error, params)) at their rung; random search runs
every trial to the end. The first trial is always the unpruned network, trained for all epochs: the
reference of the results.

This module holds what the entry script and the trial share: the flags, the files of an output
directory, the scheduler, and turning Syne Tune's per-epoch reports into one record per trial; and the steps of
run_standard_nas.py: running the tuner, a record per trial with its costs, the Pareto set with each point's test
metrics, the unpruned reference, which trial checkpoints are kept, and the results record.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import syne_tune.num_gpu
import torch
from syne_tune import StoppingCriterion, Tuner
from syne_tune.backend import LocalBackend
from syne_tune.optimizer.scheduler import SchedulerDecision, TrialScheduler, TrialSuggestion
from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA
from syne_tune.optimizer.schedulers.multiobjective.multiobjective_priority import MOPriority
from syne_tune.optimizer.schedulers.multiobjective.non_dominated_priority import nondominated_sort
from syne_tune.optimizer.schedulers.single_fidelity_scheduler import SingleFidelityScheduler
from syne_tune.results_callback import StoreResultsCallback

from nas_llm.common.arguments import CostArguments, ModelArguments, NASArguments, TrainingArguments, check_choice
from nas_llm.common.errors import UsageError
from nas_llm.common.io_utils import write_json_atomic
from nas_llm.data.data import LM_TASK, DataArguments, absolute_data_flags
from nas_llm.extraction.extract import load_extracted
from nas_llm.model.cost import CostMeter
from nas_llm.model.search_spaces import SearchSpace
from nas_llm.search.results import pareto_front
from nas_llm.search.searchers import plain_value
from nas_llm.training.evaluation import evaluate

logger = logging.getLogger(__name__)

SCHEDULERS = ("moasha", "random_search")
VALIDATION_PREFIX = "validation_"  # the trials report their validation metrics under these names
METRICS = ["error", "params"]  # both minimised; `params` relative to the unpruned network
EPOCH = "epoch"  # MO-ASHA's time attribute: the trial's epochs so far
SETTINGS_KEY = "standard_nas_settings"  # the config entry that points a trial at the run's settings file
SETTINGS_FILE = "standard_nas_settings.json"
TRIALS_DIR = "trials"  # LocalBackend: trials/<trial_id>/{std.out,std.err,config.json,checkpoints/}
TUNER_DIR = "syne-tune"  # Syne Tune's own files (metadata.json, results.csv.zip)
EPOCH_CHECKPOINT = "epoch-{epoch}"


@dataclass
class StandardNASArguments:
    scheduler: str = field(
        default="moasha",
        metadata={"help": f"How trials are chosen and stopped, one of: {', '.join(SCHEDULERS)} (multi-objective "
                  "ASHA over (error, params) stops unpromising trials after 1, r, r^2, ... epochs; random_search "
                  "trains every trial for --max_epochs)."},
    )
    max_epochs: int | None = field(
        default=None,
        metadata={"help": "Epochs per trial at most (also the length of each trial's learning-rate schedule); "
                  "default: --num_train_epochs."},
    )
    reduction_factor: int = field(
        default=3, metadata={"help": "r of MO-ASHA: the share 1/r of the trials at a rung continues."}
    )
    n_workers: int = field(default=1, metadata={"help": "Trials running at the same time (one GPU each, if any)."})
    num_samples: int | None = field(
        default=None, metadata={"help": "Trials to start at most (the unpruned network included)."}
    )
    max_wallclock_time: float | None = field(
        default=None,
        metadata={"help": "Seconds after which the tuner stops; trials still running then are stopped and kept "
                  "with the epochs they finished."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Delete an earlier standard-NAS run in --output_dir and start afresh (by default such a "
                  "directory is refused: Syne Tune cannot continue a tuner that was stopped)."},
    )

    def __post_init__(self) -> None:
        check_choice("scheduler", self.scheduler, SCHEDULERS)
        for flag in ("max_epochs", "n_workers", "num_samples", "max_wallclock_time"):
            value = getattr(self, flag)
            if value is not None and value <= 0:
                raise UsageError(f"--{flag} must be positive, got {value}")
        if self.reduction_factor < 2:
            raise UsageError(f"--reduction_factor must be at least 2, got {self.reduction_factor}")
        if self.num_samples is None and self.max_wallclock_time is None:
            raise UsageError("give standard NAS a budget: --num_samples, --max_wallclock_time or both")


ARGUMENTS = (ModelArguments, DataArguments, NASArguments, TrainingArguments, CostArguments, StandardNASArguments)


def check_training_flags(training_args: TrainingArguments) -> None:
    """The flags of train_supernet.py that have no meaning for a trial."""
    if training_args.use_accelerate:
        raise UsageError("standard NAS trains each trial in one process; drop --use_accelerate (use --n_workers)")
    if training_args.resume_from_checkpoint is not None:
        raise UsageError("--resume_from_checkpoint is for train_supernet.py; standard NAS trials always start afresh")


def check_run_flags(data_args: DataArguments, training_args: TrainingArguments) -> None:
    """Refuse what a standard-NAS run cannot do, before anything is loaded."""
    check_training_flags(training_args)
    if data_args.task_name == LM_TASK:
        raise UsageError(
            "run_standard_nas.py fine-tunes classifiers; for --task_name lm run train_supernet.py (with "
            "--sampling_strategy none to search the pre-trained weights) and run_offline_search.py"
        )
    if training_args.output_dir == TrainingArguments.output_dir:
        raise UsageError("pass --output_dir: the folder for the trials and results of this standard-NAS run")


def max_epochs(nas_run_args: StandardNASArguments, training_args: TrainingArguments) -> int:
    return nas_run_args.max_epochs or training_args.num_train_epochs


def prepare_output_dir(output_dir: Path, results_file: Path, overwrite: bool) -> None:
    """Refuse a directory holding an earlier run (finished or not) unless asked to start afresh."""
    settings = output_dir / SETTINGS_FILE
    if settings.exists() and not overwrite:
        state = f"a finished standard-NAS run ({results_file.name})" if results_file.exists() else (
            "an interrupted standard-NAS run (Syne Tune cannot continue a stopped tuner)"
        )
        raise UsageError(
            f"--output_dir {output_dir} holds {state}; pass another --output_dir, or --overwrite_output_dir True "
            "to delete it and start afresh"
        )
    for path in (output_dir / TRIALS_DIR, output_dir / TUNER_DIR):
        shutil.rmtree(path, ignore_errors=True)
    for path in (settings, results_file):
        path.unlink(missing_ok=True)


class UnprunedFirst(TrialScheduler):
    """Wraps a scheduler: the first trial is the unpruned network, and at most `max_trials` trials start.

    The unpruned network is the reference of the results, so it trains for all epochs like a plain fine-tuning
    run: the wrapped scheduler sees its reports (they count at the rungs) but never stops it. Returning None
    from `suggest` makes the Tuner wait for the running trials and end, so a trial budget is exact instead of
    overshooting by the number of workers.
    """

    def __init__(self, scheduler: TrialScheduler, unpruned_config: dict[str, Any], max_trials: int | None):
        super().__init__(random_seed=scheduler.random_seed)
        self.scheduler, self.unpruned_config, self.max_trials = scheduler, unpruned_config, max_trials
        self.num_suggested = 0
        self.unpruned_trial_id: int | None = None

    def suggest(self) -> TrialSuggestion | None:
        if self.max_trials is not None and self.num_suggested >= self.max_trials:
            return None
        self.num_suggested += 1
        if self.num_suggested == 1:
            return TrialSuggestion.start_suggestion(dict(self.unpruned_config))
        return self.scheduler.suggest()

    def on_trial_add(self, trial) -> None:
        if self.unpruned_trial_id is None:
            self.unpruned_trial_id = trial.trial_id
        self.scheduler.on_trial_add(trial)

    def on_trial_error(self, trial) -> None:
        self.scheduler.on_trial_error(trial)

    def on_trial_result(self, trial, result: dict[str, Any]) -> str:
        decision = self.scheduler.on_trial_result(trial, result)
        return SchedulerDecision.CONTINUE if trial.trial_id == self.unpruned_trial_id else decision

    def on_trial_complete(self, trial, result: dict[str, Any]) -> None:
        self.scheduler.on_trial_complete(trial, result)

    def on_trial_remove(self, trial) -> None:
        self.scheduler.on_trial_remove(trial)

    def metric_names(self) -> list[str]:
        return self.scheduler.metric_names()

    def metric_mode(self) -> str:
        return self.scheduler.metric_mode()

    def metadata(self) -> dict[str, Any]:
        return self.scheduler.metadata()


class NonDominatedRank(MOPriority):
    """Each trial's place in Syne Tune's non-dominated sort of (error, params): 0 is the best.

    ASHA ranks the priorities of the trials at a rung and stops the newest one unless it is in the best
    1/r. syne-tune 0.16's NonDominatedPriority returns the sort order itself (the indices of the trials,
    best first) where the rung expects one priority per trial, so its MO-ASHA compares trial indices and
    keeps trials that should stop; this priority gives the rung what it expects.
    """

    def priority_unsafe(self, objectives: np.ndarray) -> np.ndarray:
        order = nondominated_sort(objectives, dim=0)
        ranks = np.empty(len(order), dtype=int)
        ranks[order] = np.arange(len(order))
        return ranks


def make_scheduler(
    name: str, config_space: dict[str, Any], unpruned_config: dict[str, Any], epochs: int, reduction_factor: int,
    max_trials: int | None, seed: int,
) -> TrialScheduler:
    if name == "moasha":
        scheduler = MOASHA(
            config_space, metrics=METRICS, time_attr=EPOCH, max_t=epochs, grace_period=1,
            reduction_factor=reduction_factor, multiobjective_priority=NonDominatedRank(), random_seed=seed,
        )
    else:  # baselines.RandomSearch refuses two metrics in syne-tune 0.16; this is its multi-objective form
        scheduler = SingleFidelityScheduler(
            config_space, metrics=METRICS, searcher="random_search", random_seed=seed,
            searcher_kwargs={"random_seed": seed},
        )
    return UnprunedFirst(scheduler, unpruned_config, max_trials)


def epoch_checkpoint(checkpoint_dir: str | Path, epoch: int) -> Path:
    """Where a trial keeps the model it reported after `epoch` epochs (an extracted, smaller checkpoint)."""
    return Path(checkpoint_dir) / EPOCH_CHECKPOINT.format(epoch=epoch)


def drop_epoch_checkpoints(checkpoint_dir: Path, keep) -> None:
    """Delete the trial's epoch-<k>/ folders whose k fails `keep(k)`."""
    for folder in Path(checkpoint_dir).glob(EPOCH_CHECKPOINT.format(epoch="*")):
        epoch = folder.name.split("-", 1)[1].removesuffix(".tmp")
        if not keep(int(epoch)):
            shutil.rmtree(folder, ignore_errors=True)


class TrialReports(StoreResultsCallback):
    """Syne Tune's record of every report the tuner acted on; drops the checkpoints no report needs anymore.

    A trial may run ahead of the tuner (it reports epoch k+1 before the tuner reads epoch k), so it keeps
    every epoch it saved; once the tuner has seen epoch k, the folders of earlier epochs go.
    """

    def __init__(self, checkpoint_path):
        super().__init__()
        self.checkpoint_path = checkpoint_path  # trial id -> the trial's checkpoint folder

    def on_trial_result(self, trial, status: str, result: dict[str, Any], decision: str) -> None:
        super().on_trial_result(trial, status, result, decision)
        drop_epoch_checkpoints(self.checkpoint_path(trial.trial_id), keep=lambda epoch: epoch >= result[EPOCH])


@dataclass
class TrialRecord:
    """One trial as the tuner saw it: its config, its per-epoch reports and how it ended."""

    trial_id: int
    config: dict[str, Any]
    reports: list[dict[str, Any]]  # in epoch order
    stopped_by_scheduler: bool  # MO-ASHA stopped it before --max_epochs

    @property
    def last(self) -> dict[str, Any]:
        return self.reports[-1]


def trial_records(results: list[dict[str, Any]], config_keys: list[str], epochs: int) -> list[TrialRecord]:
    """Group the rows of Syne Tune's StoreResultsCallback (one per report) by trial, in trial-id order."""
    by_trial: dict[int, list[dict[str, Any]]] = {}
    for row in results:
        by_trial.setdefault(int(row["trial_id"]), []).append(row)
    records = []
    for trial_id, rows in sorted(by_trial.items()):
        rows.sort(key=lambda row: row[EPOCH])
        config = {key: rows[0][f"config_{key}"] for key in config_keys}
        stopped = rows[-1]["st_decision"] == SchedulerDecision.STOP and rows[-1][EPOCH] < epochs
        records.append(TrialRecord(trial_id, config, rows, stopped))
    return records


def run_trials(
    trial_script: Path, scheduler, nas_run_args, output_dir: Path
) -> tuple[LocalBackend, TrialReports]:
    """Run Syne Tune's Tuner over `trial_script` on the local backend until the budget is spent.

    Returns the backend (which knows each trial's checkpoint folder) and every trial's reports.
    """
    # Syne Tune's GPU count is cached in this module global; filled in, its nvidia-smi probe (which leaves a
    # std.out file in the user's working directory) never runs.
    syne_tune.num_gpu._num_gpus = torch.cuda.device_count()
    backend = LocalBackend(entry_point=str(trial_script), pass_args_as_json=True)
    reports = TrialReports(backend.checkpoint_trial_path)
    tuner = Tuner(
        trial_backend=backend, scheduler=scheduler,
        stop_criterion=StoppingCriterion(max_wallclock_time=nas_run_args.max_wallclock_time),
        n_workers=nas_run_args.n_workers, sleep_time=0.5, tuner_name=TUNER_DIR, suffix_tuner_name=False,
        trial_backend_path=str(output_dir / TRIALS_DIR), callbacks=[reports], save_tuner=False,
    )
    tuner.tuner_path = output_dir / TUNER_DIR  # next to the trials, not in ~/syne-tune
    tuner.run()
    return backend, reports


def tune(
    trial_script: Path, argv: list[str], search_space: SearchSpace, nas_run_args: StandardNASArguments, epochs: int,
    seed: int, output_dir: Path,
) -> tuple[LocalBackend, list[TrialRecord], float]:
    """Run the trials of `trial_script` with the run's flags `argv`; the backend, one record per trial that
    finished an epoch, and the tuner's wall-clock seconds."""
    settings_path = output_dir / SETTINGS_FILE
    write_json_atomic(settings_path, {"argv": argv})
    settings_entry = {SETTINGS_KEY: str(settings_path)}
    scheduler = make_scheduler(
        nas_run_args.scheduler, search_space.config_space | settings_entry,
        search_space.to_config(search_space.largest()) | settings_entry, epochs, nas_run_args.reduction_factor,
        nas_run_args.num_samples, seed,
    )
    tuner_start = time.time()
    backend, reports = run_trials(trial_script, scheduler, nas_run_args, output_dir)
    wallclock_s = time.time() - tuner_start
    trials = trial_records(reports.results, list(search_space.config_space), epochs)
    if not trials:
        raise UsageError("no trial finished an epoch within the budget; raise --max_wallclock_time")
    return backend, trials, wallclock_s


def trial_evaluations(
    trials: list[TrialRecord], search_space: SearchSpace, cost_meter: CostMeter, backend: LocalBackend
) -> list[dict[str, Any]]:
    """One record per trial: its last report, its costs (no latency), its learning curve and its checkpoint."""
    evaluations = []
    for iteration, trial in enumerate(trials):
        sub_network = search_space.to_sub_network(trial.config)
        costs = cost_meter.measure(sub_network, with_latency=False)
        record = {
            "iteration": iteration,
            "trial_id": trial.trial_id,
            "error": trial.last["error"],
            "validation": {
                key.removeprefix(VALIDATION_PREFIX): value
                for key, value in trial.last.items() if key.startswith(VALIDATION_PREFIX)
            },
            **cost_meter.relative(costs),
            **costs,
            "sub_network": sub_network.summary(),
            "epochs": trial.last[EPOCH],
            "stopped_early": trial.stopped_by_scheduler,
            "learning_curve": [report["error"] for report in trial.reports],
            "runtime_s": trial.last["elapsed_s"],
            "trial_checkpoint_dir": str(epoch_checkpoint(backend.checkpoint_trial_path(trial.trial_id),
                                                         trial.last[EPOCH])),
        }
        if search_space.name != "large":
            record["config"] = {key: plain_value(value) for key, value in trial.config.items()}
        evaluations.append(record)
    return evaluations


@dataclass
class TrialTester:
    """Scores a trial's own fine-tuned model (its checkpoint) on the test split."""

    loader: Any  # the test split's DataLoader
    metrics_key: str
    device: torch.device

    def test_metrics(self, checkpoint: str) -> dict[str, float]:
        return evaluate(load_extracted(checkpoint).to(self.device), self.loader, self.metrics_key, self.device)


def pareto_set_with_test(
    evaluations: list[dict], trials: list[TrialRecord], search_space: SearchSpace, cost_meter: CostMeter,
    tester: TrialTester,
) -> tuple[list[int], list[dict[str, Any]]]:
    """The Pareto-optimal trials over (error, params), cheapest first, each with its latency and test metrics."""
    pareto = pareto_front(evaluations, ["error", "params"], order_by="params")
    pareto_set = []
    for index in pareto:
        record = evaluations[index]
        sub_network = search_space.to_sub_network(trials[index].config)
        costs = cost_meter.measure(sub_network, with_latency=True)
        pareto_set.append({
            "iteration": index,
            "trial_id": record["trial_id"],
            "error": record["error"],
            **cost_meter.relative(costs),
            **costs,
            "test": tester.test_metrics(record["trial_checkpoint_dir"]),
            "sub_network": sub_network.to_json_dict(),
            "epochs": record["epochs"],
            "trial_checkpoint_dir": record["trial_checkpoint_dir"],
        })
    return pareto, pareto_set


def unpruned_reference(
    evaluations: list[dict], trials: list[TrialRecord], cost_meter: CostMeter, tester: TrialTester, epochs: int
) -> dict[str, Any]:
    """The unpruned network's costs and, if the first trial fine-tuned it (UnprunedFirst), its scores."""
    unpruned = dict(cost_meter.unpruned)
    if trials[0].trial_id == 0:  # the first trial fine-tunes the unpruned network (UnprunedFirst)
        first = evaluations[0]
        unpruned |= {
            "validation": first["validation"], "test": tester.test_metrics(first["trial_checkpoint_dir"]),
            "epochs": first["epochs"], "trial_checkpoint_dir": first["trial_checkpoint_dir"],
        }
        if first["epochs"] < epochs:
            logger.warning("the unpruned network trained %d of %d epochs only", first["epochs"], epochs)
    return unpruned


def keep_recorded_checkpoints(trials: list[TrialRecord], backend: LocalBackend, pareto_set: list[dict]) -> None:
    """Only the weights worth extracting are kept: the recorded epoch of the Pareto trials and the unpruned one."""
    kept_trials = {record["trial_id"] for record in pareto_set}
    if trials[0].trial_id == 0:
        kept_trials.add(0)
    for trial in trials:
        recorded = trial.last[EPOCH] if trial.trial_id in kept_trials else None
        checkpoint_dir = backend.checkpoint_trial_path(trial.trial_id)
        drop_epoch_checkpoints(checkpoint_dir, keep=lambda epoch, kept=recorded: epoch == kept)


def standard_nas_results(
    model_name: str, data_args: DataArguments, nas_args: NASArguments, training_args: TrainingArguments,
    cost_args: CostArguments, nas_run_args: StandardNASArguments, epochs: int, device: torch.device,
    unpruned: dict, evaluations: list[dict], pareto: list[int], pareto_set: list[dict], wallclock_s: float,
    start_time: float,
) -> dict[str, Any]:
    """The results file (schema: results.py); every Pareto point carries its own trial's checkpoint."""
    return {
        "task_name": data_args.task_name,
        "model_name_or_path": model_name,
        "checkpoint_dir_model": None,  # every Pareto point carries its own trial_checkpoint_dir
        "method": "standard_nas",
        "sampling_strategy": "standard NAS",
        "search_space": nas_args.search_space,
        "search_strategy": nas_run_args.scheduler,
        "seed": training_args.seed,
        "num_samples": len(evaluations),
        "max_epochs": epochs,
        "n_workers": nas_run_args.n_workers,
        "objectives": ["error", "params"],
        "cost_seq_len": cost_args.cost_seq_len,
        "latency_batch_size": cost_args.latency_batch_size,
        "device": str(device),
        "settings": {"data": absolute_data_flags(data_args)},  # select_and_extract.py's default data flags
        "unpruned": unpruned,
        "evaluations": evaluations,
        "pareto_indices": pareto,
        "pareto_set": pareto_set,
        "wallclock_s": wallclock_s,
        "device_hours": sum(record["runtime_s"] for record in evaluations) / 3600,
        "runtime_s": time.time() - start_time,
    }
