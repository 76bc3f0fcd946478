"""Benchmark: does memory grow during a long search (a leak in masking, slicing or evaluation)?

Runs the stage-2 loop of run_offline_search.py for --num_samples samples: ask -> to_sub_network ->
evaluate on a small fixed validation set (random token ids, random binary labels, metric of RTE) ->
count_parameters -> tell -> release_freed_memory, with the seeded random_search searcher on the SMALL
space, and records the process's RSS after every sample. A leak shows as RSS that keeps rising after the
first samples, when the allocator and the searcher have reached their steady state; live tensors are
counted as well.

    python bench/bench_search_memory.py --output bench/results_search_memory.json
    python bench/bench_search_memory.py --quick
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import transformers
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_sub_networks import ARCHITECTURES, Batch, machine_info, random_batches, rss_mb  # noqa: E402

from nas_llm.common.errors import UsageArgumentParser, exit_on_usage_error  # noqa: E402
from nas_llm.common.memory import bound_kernel_cache, release_freed_memory  # noqa: E402
from nas_llm.model.cost import count_parameters  # noqa: E402
from nas_llm.model.search_spaces import SearchSpace, make_search_space  # noqa: E402
from nas_llm.model.slicing import SUB_NETWORK_RUNNERS, runner_for  # noqa: E402
from nas_llm.search.searchers import make_searcher  # noqa: E402
from nas_llm.training.evaluation import evaluate  # noqa: E402

STEADY_AFTER = 50  # samples after which RSS should stop growing
GROWTH_LIMIT_MB = 5.0  # more than this between the early and the late window of the run is a leak
QUICK_SETTINGS = {"num_samples": 120, "num_batches": 1, "batch_size": 8, "seq_len": 32}


def live_tensor_count() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance on some torch.distributed objects warns
        warnings.simplefilter("ignore")
        return sum(1 for obj in gc.get_objects() if torch.is_tensor(obj))


def run_search(
    model: nn.Module, space: SearchSpace, batches: list[Batch], execution: str, num_samples: int, seed: int,
    malloc_trim: bool,
) -> tuple[list[float], dict[int, int]]:
    """RSS in MB after every sample, and the live tensors after sample STEADY_AFTER and after the last one."""
    searcher = make_searcher("random_search", space.config_space, ["error", "params"], seed)
    run_as = runner_for(execution)
    full_params = count_parameters(model, space.largest()).total
    rss_after_sample_mb, live_tensors = [], {}
    for sample in range(1, num_samples + 1):
        config = searcher.ask()
        sub_network = space.to_sub_network(config)
        metrics = evaluate(model, batches, "rte", torch.device("cpu"), sub_network, run_as)
        params = count_parameters(model, sub_network).total / full_params
        searcher.tell(config, {"error": metrics["error"], "params": params})
        if malloc_trim:  # as run_offline_search.py does after every sample
            release_freed_memory()
        rss_after_sample_mb.append(rss_mb())
        if sample in (STEADY_AFTER, num_samples):
            live_tensors[sample] = live_tensor_count()
    return rss_after_sample_mb, live_tensors


def summarise(rss_after_sample_mb: list[float], live_tensors: dict[int, int]) -> dict:
    """Growth after the steady state: windows of 50 samples at the start and the end of samples 51..N."""
    steady = rss_after_sample_mb[STEADY_AFTER:]
    window = min(50, len(steady) // 2)
    late_minus_early_mb = statistics.mean(steady[-window:]) - statistics.mean(steady[:window])
    slope_mb_per_100 = 100 * np.polyfit(np.arange(len(steady)), steady, 1)[0]
    return {
        f"rss_after_sample_{STEADY_AFTER}_mb": rss_after_sample_mb[STEADY_AFTER - 1],
        f"max_rss_samples_{STEADY_AFTER + 1}_to_end_mb": max(steady),
        "final_rss_mb": rss_after_sample_mb[-1],
        "late_minus_early_window_mb": late_minus_early_mb,
        "slope_mb_per_100_samples": float(slope_mb_per_100),
        "live_tensors": live_tensors,
        "grows": late_minus_early_mb > GROWTH_LIMIT_MB or len(set(live_tensors.values())) > 1,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = UsageArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architecture", default="minilm", choices=list(ARCHITECTURES),
                        help="the model shapes (random weights)")
    parser.add_argument("--sub_network_execution", default="slice", choices=list(SUB_NETWORK_RUNNERS),
                        help="how each sub-network runs: as run_offline_search.py's flag of that name")
    parser.add_argument("--num_samples", type=int, default=500, help="sub-networks evaluated")
    parser.add_argument("--num_batches", type=int, default=2, help="validation batches")
    parser.add_argument("--batch_size", type=int, default=32, help="examples per validation batch")
    parser.add_argument("--seq_len", type=int, default=128, help="tokens per example")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights, the data and the sampled sub-networks")
    parser.add_argument(
        "--without_malloc_trim", dest="malloc_trim", action="store_false",
        help="leave out run_offline_search.py's malloc_trim after every sample, to see what glibc retains",
    )
    parser.add_argument("--quick", action="store_true", help=f"smoke run; overrides {', '.join(QUICK_SETTINGS)}")
    parser.add_argument("--output", type=Path, help="JSON file for the RSS of every sample and the summary")
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK_SETTINGS)
    if args.num_samples < 2 * STEADY_AFTER:
        parser.error(f"--num_samples must be at least {2 * STEADY_AFTER}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    bound_kernel_cache()  # as run_offline_search.py does
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    model = ARCHITECTURES[args.architecture]().eval()
    space = make_search_space("small", model.config)
    batches = random_batches(args.num_batches, args.batch_size, args.seq_len, model.config.vocab_size, args.seed)
    rss_before_search_mb = rss_mb()
    rss_after_sample_mb, live_tensors = run_search(
        model, space, batches, args.sub_network_execution, args.num_samples, args.seed, args.malloc_trim
    )
    summary = {"rss_before_search_mb": rss_before_search_mb} | summarise(rss_after_sample_mb, live_tensors)
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "machine": machine_info(),
        "settings": {key: str(value) for key, value in vars(args).items()},
        "validation_data": f"{args.num_batches} x {args.batch_size} sequences x {args.seq_len} random token ids",
        "summary": summary,
        "rss_after_sample_mb": rss_after_sample_mb,
    }
    print(json.dumps(report["summary"], indent=1))
    print("RSS grows (leak)" if summary["grows"] else "RSS is flat after the first samples (no leak)")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    exit_on_usage_error(main)
