"""Least-squares mask tuning at an earlier commit against today's, side by side, on the same sub-networks.

Every extraction with --recover_lstsq True (prune.py's search candidate) and every budget of run_rfp.py runs
`lstsq.tune_masks`: minutes per sub-network on a CPU. This times `tune_masks` of `--baseline_rev` (the module
read with `git show`, so the older code needs no checkout) and of the working tree, one after the other, on the
same super-network, sub-networks and calibration batches (recovery's defaults: 2,048 training examples in
batches of 32, seed 42), and reports how far their scales differ.

    python bench/bench_lstsq.py --checkpoint_dir_model /work/runs/mrpc_imp/supernet --task_name mrpc \\
        --data_dir ../shared/data/glue --results /work/runs/mrpc_imp/search/results_mrpc.json --iterations 1 42 \\
        --baseline_rev cdf2476 --output bench/lstsq/mrpc.json
"""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_sub_networks import machine_info  # noqa: E402

from nas_llm.common.errors import UsageArgumentParser, UsageError, exit_on_usage_error  # noqa: E402
from nas_llm.common.io_utils import write_json_atomic  # noqa: E402
from nas_llm.data.data import DataArguments, load_raw_splits, tokenize_splits  # noqa: E402
from nas_llm.extraction import lstsq  # noqa: E402
from nas_llm.extraction.recovery import RecoveryArguments  # noqa: E402
from nas_llm.model.models import load_supernet  # noqa: E402
from nas_llm.model.sub_network import SubNetwork  # noqa: E402
from nas_llm.search.results import evaluated_point  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODULE_PATH = "nas_llm/extraction/lstsq.py"


def module_at(rev: str, directory: Path) -> ModuleType:
    """lstsq.py as it was at `rev`, imported under a name of its own (its imports resolve to today's package)."""
    try:
        source = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{MODULE_PATH}"], check=True,
                                capture_output=True, text=True).stdout
    except subprocess.CalledProcessError as error:
        raise UsageError(
            f"--baseline_rev {rev}: git cannot show {MODULE_PATH} there ({error.stderr.strip()})"
        ) from None
    path = directory / "lstsq_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("lstsq_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["lstsq_baseline"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def sub_networks(results_path: Path, iterations: list[int]) -> dict[int, SubNetwork]:
    """The sub-networks of a search's evaluations, by iteration (masks from its evaluations log)."""
    return {iteration: SubNetwork.from_json_dict(evaluated_point(results_path, iteration)["sub_network"])
            for iteration in iterations}


def timed_tuning(module: ModuleType, model: torch.nn.Module, sub_network: SubNetwork, batches: list[dict],
                 targets: list[dict]) -> tuple[float, dict]:
    """Seconds of one `tune_masks` (the unpruned streams given, as run_rfp.py gives them) and its scales."""
    targets = [{module.Block(block.layer, block.is_attention): stream for block, stream in streams.items()}
               for streams in targets]  # keyed by the module's own Block class (the same tensors)
    tuned = copy.deepcopy(model)
    start = time.perf_counter()
    scales = module.tune_masks(tuned, model, sub_network, batches, targets=targets)
    return time.perf_counter() - start, scales


def largest_difference(first: dict, second: dict) -> float:
    return max((abs(a - b) for kind in first for x, y in zip(first[kind], second[kind], strict=True)
                for a, b in zip(x, y, strict=True)), default=0.0)


def main(argv: list[str] | None = None) -> None:
    parser = UsageArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint_dir_model", required=True, help="the super-network (or fine-tuned model)")
    parser.add_argument("--task_name", required=True, help="the task the super-network was trained on")
    parser.add_argument("--data_dir", required=True, help="where <TASK>/train.tsv is, as for the other scripts")
    parser.add_argument("--results", required=True, type=Path,
                        help="a search's results file (its evaluations log beside it holds the masks)")
    parser.add_argument("--iterations", required=True, type=int, nargs="+", help="their iterations in --results")
    parser.add_argument("--baseline_rev", required=True, help="the commit whose lstsq.py is the baseline")
    parser.add_argument("--output", required=True, type=Path, help="the JSON record to write")
    args = parser.parse_args(argv)
    chosen = sub_networks(args.results, args.iterations)
    recovery = RecoveryArguments()
    model, tokenizer, _ = load_supernet(args.checkpoint_dir_model)
    model.eval()
    data_args = DataArguments(task_name=args.task_name, data_dir=args.data_dir)
    train = tokenize_splits(load_raw_splits(data_args), tokenizer, data_args, ("train",))["train"]
    batches = lstsq.calibration_batches(train, tokenizer, recovery.recover_calibration_samples,
                                        recovery.recover_batch_size, recovery.recover_seed)
    with tempfile.TemporaryDirectory() as directory:
        baseline = module_at(args.baseline_rev, Path(directory))
        start = time.perf_counter()
        targets = lstsq.unpruned_streams(model, batches)
        streams_s = time.perf_counter() - start
        rows = []
        for iteration, sub_network in chosen.items():
            before_s, before = timed_tuning(baseline, model, sub_network, batches, targets)
            after_s, after = timed_tuning(lstsq, model, sub_network, batches, targets)
            rows.append({"iteration": iteration, "sub_network": sub_network.summary(), "baseline_s": before_s,
                         "today_s": after_s, "ratio": after_s / before_s,
                         "largest_scale_difference": largest_difference(before, after)})
            print(json.dumps(rows[-1]))
    write_json_atomic(args.output, {
        "command": " ".join(["python", "bench/bench_lstsq.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine_info(), "calibration_examples": sum(len(batch["labels"]) for batch in batches),
        "unpruned_streams_s": streams_s, "sub_networks": rows,
    })


if __name__ == "__main__":
    exit_on_usage_error(main)
