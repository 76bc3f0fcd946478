"""Mutation testing, one module at a time against that module's own tests (mutmut 3; not part of CI).

A test suite that catches the bugs it was told about is tuned to a list; mutation testing plants small changes
(a `<` for a `<=`, a dropped argument, a constant off by one) everywhere in a module and asks whether a test
fails. Each module runs in its own copy of the working tree (`.mutation/<module>/`) with a `[tool.mutmut]`
section naming it and its test files, so a run neither touches the tree nor waits for the whole suite.

    pip install -r requirements-dev.txt      # mutmut, pinned; in a venv made with --system-site-packages
    python tools/mutation_test.py            # every module below; or name some: ... nas_llm/model/mask.py

Results accumulate in docs/benchmarks/mutation-testing.json (a module's run replaces its entry), and the
markdown report docs/benchmarks/mutation-testing.md is rewritten from it with every survivor's change.
Mutants listed in tools/mutation_equivalent.toml (module, mutant, change, why) are equivalent: no input a user
can give tells them apart from the original, so they leave the denominator; a listed one that a test kills or
that no longer survives is reported, so the list cannot go stale quietly.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK_DIR = REPO / ".mutation"
REPORT_JSON = REPO / "docs" / "benchmarks" / "mutation-testing.json"
REPORT_MD = REPORT_JSON.with_suffix(".md")
EQUIVALENT_FILE = REPO / "tools" / "mutation_equivalent.toml"


@dataclass(frozen=True)
class Target:
    """A module to mutate, the test files that run against its mutants, and which of its functions to mutate
    (mutmut's `module.x_function__mutmut_N` names as fnmatch patterns; all by default)."""

    tests: tuple[str, ...]
    functions: tuple[str, ...] = ("*",)
    not_run: str = ""  # what of the module the functions leave out, and why, for the report's "Not run yet"


# The modules that decide what a user gets, each with the fastest tests that exercise it.
TARGETS = {
    "nas_llm/model/sub_network.py": Target(
        ("tests/test_mask.py", "tests/test_slicing.py", "tests/test_search_spaces.py")
    ),
    "nas_llm/model/search_spaces.py": Target(("tests/test_search_spaces.py", "tests/test_importance_space.py")),
    # Which layers and how many units the importance-shaped space keeps.
    "nas_llm/model/unit_ranking.py": Target(("tests/test_importance_space.py",)),
    "nas_llm/model/mask.py": Target(("tests/test_mask.py",)),
    "nas_llm/model/slicing.py": Target(("tests/test_slicing.py",)),
    "nas_llm/model/cost.py": Target(("tests/test_cost.py",)),
    "nas_llm/search/pareto.py": Target(("tests/test_pareto.py",)),
    # The front the plot's hypervolume is computed from; the rest of the plotting script is matplotlib styling
    # and help texts (the results it reads are nas_llm/search/results.py's).
    "plot_pareto.py": Target(("tests/test_plot_pareto.py",), ("plot_pareto.x_front_of*",)),
    # The choice of a Pareto point and the data flags it reads back from the results; main() only orchestrates.
    "select_and_extract.py": Target(
        ("tests/test_select_point.py",), ("select_and_extract.x_select_point*", "select_and_extract.x_recorded*")
    ),
    # What the extracted model is (shapes, config, weights, generation settings) and how it is written and read.
    "nas_llm/extraction/extract.py": Target(("tests/test_extract.py",)),
    "nas_llm/model/label_scale.py": Target(("tests/test_label_scale.py",)),
    "nas_llm/training/importance.py": Target(("tests/test_reorder.py",)),
    # unit_scores reads the recorded importance back for the importance-shaped space
    "nas_llm/training/reorder.py": Target(("tests/test_reorder.py", "tests/test_importance_space.py")),
    "nas_llm/baselines/rfp.py": Target(("tests/test_rfp.py",)),
    # RFP calibrates and extracts through it
    "nas_llm/extraction/lstsq.py": Target(("tests/test_lstsq.py", "tests/test_rfp.py")),
    "nas_llm/common/io_utils.py": Target(("tests/test_io_utils.py",)),
    # The results format's owner: what every method writes and every reader reads.
    "nas_llm/search/results.py": Target(("tests/test_results.py",)),
    # Which point a budget picks: the sub-network prune.py recovers and ships at each budget.
    "nas_llm/search/budgets.py": Target(("tests/test_budgets.py",)),
    # The racing rule: which proposals are scored on the whole split, so which can be on the Pareto set.
    "nas_llm/search/multi_fidelity.py": Target(("tests/test_multi_fidelity.py",)),
}
KILLED, TIMEOUT, SURVIVED, NO_TESTS = "killed", "timeout", "survived", "no tests"


def read_report() -> dict:
    return json.loads(REPORT_JSON.read_text()) if REPORT_JSON.is_file() else {"modules": {}}


def load_equivalents() -> dict[str, dict]:
    """The reviewed list of equivalent mutants, by mutant name."""
    entries = tomllib.loads(EQUIVALENT_FILE.read_text()).get("equivalent", [])
    return {entry["mutant"]: entry for entry in entries}


def prepare_copy(module: str, target: Target) -> None:
    """A fresh copy of the working tree's files (tracked and new, not ignored) with mutmut configured for `module`."""
    copy = WORK_DIR / Path(module).stem
    shutil.rmtree(copy, ignore_errors=True)
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    top_level = sorted({Path(name).parts[0] for name in files if name} - {module, "tests", "pyproject.toml"})
    settings = {
        "source_paths": [module],
        "also_copy": top_level,
        "pytest_add_cli_args_test_selection": list(target.tests),
        "pytest_add_cli_args": ["-x", "-q", "-p", "no:cacheprovider"],
        # A mutant's wall-clock limit is (its tests' clean time + this) x 15: at mutmut's default of 1 s, tests that
        # start processes (a checkpoint reloaded in a fresh one) ran into it under load and read as hung mutants.
        "timeout_constant": 20,
    }
    lines = ["", "[tool.mutmut]"] + [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    with open(copy / "pyproject.toml", "a") as handle:
        handle.write("\n".join(lines) + "\n")


def tested_commit() -> str:
    """The commit whose module and tests ran, marked when the working tree's code or tests differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True, text=True).stdout.strip()

    changed = git("status", "--porcelain", "--", "*.py")
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if changed else "")


def mutmut(copy: Path, *args: str) -> str:
    """Run a mutmut command in `copy`; its stdout."""
    result = subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=copy, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"mutmut {' '.join(args)} failed in {copy}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result.stdout


# One process prints every mutant's diff (`mutmut show` would start a process, and import torch, per mutant).
DIFFS_SCRIPT = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
print(json.dumps({name: get_diff_for_mutant(name, path=sys.argv[1]) for name in json.load(sys.stdin)}))
"""


def mutant_changes(copy: Path, module: str, names: list[str]) -> dict[str, str]:
    """The lines each mutant changes, as `- old / + new`."""
    result = subprocess.run(
        [sys.executable, "-c", DIFFS_SCRIPT, module], cwd=copy, input=json.dumps(names), capture_output=True,
        text=True, check=True,
    )
    changes = {}
    for name, diff in json.loads(result.stdout).items():
        changed = [line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("---", "+++"))]
        changes[name] = " / ".join(re.sub(r"\s+", " ", line).strip() for line in changed)
    return changes


def mutant_statuses(copy: Path, target: Target) -> dict[str, str]:
    """killed, survived, timeout, no tests, ... of every mutant of the target's functions."""
    statuses = {}
    for line in mutmut(copy, "results", "--all", "true").splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name and _in_scope(name, target):
            statuses[name] = status
    return statuses


def run_module(module: str, target: Target, max_children: int, mode: str, previous: dict | None) -> dict:
    """Mutate `module`, run its tests against every mutant, and sort the mutants by outcome.

    mode "all": a fresh copy, every mutant. "survivors": the tests of the working tree, against the mutants the
    last run did not kill (tests only added since: a killed mutant stays killed). "reuse": no run, the outcomes
    of the last one in `.mutation/<module>/`."""
    copy = WORK_DIR / Path(module).stem
    start = time.monotonic()
    if mode == "all":
        prepare_copy(module, target)
        mutmut(copy, "run", "--max-children", str(max_children), *target.functions)
    elif mode == "survivors":
        shutil.copytree(REPO / "tests", copy / "tests", dirs_exist_ok=True)  # mutmut copies them on into mutants/
        mutmut(copy, "run", "--max-children", str(max_children), *[
            m["mutant"] for m in previous["not_killed"] if _in_scope(m["mutant"], target)
        ])
    seconds = time.monotonic() - start + (previous["seconds"] if previous and mode != "all" else 0)
    statuses = mutant_statuses(copy, target)
    not_killed = sorted((name for name, status in statuses.items() if status not in (KILLED, TIMEOUT)), key=_natural)
    changes = mutant_changes(copy, module, not_killed)
    return {
        "tests": list(target.tests),
        "functions": list(target.functions),
        "seconds": round(seconds),
        "counts": {status: sum(s == status for s in statuses.values()) for status in sorted(set(statuses.values()))},
        "mutants": len(statuses),
        "not_killed": [{"mutant": name, "status": statuses[name], "change": changes[name]} for name in not_killed],
        "killed": sorted(name for name, status in statuses.items() if status in (KILLED, TIMEOUT)),
    }


def _in_scope(mutant: str, target: Target) -> bool:
    return any(re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), mutant) for pattern in target.functions)


