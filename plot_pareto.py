"""Plot the Pareto fronts of one or more searches and report their hypervolumes.

Every evaluated sub-network (validation error vs a cost relative to the unpruned network), each
search's Pareto front as a step line, the test error of its Pareto points, and the unpruned network as
a reference. Several results files (e.g. two search strategies) share one plot.

    python plot_pareto.py results_nas/results_rte.json other/results_rte.json --output pareto.png

Hypervolume: of the (validation error, relative cost) points, both in [0, 1], with reference point
(1, 1): the share of the unit square the front dominates (higher is better).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nas_llm.common.errors import UsageArgumentParser, UsageError, exit_on_usage_error  # noqa: E402
from nas_llm.common.io_utils import write_json_atomic  # noqa: E402
from nas_llm.search.pareto import hypervolume_2d, pareto_indices  # noqa: E402
from nas_llm.search.report import results_points, write_report  # noqa: E402
from nas_llm.search.results import is_full_fidelity, load_results  # noqa: E402

COST_LABELS = {
    "params": "parameters (relative to unpruned)",
    "flops": "MACs (relative to unpruned)",
    "memory": "weight memory (relative to unpruned)",
    "latency": "latency (relative to unpruned)",
}


def front_of(results: dict, cost: str) -> tuple[np.ndarray, list[int]]:
    """(error, cost) of every evaluation scored on the whole validation split and the indices of the
    non-dominated ones (a multi-fidelity search's stopped sub-networks have errors on a share only)."""
    points = [(e["error"], e[cost]) for e in results["evaluations"] if cost in e and is_full_fidelity(e)]
    if not points:
        raise UsageError(f"the results hold no '{cost}' costs; choose one of: {', '.join(COST_LABELS)}")
    points = np.array(points)
    return points, pareto_indices(points)


def label_of(results: dict, path: str) -> str:
    return f"{results.get('search_strategy')} / {results.get('sampling_strategy')} ({Path(path).parent.name})"


def plot(paths: list[str], cost: str, output: Path, labels: list[str] | None) -> dict[str, float]:
    """Draw the plot to `output`; returns the hypervolume per results file."""
    figure, axis = plt.subplots(figsize=(7, 5))
    hypervolumes = {}
    for number, path in enumerate(paths):
        results = load_results(path)
        points, front = front_of(results, cost)
        label = labels[number] if labels else label_of(results, path)
        hypervolumes[path] = hypervolume_2d(points[front])
        color = f"C{number}"
        axis.scatter(points[:, 1], points[:, 0], s=10, alpha=0.25, color=color)
        ordered = points[sorted(front, key=lambda i: points[i, 1])]
        axis.step(ordered[:, 1], ordered[:, 0], where="post", color=color,
                  label=f"{label}: HV {hypervolumes[path]:.3f}")
        axis.scatter(ordered[:, 1], ordered[:, 0], s=25, color=color)
        test_points = [(p[cost], p["test"]["error"]) for p in results.get("pareto_set", []) if cost in p]
        if test_points:
            axis.scatter(*np.array(test_points).T, s=30, facecolors="none", edgecolors=color,
                         label=f"{label}: test error of Pareto points")
        unpruned = results.get("unpruned", {})
        if "validation" in unpruned:
            axis.scatter([1.0], [unpruned["validation"]["error"]], marker="*", s=150, color=color, edgecolors="k",
                         label=f"{label}: unpruned (validation)")
    axis.set_xlabel(COST_LABELS.get(cost, cost))
    axis.set_ylabel("validation error (1 - main metric)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=120)
    plt.close(figure)
    return hypervolumes


def pareto_table(results: dict) -> str:
    """The Pareto set as a markdown table: costs, validation error and test metrics, cheapest first."""
    unpruned = results["unpruned"]
    test_names = list(unpruned["test"])
    header = ["params", "parameters", "MACs", "validation error", *[f"test {name}" for name in test_names]]
    rows = [["1.000 (unpruned)", f"{unpruned['num_parameters']:,}", f"{unpruned['macs']:,}",
             f"{unpruned['validation']['error']:.4f}", *[f"{unpruned['test'][name]:.4f}" for name in test_names]]]
    for point in results["pareto_set"]:
        rows.append([f"{point['params']:.3f}", f"{point['num_parameters']:,}", f"{point['macs']:,}",
                     f"{point['error']:.4f}", *[f"{point['test'][name]:.4f}" for name in test_names]])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main(argv: list[str] | None = None) -> None:
    parser = UsageArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", help="results_<task>.json files of run_offline_search.py")
    parser.add_argument("--cost", default="params", help=f"x axis: {', '.join(COST_LABELS)} (default: params)")
    parser.add_argument("--output", default="pareto.png", help="PNG file to write (default: pareto.png)")
    parser.add_argument("--labels", nargs="*", help="one legend label per results file")
    parser.add_argument("--table", action="store_true", help="also print each Pareto set as a markdown table")
    parser.add_argument("--html", help="also write this self-contained interactive HTML report (every point with "
                        "its architecture, costs, metrics and select_and_extract.py command)")
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.results):
        raise UsageError(f"--labels needs one label per results file ({len(args.results)}), got {len(args.labels)}")
    output = Path(args.output)
    hypervolumes = plot(args.results, args.cost, output, args.labels)
    write_json_atomic(output.with_suffix(".json"), {"cost": args.cost, "reference_point": [1.0, 1.0],
                                                    "hypervolume": hypervolumes})
    if args.html:
        labels = args.labels or [label_of(load_results(path), path) for path in args.results]
        point_sets = {label: results_points(Path(path), label)
                      for label, path in zip(labels, args.results, strict=True)}
        write_report(Path(args.html), "Pareto fronts: " + ", ".join(labels), point_sets,
                     load_results(args.results[0]).get("unpruned"))
        print(f"wrote {args.html}")
    for path, value in hypervolumes.items():
        print(f"hypervolume {value:.4f}  {path}")
        if args.table:
            print(pareto_table(load_results(path)))
    print(f"wrote {output} and {output.with_suffix('.json')}")


if __name__ == "__main__":
    exit_on_usage_error(main)
