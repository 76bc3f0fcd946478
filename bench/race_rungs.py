"""Would more rungs in the multi-fidelity race have stopped more proposals? Answered offline, from one finished
`--multi_fidelity True` search, without a forward pass.

The race keeps each fully scored proposal's predictions on the whole validation split, in the order it scored
them. For every proposal that was scored fully (not re-used), this script asks the race's own question again at
each extra share given here: with the front of the fully scored proposals before it that cost no more, and the
examples of that share only, is the lower bound of its excess error above 0? The count of proposals such a rung
would stop, and the share of the examples they would leave unscored, bound what the rung could save. It is a
bound from above on the first order: a proposal stopped earlier would also be missing from later fronts.

    python bench/race_rungs.py --run /work/runs/bench_mf_stsb_quiet/multi_fidelity_bf16_least_padding \\
        --data_dir ../shared/data/glue --shares 0.5 0.6 0.75 --output rungs.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas_llm.common.errors import UsageArgumentParser, UsageError, exit_on_usage_error  # noqa: E402
from nas_llm.common.io_utils import JsonLinesLog, write_json_atomic  # noqa: E402
from nas_llm.data.data import DataArguments, load_raw_splits, tokenize_splits  # noqa: E402
from nas_llm.data.metrics import metrics_with_error  # noqa: E402
from nas_llm.model.models import load_tokenizer  # noqa: E402
from nas_llm.search.multi_fidelity import (  # noqa: E402
    MultiFidelityArguments,
    ValidationRace,
    excess_error_bound,
    front_members,
    share_increments,
)
from nas_llm.search.results import LOG_FILE, SETTINGS_FILE, is_full_fidelity  # noqa: E402


def race_order(settings: dict, data_dir: str, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The validation split's indices in the order the race scored them, and their labels in that order."""
    recorded = ("task_name", "max_eval_samples", "max_seq_length", "dataset_seed", "validation_fraction")
    data_args = DataArguments(data_dir=data_dir, **{name: settings[name] for name in recorded})
    tokenizer = load_tokenizer(settings["checkpoint_dir_model"])
    validation = tokenize_splits(load_raw_splits(data_args), tokenizer, data_args, ("validation",))["validation"]
    fidelity = MultiFidelityArguments(multi_fidelity=True, fidelity_shares=settings["fidelity_shares"],
                                      fidelity_z=settings["fidelity_z"])
    race = ValidationRace(fidelity, validation, tokenizer, batch_size, settings["task_name"], settings["objective"],
                          settings["seed"], settings["least_padding"])
    order = np.concatenate([increment[np.concatenate(list(loader.batch_sampler))]
                            for increment, loader in zip(race.increments, race.loaders, strict=True)])
    return order, np.asarray(validation["labels"])[order]


def would_stop(records: list[dict], share: float, order: np.ndarray, labels: np.ndarray, settings: dict,
               z: float) -> list[dict]:
    """The fully scored, not re-used proposals that a rung at `share`, with `z` standard errors, would have stopped,
    with their bounds."""
    num_examples = len(order)
    in_share = np.isin(order, share_increments(num_examples, [share], settings["seed"])[0])  # the race's first share
    task, cost_name = settings["task_name"], settings["objective"]
    stopped = []
    for record in records:
        if not is_full_fidelity(record) or "same_as" in record:
            continue
        earlier = [other for other in records if other["iteration"] < record["iteration"]]
        predictions = np.asarray(record["validation_predictions"])[in_share]
        rng = np.random.default_rng([settings["seed"], record["iteration"]])  # seeded per proposal, as in the race
        bounds = [excess_error_bound(task, predictions, member.predictions[in_share], labels[in_share], num_examples,
                                     z, rng)
                  for member in front_members(earlier, cost_name, record[cost_name])]
        if bounds and max(bounds) > 0:
            stopped.append({"iteration": record["iteration"], "error": record["error"], "bound": max(bounds)})
    return stopped


def main(argv: list[str] | None = None) -> None:
    parser = UsageArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, type=Path, help="a finished run_offline_search.py --multi_fidelity "
                        "True output directory (evaluations.jsonl, search_settings.json)")
    parser.add_argument("--data_dir", required=True, help="the search's --data_dir, as seen from here")
    parser.add_argument("--shares", nargs="+", type=float, required=True, help="extra rungs to ask about, in (0, 1)")
    parser.add_argument("--per_device_eval_batch_size", type=int, default=64,
                        help="the search's flag of that name: it decides the order of the scored examples")
    parser.add_argument("--z", type=float, default=None,
                        help="the rungs' z (standard errors subtracted from the excess error); default: the run's")
    parser.add_argument("--output", type=Path, required=True, help="JSON file for the answer")
    args = parser.parse_args(argv)
    if any(not 0.0 < share < 1.0 for share in args.shares):
        raise UsageError(f"--shares must be in (0, 1), got {' '.join(map(str, args.shares))}")
    if not (args.run / SETTINGS_FILE).is_file():
        raise UsageError(f"--run {args.run} has no {SETTINGS_FILE}: pass a run_offline_search.py output directory")
    settings = json.loads((args.run / SETTINGS_FILE).read_text())
    if not settings.get("multi_fidelity"):
        raise UsageError(f"{args.run} is an exact search: only a --multi_fidelity True run keeps the predictions")
    records = JsonLinesLog(args.run / LOG_FILE).read()
    order, labels = race_order(settings, args.data_dir, args.per_device_eval_batch_size)
    full = [record for record in records if is_full_fidelity(record)]
    if not full:
        raise UsageError(f"{args.run} has no fully scored proposal yet: nothing to ask about")
    first_predictions = np.asarray(full[0]["validation_predictions"])
    first_error = metrics_with_error(settings["task_name"], first_predictions, labels)["error"]
    if abs(first_error - full[0]["error"]) > 1e-9:
        raise UsageError("the examples do not line up with the stored predictions: check --data_dir and "
                         "--per_device_eval_batch_size against the search's")
    scored_fully = [record for record in full if "same_as" not in record]
    z = settings["fidelity_z"] if args.z is None else args.z
    rungs = {}
    for share in args.shares:
        stopped = would_stop(records, share, order, labels, settings, z)
        rungs[str(share)] = {"would_stop": len(stopped), "examples_saved": len(stopped) * (1 - share) / len(records),
                             "stopped": stopped}
    answer = {"run": str(args.run), "proposals": len(records), "scored_fully": len(scored_fully), "z": z,
              "rungs": rungs}
    write_json_atomic(args.output, answer)
    for share, rung in answer["rungs"].items():
        print(f"a rung at {share}: would stop {rung['would_stop']} of the {len(scored_fully)} proposals scored fully; "
              f"at most {rung['examples_saved']:.1%} of the exact search's examples saved")


if __name__ == "__main__":
    exit_on_usage_error(main)