def _natural(name: str) -> tuple[str, int]:
    stem, _, number = name.rpartition("_")
    return stem, int(number) if number.isdigit() else 0


def summary_row(module: str, entry: dict, equivalents: dict[str, dict]) -> dict:
    """Mutants, killed (timeouts count: the mutant hangs a test), survived, equivalent and the kill rate."""
    killed = entry["counts"].get(KILLED, 0) + entry["counts"].get(TIMEOUT, 0)
    equivalent = sum(mutant["mutant"] in equivalents for mutant in entry["not_killed"])
    non_equivalent = entry["mutants"] - equivalent
    return {
        "module": module, "mutants": entry["mutants"], "killed": killed, "timeout": entry["counts"].get(TIMEOUT, 0),
        "survived": entry["counts"].get(SURVIVED, 0), "no_tests": entry["counts"].get(NO_TESTS, 0),
        "equivalent": equivalent, "killed_share": killed / non_equivalent if non_equivalent else 1.0,
    }


def write_markdown(report: dict) -> None:
    """docs/benchmarks/mutation-testing.md from the accumulated results."""
    equivalents = load_equivalents()
    rows = [
        summary_row(module, report["modules"][module], equivalents) for module in TARGETS if module in report["modules"]
    ]
    lines = [
        "# Mutation testing: do the tests catch bugs nobody named?",
        "",
        f"Generated by `python tools/mutation_test.py` (mutmut {report['mutmut']}, pinned in requirements-dev.txt;",
        "not part of `.ci/run`): each row by `nice -n 19 python tools/mutation_test.py --max-children 1 MODULE`, then,",
        "once tests were added for its survivors, `... --mode survivors MODULE` (python: a venv made with",
        "--system-site-packages and requirements-dev.txt). Each module's mutants run against that module's own test",
        "files (`-x`), in a copy of the tree, so a bug the tests miss shows up as a survivor here. Killed counts",
        "timeouts (the mutant hangs a test: over 15 x (its tests' clean time + 20 s)); *no tests*: no selected test",
        "reaches the mutated function (counted as not killed). Equivalent mutants (no observable change, reasons in",
        "`tools/mutation_equivalent.toml`) leave the denominator. `--mode survivors` reruns a module's survivors",
        "against the tests added since (tests were only added, so a killed mutant stays killed); `run (s)` adds up a",
        "module's runs. Machine: the project's shared 2-core machine, under the load of other jobs (load average",
        "1-12 on 2026-12-06), so the times are only a guide. *commit*: the commit whose module and tests ran; rows",
        "marked *flat layout* ran before the library moved into the package `nas_llm/` (then `pareto.py`, ... at the",
        "top level; the same code and tests), so their mutants are named after the flat modules (`pareto.x_...`).",
        "They were not rerun on the package layout: their code is unchanged since but for its import lines (the",
        "module at 99fbbda and now, import lines left out, differ in no line, for each of them) and their tests were",
        "only added to. Every module whose code changed since (search_spaces.py, rfp.py, select_and_extract.py,",
        "plot_pareto.py, reorder.py) ran again on the package layout, and so did pareto.py, io_utils.py, slicing.py",
        "and lstsq.py; sub_network.py and cost.py keep their flat-layout rows. A branch rebased after its runs names",
        "the rebased commits, where the rebase changed neither the module nor its tests.",
        "",
        "Limits of the tool: mutmut 3 does not mutate functions under a decorator other than `@classmethod`, so",
        "`slicing.sliced`, `mask.masked`, `mask.skipped_empty_blocks`, `cost.measure_latency` and lstsq's",
        "`unpruned_streams`, `block_gram` and `fold_scales` have no mutants here (their behaviour is tested: e.g. the",
        "latency objective's sub-network, tests/test_cost.py). Module-level code and class bodies are not mutated",
        "either. Survivors that only a GPU could tell apart (a tensor left on the CPU) stay listed as survivors.",
        "A row with functions in brackets mutates only those (the rest: styling and help texts).",
        "",
        "| module | tests | mutants | killed | timeout | survived | no tests | equivalent | killed of non-equivalent "
        "| run (s) | ran on | commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        entry = report["modules"][row["module"]]
        tests = ", ".join(Path(test).name for test in entry["tests"])
        scope = "" if entry["functions"] == ["*"] else " (" + ", ".join(
            pattern.rpartition(".x_")[2] for pattern in entry["functions"]
        ) + ")"
        lines.append(
            f"| {row['module']}{scope} | {tests} | {row['mutants']} | {row['killed']} | {row['timeout']} | "
            f"{row['survived']} | {row['no_tests']} | {row['equivalent']} | {100 * row['killed_share']:.1f}% | "
            f"{entry['seconds']} | {entry['ran_on']} | {entry['commit']} |"
        )
    missing = [module for module in TARGETS if module not in report["modules"]]
    missing += [f"{module}'s {target.not_run}" for module, target in TARGETS.items() if target.not_run]
    if missing:
        lines += ["", "Not run yet: " + "; ".join(missing) + "."]
    for title, equivalent in (("Surviving mutants (not equivalent)", False), ("Equivalent mutants", True)):
        listed = [
            (module, mutant) for module in TARGETS if module in report["modules"]
            for mutant in report["modules"][module]["not_killed"] if (mutant["mutant"] in equivalents) == equivalent
        ]
        lines += ["", f"## {title}", ""]
        if equivalent:
            lines += [f"- `{m['mutant']}`: `{m['change']}`: {equivalents[m['mutant']]['why']}" for _, m in listed]
        else:
            lines += [f"- `{m['mutant']}` ({m['status']}): `{m['change']}`" for _, m in listed] or ["None."]
    stale = sorted(name for entry in report["modules"].values() for name in entry["killed"] if name in equivalents)
    if stale:
        lines += ["", "Listed as equivalent but killed (remove from the list): " + ", ".join(stale)]
    REPORT_MD.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help=f"modules to mutate (default: all of {', '.join(TARGETS)})")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1, help="mutants run in parallel")
    parser.add_argument("--mode", choices=("all", "survivors", "reuse"), default="all",
                        help="all: every mutant in a fresh copy; survivors: rerun the last run's survivors against "
                        "the current tests; reuse: report the last run's outcomes again (e.g. after editing the "
                        "equivalent list)")
    args = parser.parse_args(argv)
    unknown = [module for module in args.modules if module not in TARGETS]
    if unknown:
        raise SystemExit(f"not a mutation target: {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    from importlib.metadata import version

    for module in args.modules or TARGETS:
        previous = read_report()["modules"].get(module)
        if args.mode != "all" and previous is None:
            raise SystemExit(f"{module} has no earlier run to build on; run it with --mode all first")
        commit = {"all": tested_commit(), "reuse": previous and previous["commit"],
                  "survivors": previous and f"{previous['commit']}; survivors rerun on {tested_commit()}"}[args.mode]
        entry = run_module(module, TARGETS[module], args.max_children, args.mode, previous)
        # Read just before writing: another run of this script may have added modules meanwhile.
        report = read_report()
        report["mutmut"] = version("mutmut")
        entry["ran_on"] = previous["ran_on"] if args.mode == "reuse" else (
            f"{datetime.now(UTC):%Y-%m-%d}, {os.cpu_count()} CPUs ({platform.machine()})"
        )
        entry["commit"] = commit
        report["modules"][module] = entry
        REPORT_JSON.parent.mkdir(parents=True, exist_ok=True)
        REPORT_JSON.write_text(json.dumps(report, indent=1) + "\n")
        write_markdown(report)
        row = summary_row(module, entry, load_equivalents())
        print(f"{module}: {row['mutants']} mutants, {row['killed']} killed, {row['survived']} survived, "
              f"{row['no_tests']} without tests, {row['equivalent']} equivalent: "
              f"{100 * row['killed_share']:.1f}% of the non-equivalent killed ({entry['seconds']} s)", flush=True)


if __name__ == "__main__":
    main()
