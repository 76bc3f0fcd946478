"""prune.py's pipeline: from a model and a task to one shipped small model per budget, resumable at every step.

The stages are the entry scripts, each run as a subprocess with its own log (so a stop kills the stage with its
process, and a stage's output is readable on its own): teacher fine-tuning and super-network training
(train_supernet.py), the search (run_offline_search.py), retraining-free pruning of the teacher (run_rfp.py), and
per budget the extraction and recovery of the search's validation-best sub-network and of RFP's model
(select_and_extract.py). A stage is finished when the file its script writes last exists; a rerun skips it,
and a stage whose flags changed since it finished is refused. Per budget the candidate with the lower validation
error ships to models/budget-<b>/, so the pipeline is never worse, on validation, than the cheap baseline recovered
alike.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nas_llm.baselines.rfp import RFPArguments
from nas_llm.common.arguments import CostArguments, ModelArguments, NASArguments, SupernetArguments, TrainingArguments
from nas_llm.common.errors import UsageError
from nas_llm.common.io_utils import JsonLinesLog, write_json_atomic, write_text_atomic
from nas_llm.data.data import LM_TASK, DataArguments
from nas_llm.data.lm_data import LMArguments
from nas_llm.extraction.extract import SUB_NETWORK_FILE
from nas_llm.extraction.recovery import RecoveryArguments
from nas_llm.extraction.selection import shipped_test_metrics
from nas_llm.search.budgets import BUDGET_MEASURES, SEARCH_OBJECTIVE, best_within, size_share
from nas_llm.search.multi_fidelity import MultiFidelityArguments
from nas_llm.search.results import LOG_FILE, results_file_name
from nas_llm.search.within_noise import largest_within_noise

PROJECT_DIR = Path(__file__).resolve().parents[2]  # where the entry scripts are
STAGES_FILE = "stages.json"  # the flags of every finished stage, to refuse a rerun that would change one
EXTRACTION_FILE = "extraction.json"  # select_and_extract.py's last write

# The GLUE study's recipe (docs/benchmarks/09-glue-study-v2.md, row (e)): within 0.004 validation hypervolume of the
# best row on SST-2, STS-B and MRPC, and the best pick at <= 50% of the encoder on STS-B and MRPC.
RECIPE_ROW = "(e) + budget-aware sampling"
TRAINING_DEFAULTS = {
    "--num_train_epochs": "3", "--learning_rate": "1e-4", "--per_device_train_batch_size": "32",
    "--group_by_length": "True", "--search_space": "small", "--seed": "0", "--save_strategy": "epoch",
    "--resume_from_checkpoint": "latest",
}
TEACHER_RECIPE = {"--sampling_strategy": "standard"}
SUPERNET_RECIPE = {
    "--sampling_strategy": "one_shot", "--reorder_units": "importance", "--distill_hidden_states": "True",
    "--sampling_distribution": "params",
}
TEACHER_ONLY = ("--distill_hidden_states",)
SEARCH_DEFAULTS = {"--search_strategy": "ehvi", "--num_samples": "100", "--seed": "0"}
RECOVERY_DEFAULTS = {"--recover_epochs": "3", "--recover_group_by_length": "True"}
# The search's pick is rescaled by least squares before its epochs, as run_rfp.py rescales RFP's model, but only
# where that does not raise its validation error: a super-network's sub-network can lose by it (STS-B, SST-2 in
# docs/benchmarks/13-beating-rfp.md), a model pruned without training seldom does
SEARCH_RECOVERY_DEFAULTS = {"--recover_lstsq": "True", "--recover_lstsq_if_better": "True"}
# run_offline_search.py's own flags
SEARCH_FLAGS = ("search_strategy", "num_samples", "population_size", "least_padding", "record_validation_predictions")
SET_BY_PIPELINE = {  # flags prune.py sets itself for every stage: a user's value would break the layout
    "output_dir", "model_name_or_path", "checkpoint_dir_model", "log_dir", "results", "pareto_index", "iteration",
    "budgets", "constraint", "resume_from_checkpoint", "objective", "overwrite_output_dir", "save_strategy",
}
# tqdm's bar: "[elapsed<remaining, rate]", after "epoch k/K" where a stage's bars run one epoch each
BAR_TIMES = re.compile(rb"(?:epoch (\d+)/(\d+)\b[^\[\r\n]*)?\[((?:\d+:)?\d+:\d+)<((?:\d+:)?\d+:\d+)")


def fields_of(*classes: type) -> set[str]:
    return {item.name for cls in classes for item in dataclasses.fields(cls)}


STAGE_FIELDS = {  # which pass-through flags each kind of stage takes
    # the teacher samples no sub-network: a --search_space for the super-network (the importance space needs the
    # units' importance, which only the super-network's training scores) is not the teacher's
    "teacher": fields_of(ModelArguments, DataArguments, LMArguments, NASArguments, TrainingArguments)
    - {"search_space"},
    "supernet": fields_of(ModelArguments, DataArguments, LMArguments, NASArguments, SupernetArguments,
                          TrainingArguments),
    # --fidelity_shares takes several values, which a pass-through flag cannot: the search's default shares
    "search": fields_of(DataArguments, LMArguments, CostArguments, MultiFidelityArguments) - {"fidelity_shares"}
    | {"search_space", *SEARCH_FLAGS},
    "rfp": fields_of(RFPArguments, DataArguments, CostArguments),
    "extract": fields_of(DataArguments, LMArguments),
    "recover": fields_of(RecoveryArguments),  # the search's candidate only: RFP's model is not trained
}


RECIPE_FIELDS = fields_of(NASArguments, SupernetArguments)  # a user's value of one of these changes the recipe


def recipe(settings: PipelineSettings) -> str:
    """The recipe's name with what the user changed in it (the study row's name alone would misstate a run with,
    say, --search_space importance), for the log, summary.json and the model card."""
    changes = [f"{flag} {value}" for flag, value in routed(settings.pass_through, "supernet").items()
               if flag[2:] in RECIPE_FIELDS]
    changes += ["the search seeded with RFP's masks"] if settings.seed_search_with_rfp else []
    changes += ["ties within the validation noise to the largest"] if settings.ties_within_noise else []
    return RECIPE_ROW + (f" with {', '.join(changes)}" if changes else "")


def pass_through_flags() -> dict[str, list[str]]:
    """Every stage flag a user may set, with the stages it goes to (prune.py's --help lists them)."""
    names = sorted({name for names in STAGE_FIELDS.values() for name in names} - SET_BY_PIPELINE - {"task_name"})
    return {name: [kind for kind, names in STAGE_FIELDS.items() if name in names] for name in names}


def routed(pass_through: dict[str, str], kind: str) -> dict[str, str]:
    return {flag: value for flag, value in pass_through.items() if flag[2:] in STAGE_FIELDS[kind]}


@dataclass(frozen=True)
class Stage:
    """One run of an entry script; finished when `result` exists (the script writes it last)."""

    name: str
    doing: str
    script: str
    flags: dict[str, str]
    result: Path
    absorbed: tuple[str, ...] = ()  # flags whose change the script itself resumes across (run_rfp.py's --budgets)
    finished_when: Callable[[], bool] | None = None  # instead of `result` existing

    def command(self) -> list[str]:
        return [sys.executable, self.script, *[item for pair in self.flags.items() for item in pair]]

    def finished(self) -> bool:
        return self.finished_when() if self.finished_when else self.result.is_file()

    def compared_flags(self) -> dict[str, str]:
        return {flag: value for flag, value in self.flags.items() if flag not in self.absorbed}


@dataclass
class PipelineSettings:
    """What prune.py was asked for; the stage flags follow from it."""

    model_name_or_path: str
    task_name: str
    budgets: list[float]
    output_dir: Path
    budget_on: str = "encoder"
    teacher_model_name_or_path: str | None = None
    seed_search_with_rfp: bool = False
    ties_within_noise: bool = False  # within a budget, the largest sub-network validation cannot tell from the best
    pass_through: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.seed_search_with_rfp and self.language_modeling:
            raise UsageError("--seed_search_with_rfp True needs retraining-free pruning, which prune.py does not run "
                             "for --task_name lm; drop the flag")
        if self.ties_within_noise and self.language_modeling:
            raise UsageError("--ties_within_noise True compares predictions example by example; --task_name lm is "
                             "scored by its loss; drop the flag")
        if self.ties_within_noise and self.pass_through.get("--multi_fidelity") == "True":
            raise UsageError("--ties_within_noise True needs an exact search (every sub-network's predictions on the "
                             "whole validation split); drop --multi_fidelity True or --ties_within_noise True")

    @property
    def language_modeling(self) -> bool:
        return self.task_name == LM_TASK


def kill_with_parent() -> None:
    """Runs in the stage's process before its script: die when prune.py dies (Linux), so a killed run leaves no
    stage writing on behind it."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True) if sys.platform.startswith("linux") else None
    if libc is not None:
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def seconds(clock: bytes) -> int:
    """tqdm's "[h:]mm:ss" in seconds."""
    total = 0
    for part in clock.split(b":"):
        total = 60 * total + int(part)
    return total


def stage_time_left(output: bytes) -> str | None:
    """The stage's time left by the last progress bar in `output`: the bar's own estimate, plus as many whole bars
    as epochs remain after it when the bar is one epoch of several ("epoch k/K"); None without a bar."""
    bars = BAR_TIMES.findall(output)
    if not bars:
        return None
    epoch, epochs, elapsed, remaining = bars[-1]
    later_epochs = int(epochs) - int(epoch) if epoch else 0
    left = seconds(remaining) + later_epochs * (seconds(elapsed) + seconds(remaining))
    minutes, secs = divmod(left, 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes:02d}:{secs:02d}"


def stream(process: subprocess.Popen, log_path: Path, remaining: list[str]) -> None:
    """Copy the stage's output to its log and to this terminal (its progress bars as they are); keep the time
    left that the last bar implies."""
    with log_path.open("ab") as log:
        while chunk := os.read(process.stdout.fileno(), 65536):
            log.write(chunk)
            log.flush()
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()
            if (left := stage_time_left(chunk)) is not None:
                remaining[0] = left


class Pipeline:
    """Where each stage writes in --output_dir, which stages remain, and running them."""

    def __init__(self, settings: PipelineSettings, heartbeat_s: float = 60.0):
        self.settings = settings
        self.out = settings.output_dir.resolve()
        self.heartbeat_s = heartbeat_s
        self.ran: list[str] = []
        self.total_stages = (2 + len(settings.budgets) if settings.language_modeling  # no teacher, no RFP
                             else 4 + 2 * len(settings.budgets) - (settings.teacher_model_name_or_path is not None))
        self.stage_number = 0

    # ------------------------------------------------------------------ layout
    @property
    def recipe(self) -> str:
        return recipe(self.settings)

    @property
    def teacher_dir(self) -> Path:
        return Path(self.settings.teacher_model_name_or_path or self.out / "teacher")

    def search_results(self) -> Path:
        return self.out / "search" / results_file_name(self.settings.task_name)

    def rfp_results(self) -> Path:
        return self.out / "rfp" / results_file_name(self.settings.task_name)

    def candidate_dir(self, budget: float, method: str) -> Path:
        return self.out / "candidates" / f"budget-{budget:g}" / method

    def model_dir(self, budget: float) -> Path:
        return self.out / "models" / f"budget-{budget:g}"

    def log(self, name: str) -> Path:
        return self.out / "logs" / f"{name}.log"

    # ------------------------------------------------------------------ the stages
    def common(self, kind: str) -> dict[str, str]:
        return {"--task_name": self.settings.task_name, **routed(self.settings.pass_through, kind)}

    def training_stage(self, name: str, recipe: dict[str, str], doing: str) -> Stage:
        output_dir = self.out / name
        flags = {"--model_name_or_path": self.settings.model_name_or_path, **TRAINING_DEFAULTS, **recipe,
                 **self.common(name), "--output_dir": str(output_dir), "--log_dir": str(self.out / "tb")}
        return Stage(name, doing, "train_supernet.py", flags, output_dir / "results.json")

    def teacher_stage(self) -> Stage:
        return self.training_stage("teacher", TEACHER_RECIPE, "fine-tuning the unpruned model (the teacher)")

    def supernet_stage(self) -> Stage:
        recipe = {**SUPERNET_RECIPE, "--teacher_model_name_or_path": str(self.teacher_dir)}
        if self.settings.language_modeling:  # no teacher for causal LMs (train_supernet.py): the recipe without it
            recipe = {flag: value for flag, value in SUPERNET_RECIPE.items() if flag not in TEACHER_ONLY}
        return self.training_stage("supernet", recipe, f"training the super-network, recipe {self.recipe}")

    def search_stage(self) -> Stage:
        objective = SEARCH_OBJECTIVE[self.settings.budget_on]
        flags = {"--model_name_or_path": self.settings.model_name_or_path, **SEARCH_DEFAULTS,
                 "--search_space": TRAINING_DEFAULTS["--search_space"], **self.common("search"),
                 "--objective": objective, "--checkpoint_dir_model": str(self.out / "supernet"),
                 "--output_dir": str(self.search_results().parent), "--log_dir": str(self.out / "tb")}
        if self.settings.seed_search_with_rfp:
            flags["--initial_sub_networks"] = str(self.rfp_results())
        if self.settings.ties_within_noise:
            flags["--record_validation_predictions"] = "True"
        return Stage("search", f"searching sub-networks for validation error and {objective}", "run_offline_search.py",
                     flags, self.search_results())

    def unpruned_sizes(self) -> dict:
        """The unpruned model's parameters and those of its layers, from the search's results or, before the
        search (--seed_search_with_rfp), from the super-network's (whose largest sub-network is the whole)."""
        if self.search_results().is_file():
            return json.loads(self.search_results().read_text())["unpruned"]
        return json.loads((self.out / "supernet" / "results.json").read_text())

    def rfp_budgets(self) -> tuple[str, list[float]]:
        """run_rfp.py's constraint and budgets for the user's: its `params` are the layers' parameters, so a
        budget on all parameters is turned into one on the layers; latency is approached by MACs."""
        budgets, budget_on = self.settings.budgets, self.settings.budget_on
        if budget_on == "params":
            unpruned = self.unpruned_sizes()
            fixed = unpruned["num_parameters"] - unpruned["num_layer_parameters"]
            layer_budgets = [(budget * unpruned["num_parameters"] - fixed) / unpruned["num_layer_parameters"]
                             for budget in budgets]
            return "params", [float(f"{budget:g}") for budget in layer_budgets if budget > 0]  # as run_rfp reads them
        return ("params" if budget_on == "encoder" else "flops"), list(budgets)

    def rfp_stage(self) -> Stage:
        constraint, budgets = self.rfp_budgets()
        flags = {"--checkpoint_dir_model": str(self.teacher_dir), **self.common("rfp"), "--constraint": constraint,
                 "--budgets": ",".join(f"{budget:g}" for budget in budgets),
                 "--output_dir": str(self.rfp_results().parent)}

        def covers_budgets() -> bool:
            results = self.rfp_results()
            return results.is_file() and {point["budget"] for point in json.loads(results.read_text())["pareto_set"]
                                          } >= set(budgets)

        return Stage("rfp", "retraining-free pruning of the teacher (Kwon et al. 2022), the cheap baseline",
                     "run_rfp.py", flags, self.rfp_results(), absorbed=("--budgets",), finished_when=covers_budgets)

    def extract_stage(self, budget: float, method: str, results: Path, selection: dict[str, str]) -> Stage:
        output_dir = self.candidate_dir(budget, method)
        flags = {"--results": str(results), **selection, **self.common("extract"), "--output_dir": str(output_dir),
                 "--log_dir": str(self.out / "tb")}
        if not self.settings.language_modeling:  # both candidates recovered alike: RFP + recovery is the fair rival
            own_defaults = SEARCH_RECOVERY_DEFAULTS if method == "search" else {}
            flags = {**flags, **RECOVERY_DEFAULTS, **own_defaults, **routed(self.settings.pass_through, "recover"),
                     "--teacher_model_name_or_path": str(self.teacher_dir)}
            if method == "rfp":  # run_rfp.py has rescaled its model by least squares already
                flags.pop("--recover_lstsq", None)
        doing = (f"extracting RFP's model for {budget:g}" if method == "rfp"
                 else f"extracting the search's best sub-network within {budget:g}")
        doing += "" if self.settings.language_modeling else " and recovering it"
        return Stage(f"{method}-budget-{budget:g}", doing, "select_and_extract.py", flags, output_dir / EXTRACTION_FILE)

    # ------------------------------------------------------------------ running
    def recorded(self) -> dict[str, dict[str, str]]:
        path = self.out / STAGES_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def check_unchanged(self, stage: Stage) -> None:
        """Refuse to go on when a finished stage would now run with other flags."""
        before = self.recorded().get(stage.name)
        if before is None:
            return
        before = {flag: value for flag, value in before.items() if flag not in stage.absorbed}
        changed = sorted(set(before.items()) ^ set(stage.compared_flags().items()))
        if changed:
            flag = changed[0][0]
            raise UsageError(
                f"{self.out} holds a finished '{stage.name}' stage run with {flag} {before.get(flag, '(unset)')}, "
                f"this command asks for {stage.compared_flags().get(flag, '(unset)')}; repeat the earlier settings, "
                "or pass another --output_dir or --overwrite_output_dir True"
            )

    def run(self, stage: Stage) -> None:
        """Run `stage` unless it has finished (after checking that its flags are those it finished with)."""
        self.stage_number += 1
        self.check_unchanged(stage)
        if stage.finished():
            self.record(stage)
            return
        log_path = self.log(stage.name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        print(f"[{self.stage_number}/{self.total_stages}] {stage.name}: {stage.doing} (log: {log_path})",
              file=sys.stderr, flush=True)
        with log_path.open("a") as log:
            log.write("$ " + " ".join(stage.command()) + "\n")
        start, remaining = time.time(), ["unknown until its progress bar starts"]
        process = subprocess.Popen(stage.command(), cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   preexec_fn=kill_with_parent)
        reader = threading.Thread(target=stream, args=(process, log_path, remaining), daemon=True)
        reader.start()
        while reader.is_alive():  # until the stage closes its output
            reader.join(self.heartbeat_s)
            if reader.is_alive():
                print(f"\n[{stage.name}] {time.time() - start:.0f} s in; time left in this stage: {remaining[0]}",
                      file=sys.stderr, flush=True)
        process.wait()
        if process.returncode != 0:
            raise SystemExit(f"stage '{stage.name}' failed (exit {process.returncode}); see {log_path}")
        print(f"[{self.stage_number}/{self.total_stages}] {stage.name}: done in {time.time() - start:.0f} s",
              file=sys.stderr, flush=True)
        self.ran.append(stage.name)
        self.record(stage)

    def record(self, stage: Stage) -> None:
        recorded = self.recorded()
        if recorded.get(stage.name) != stage.flags:
            write_json_atomic(self.out / STAGES_FILE, recorded | {stage.name: stage.flags})

    def run_all(self) -> dict:
        """Every stage in order, then the shipped models; returns the summary (prune.py's summary.json)."""
        self.out.mkdir(parents=True, exist_ok=True)
        if self.settings.teacher_model_name_or_path is None and not self.settings.language_modeling:
            self.run(self.teacher_stage())
        self.run(self.supernet_stage())
        rfp_first = self.settings.seed_search_with_rfp  # its masks are the search's first sub-networks
        if rfp_first:
            self.run(self.rfp_stage())
        self.run(self.search_stage())
        search = json.loads(self.search_results().read_text())
        rfp = None
        if not self.settings.language_modeling:
            if not rfp_first:
                self.run(self.rfp_stage())
            rfp = json.loads(self.rfp_results().read_text())
        rows = [self.ship_budget(budget, search, rfp) for budget in self.settings.budgets]
        return self.summary(search, rows)

    # ------------------------------------------------------------------ per budget
    def ship_budget(self, budget: float, search: dict, rfp: dict | None) -> dict:
        """Extract (and recover) each method's candidate within `budget`; the validation-best one ships."""
        unpruned, budget_on = search["unpruned"], self.settings.budget_on
        candidates = {}
        best = self.search_pick(budget, search)
        if best is not None:
            stage = self.extract_stage(budget, "search", self.search_results(), {"--iteration": str(best["iteration"])})
            self.run(stage)
            candidates["search"] = candidate_scores(stage.result)
            pareto_latency = {point["iteration"]: point.get("latency_ms") for point in search["pareto_set"]}
            candidates["search"]["point"].setdefault("latency_ms", pareto_latency.get(best["iteration"]))
        else:
            self.stage_number += 1
        if rfp is not None:
            rfp_points = [point | {"pareto_index": index} for index, point in enumerate(rfp["pareto_set"])]
            rfp_best = best_within(rfp_points, budget, budget_on, unpruned, larger_on_tie=False)
            if rfp_best is not None:
                stage = self.extract_stage(budget, "rfp", self.rfp_results(),
                                           {"--pareto_index": str(rfp_best["pareto_index"])})
                self.run(stage)
                candidates["rfp"] = candidate_scores(stage.result)
            else:
                self.stage_number += 1
        if not candidates:
            raise UsageError(f"no sub-network of the search or of RFP fits --budgets {budget:g} of the "
                             f"{budget_on}; the smallest searched keeps "
                             f"{min(size_share(p, budget_on, unpruned) for p in search['evaluations']):.3f}")
        method = min(candidates, key=lambda name: (candidates[name]["validation"]["error"], name != "search"))
        self.ship(budget, method, candidates)
        return self.summary_row(budget, method, candidates, unpruned)

    def search_pick(self, budget: float, search: dict) -> dict | None:
        """The search's sub-network to extract for `budget`: the validation-best within it (on an exact tie the
        largest), or with --ties_within_noise True the largest that ties with it within one paired standard error
        (within_noise.py; the predictions are in the search's evaluations log)."""
        unpruned, budget_on = search["unpruned"], self.settings.budget_on
        if not self.settings.ties_within_noise:
            return best_within(search["evaluations"], budget, budget_on, unpruned)
        records = JsonLinesLog(self.search_results().parent / LOG_FILE).read()
        recorded = search["recorded_validation"]
        return largest_within_noise(records, budget, budget_on, unpruned, recorded["task"], recorded["labels"])

    def ship(self, budget: float, method: str, candidates: dict[str, dict]) -> None:
        """Copy the winning candidate to models/budget-<b>/ (atomically) with a card section on how it was chosen."""
        target = self.model_dir(budget)
        source = self.candidate_dir(budget, method)
        marker = target / "prune.json"
        choice = {"budget": budget, "budget_on": self.settings.budget_on, "method": method,
                  "candidates": candidates, "source": str(source)}
        if marker.is_file() and json.loads(marker.read_text()) == choice:
            return
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
        write_json_atomic(staging / "prune.json", choice)
        card = staging / "README.md"
        write_text_atomic(card, card.read_text() + card_section(choice, self.settings))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)

    def summary_row(self, budget: float, method: str, candidates: dict[str, dict], unpruned: dict) -> dict:
        shipped = candidates[method]
        point = shipped["point"]
        return {
            "budget": budget,
            "budget_on": self.settings.budget_on,
            "method": method,
            "model_dir": str(self.model_dir(budget)),
            "num_parameters": shipped["num_parameters"],
            "num_layer_parameters": point["num_layer_parameters"],
            "macs": point["macs"],
            "latency_ms": point.get("latency_ms"),
            # a pick off the Pareto set (a tie broken toward the larger) has no latency measured
            "shares": {name: size_share(point, name, unpruned) for name, measure in BUDGET_MEASURES.items()
                       if point.get(measure) is not None},
            "sub_network": point.get("sub_network"),
            "validation": shipped["validation"],
            "test": shipped["test"],
            "before_recovery": shipped["before_recovery"],
            "candidates": {name: {"validation": scores["validation"], "test": scores["test"]}
                           for name, scores in candidates.items()},
            "log": str(self.log(f"{method}-budget-{budget:g}")),
        }

    def summary(self, search: dict, rows: list[dict]) -> dict:
        return {
            "model_name_or_path": self.settings.model_name_or_path,
            "task_name": self.settings.task_name,
            "budget_on": self.settings.budget_on,
            "recipe": self.recipe,
            "search_seeded_with_rfp": self.settings.seed_search_with_rfp,
            "ties_within_noise": self.settings.ties_within_noise,
            "teacher": None if self.settings.language_modeling else str(self.teacher_dir),
            "search_results": str(self.search_results()),
            "rfp_results": str(self.rfp_results()) if self.rfp_results().is_file() else None,
            "unpruned": {key: value for key, value in search["unpruned"].items()},
            "budgets": rows,
        }


def candidate_scores(extraction_path: Path) -> dict:
    """A candidate's validation and test metrics as shipped (after recovery, if any) and before recovery."""
    extraction = json.loads(extraction_path.read_text())
    point, recovery = extraction["pareto_point"], extraction.get("recovery")
    validation_before = point.get("validation") or {"error": point["error"]}
    validation = validation_before
    if recovery is not None and recovery["kept_epoch"] > 0:
        validation = recovery["validation_per_epoch"][recovery["kept_epoch"] - 1]
    test = shipped_test_metrics(extraction)
    kept = json.loads((extraction_path.parent / SUB_NETWORK_FILE).read_text())
    point = point | {"sub_network": {"heads_per_layer": [len(heads) for heads in kept["kept_heads"]],
                                     "neurons_per_layer": [len(neurons) for neurons in kept["kept_neurons"]]}}
    return {"validation": validation, "test": test, "num_parameters": extraction["num_parameters"],
            "before_recovery": {"validation": validation_before, "test": extraction["test_extracted"]},
            "recovered": recovery is not None, "point": point}


def method_name(method: str, settings: PipelineSettings) -> str:
    if method == "search":
        return f"the super-network search (recipe {recipe(settings)}) and recovery"
    return "retraining-free pruning of the fine-tuned model (Kwon et al. 2022) and recovery"


def card_section(choice: dict, settings: PipelineSettings) -> str:
    """What the model card adds for a model prune.py shipped: the budget, the candidates and why this one."""
    lines = ["", "## How prune.py chose it", "",
             f"Budget: at most {choice['budget']:g} of the unpruned model's {settings.budget_on} "
             f"({BUDGET_MEASURES[settings.budget_on]}). Shipped: **{choice['method']}**, "
             f"{method_name(choice['method'], settings)}, the candidate with the lower validation error:", "",
             "| candidate | validation error | test metrics |", "|---|---|---|"]
    for name, scores in choice["candidates"].items():
        test = ", ".join(f"{key} {value:.4f}" for key, value in scores["test"].items())
        lines.append(f"| {name} | {scores['validation']['error']:.4f} | {test} |")
    return "\n".join(lines) + "\n"
