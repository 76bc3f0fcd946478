"""The documentation: every command it shows runs a script that exists with flags that script accepts, every
relative link resolves, the README stays a front door, and the flags reference is what the code says.

Only the entry scripts' file names matter here, not where the library lives: the flags come from each script's
own `--help` parser (tools/script_parsers.py), collected in one subprocess for the whole session.
"""

import json
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[1]
README = PROJECT_DIR / "README.md"
PAGES = sorted([README, PROJECT_DIR / "BENCHMARKS.md", *(PROJECT_DIR / "docs").rglob("*.md")])
COMMAND_PAGES = [README, *sorted((PROJECT_DIR / "docs").rglob("*.md"))]  # benchmarks' commands too
FENCE = re.compile(r"^```[^\n]*\n.*?^```", re.MULTILINE | re.DOTALL)
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def relative(path: Path) -> str:
    return str(path.relative_to(PROJECT_DIR))


def logical_lines(block: str) -> list[str]:
    """The block's lines, continuation lines joined and a quote left open (`python -c "...`) closed."""
    lines: list[str] = []
    for line in block.replace("\\\n", " ").splitlines():
        if lines and lines[-1].count('"') % 2:
            lines[-1] += "\n" + line
        else:
            lines.append(line)
    return lines


def shell_commands(markdown: str) -> list[list[str]]:
    """The commands of the page's bash blocks as argument lists: continuation lines joined, comments dropped,
    `A && B` split, and the variables the blocks assign (`DATA="--task_name ..."`) expanded."""
    variables: dict[str, str] = {}
    commands = []
    for block in BASH_BLOCK.findall(markdown):
        for line in logical_lines(block):
            assignment = re.fullmatch(r'(\w+)="([^"$]*)"', line.strip())
            if assignment:
                variables[assignment[1]] = assignment[2]
                continue
            line = re.sub(r"\$(\w+)", lambda m: variables.get(m[1], m[0]), line)
            words = shlex.split(line, comments=True)
            while words:
                end = next((i for i, word in enumerate(words) if word in ("&&", "||", ";", "|")), len(words))
                commands.append(words[:end])
                words = words[end + 1:]
    return commands


def script_call(words: list[str]) -> tuple[str, list[str]] | None:
    """(script, its flags) of `python X.py ...` or `accelerate launch ... X.py ...`; None for other commands."""
    while words and re.fullmatch(r"\w+=\S*", words[0]):  # OMP_NUM_THREADS=1 python ...
        words = words[1:]
    if words[:1] in (["python"], ["python3"]) and len(words) > 1 and words[1].endswith(".py"):
        position = 1
    elif words[:2] == ["accelerate", "launch"]:
        position = next((i for i, word in enumerate(words) if word.endswith(".py")), None)
        if position is None:
            return None
    else:
        return None
    own = words[position + 1:]
    own = own[:own.index("--")] if "--" in own else own  # after `--`: another program's flags, passed through
    flags = [match[1] for word in own if (match := re.match(r"\[?(--[\w-]+)", word))]
    return words[position], flags


def documented_calls() -> list[tuple[str, str, list[str]]]:
    """(page, script, flags) of every script call in the pages' bash blocks."""
    calls = []
    for page in COMMAND_PAGES:
        for words in shell_commands(page.read_text()):
            call = script_call(words)
            if call:
                calls.append((relative(page), *call))
    return calls


@cache
def script_flags() -> dict[str, dict[str, list[str]]]:
    """Every documented script's flags and those without help text, from its --help parser; one subprocess for
    all of them."""
    scripts = sorted({script for _, script, _ in documented_calls() if (PROJECT_DIR / script).is_file()})
    completed = subprocess.run(
        [sys.executable, "tools/script_parsers.py", *scripts], cwd=PROJECT_DIR, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout)


def accepted_flags() -> dict[str, set[str]]:
    return {script: set(flags["flags"]) for script, flags in script_flags().items()}


def test_the_docs_show_the_pipelines_commands():
    """The extraction finds the quickstart's and the other pages' commands (an empty list would pass anything)."""
    scripts = {script for _, script, _ in documented_calls()}
    assert {"train_supernet.py", "run_offline_search.py", "plot_pareto.py", "select_and_extract.py",
            "run_standard_nas.py", "run_rfp.py", "bench/make_tiny_lm.py"} <= scripts


@pytest.mark.parametrize("page, script, flags", documented_calls(), ids=lambda value: str(value)[:60])
def test_every_documented_command_runs_a_script_with_flags_it_accepts(page, script, flags):
    assert (PROJECT_DIR / script).is_file(), f"{page}: no script {script}"
    unknown = [flag for flag in flags if flag not in accepted_flags()[script]]
    assert not unknown, f"{page}: {script} does not accept {unknown}"


def test_every_documented_scripts_flags_say_what_they_do():
    """`--help` is the reference a user reaches first: a flag with no text there sends them to the code."""
    silent = {script: flags["without_help"] for script, flags in script_flags().items() if flags["without_help"]}
    assert not silent, f"flags with no --help text: {silent}"


def test_a_bogus_flag_is_caught():
    """The check above would flag a command with a flag its script does not have."""
    (call,) = [script_call(words) for words in shell_commands(
        "```bash\nDATA=\"--task_name sst2 --max_train_smaples 10\"\npython train_supernet.py $DATA --seed 0\n```\n")]
    assert call == ("train_supernet.py", ["--task_name", "--max_train_smaples", "--seed"])
    assert "--max_train_smaples" not in accepted_flags()["train_supernet.py"]
    assert {"--task_name", "--seed"} <= accepted_flags()["train_supernet.py"]


def test_the_readme_fits_on_a_few_screens():
    assert len(README.read_text().splitlines()) <= 250


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the page's headings: lower case, punctuation dropped, spaces to hyphens,
    a repeated anchor numbered."""
    anchors: set[str] = set()
    for heading in re.findall(r"^#+ (.+)$", FENCE.sub("", markdown), re.MULTILINE):
        anchor = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        number = 0
        while (f"{anchor}-{number}" if number else anchor) in anchors:
            number += 1
        anchors.add(f"{anchor}-{number}" if number else anchor)
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=relative)
def test_every_relative_link_resolves(page):
    text = page.read_text()
    broken = []
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in github_anchors(file.read_text()):
            broken.append(target)
    assert not broken, f"{relative(page)}: broken links {broken}"


def test_the_flags_reference_is_what_the_code_says():
    completed = subprocess.run(
        [sys.executable, "tools/make_flags_doc.py", "--check"], cwd=PROJECT_DIR, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
