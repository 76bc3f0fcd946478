"""The command lines: every flag (and task) documented in README.md and docs/, the documented commands parse."""

import dataclasses
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import run_offline_search
import run_rfp
import run_standard_nas
import train_supernet
from nas_llm.baselines.rfp import RFPArguments
from nas_llm.baselines.standard_nas import StandardNASArguments
from nas_llm.common.arguments import (
    CostArguments,
    ModelArguments,
    NASArguments,
    SupernetArguments,
    TrainingArguments,
    parse_arguments,
)
from nas_llm.data.data import HUB_DATASETS, TASKS, DataArguments
from nas_llm.data.lm_data import LMArguments
from nas_llm.data.metrics import MAIN_METRIC
from nas_llm.extraction.recovery import RecoveryArguments
from nas_llm.model.models import resolve_model_name
from nas_llm.search.multi_fidelity import MultiFidelityArguments
from nas_llm.search.offline import SearchArguments
from select_and_extract import SelectionArguments

PROJECT_DIR = Path(__file__).resolve().parents[1]
README = (PROJECT_DIR / "README.md").read_text()
DOCS = "\n".join([README, *(page.read_text() for page in sorted((PROJECT_DIR / "docs").glob("*.md")))])
ALL_ARGUMENTS = (
    ModelArguments, DataArguments, LMArguments, NASArguments, SupernetArguments, TrainingArguments, SearchArguments,
    SelectionArguments, CostArguments, StandardNASArguments, RecoveryArguments, RFPArguments, MultiFidelityArguments,
)


@pytest.mark.parametrize("arguments", ALL_ARGUMENTS, ids=lambda a: a.__name__)
def test_every_flag_is_documented(arguments):
    for flag in dataclasses.fields(arguments):
        assert f"`--{flag.name}`" in DOCS, flag.name
        assert flag.metadata.get("help"), flag.name


def test_every_task_has_a_row_with_its_source_labels_and_metric_in_the_docs():
    for name, task in TASKS.items():
        row = next(line for line in DOCS.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"`{HUB_DATASETS[name].path}`" in row, row
        assert (", ".join(task.label_names) if task.label_names else "(regression)") in row, row
        assert MAIN_METRIC[name].replace("_", " ").removesuffix("r") in row.lower(), row


def readme_command(script: str) -> list[str]:
    lines = README.splitlines()
    line = next(line for line in lines if line.startswith(f"python {script} --") and "bert-base-cased" in line)
    return shlex.split(line)[2:]


def test_original_training_command_parses():
    parsed = parse_arguments(
        (ModelArguments, DataArguments, NASArguments, SupernetArguments, TrainingArguments),
        readme_command("train_supernet.py"),
    )
    model_args, data_args, nas_args, supernet_args, training_args = parsed
    assert model_args.model_name_or_path == "bert-base-cased" and data_args.task_name == "rte"
    assert supernet_args.sampling_strategy == "one_shot" and nas_args.search_space == "small"
    assert training_args.fp16 and training_args.num_train_epochs == 20 and training_args.save_strategy == "epoch"


def test_original_search_command_parses():
    parsed = parse_arguments(
        (ModelArguments, DataArguments, NASArguments, SearchArguments, CostArguments),
        readme_command("run_offline_search.py"),
    )
    search_args = parsed[3]
    assert search_args.search_strategy == "local_search" and search_args.num_samples == 500
    assert search_args.checkpoint_dir_model == "./supernet_model_checkpoint"


def test_the_scripts_document_themselves_in_help(capsys):
    for script in (train_supernet, run_offline_search, run_standard_nas):
        with pytest.raises(SystemExit):
            script.main(["--help"])
        assert re.search(r"--model_name_or_path", capsys.readouterr().out)
    with pytest.raises(SystemExit):
        run_rfp.main(["--help"])
    assert re.search(r"--budgets .*--num_calibration_samples", capsys.readouterr().out, re.DOTALL)


ENTRY_SCRIPTS = (
    "train_supernet", "run_offline_search", "plot_pareto", "select_and_extract", "run_standard_nas",
    "standard_nas_trial", "run_rfp",
)
HEAVY_MODULES = ("scipy.stats", "sklearn", "tensorboard", "transformers.modeling_utils", "deepspeed")


def test_help_does_not_wait_for_libraries_only_a_run_needs():
    """SciPy's stats, scikit-learn, TensorBoard, transformers' model code and DeepSpeed take seconds to import."""
    code = (
        "import sys\n"
        "import importlib\n"
        f"for script in {ENTRY_SCRIPTS}:\n"
        "    try:\n"
        "        importlib.import_module(script).main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"print(sorted(n for n in {HEAVY_MODULES} if n in sys.modules))\n"
    )
    printed = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True, text=True, check=True
    ).stdout
    assert printed.splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    "alias, hub_id",
    [
        ("bert-small", "prajjwal1/bert-small"),
        ("electra-base", "google/electra-base-discriminator"),
        ("pythia-70m", "EleutherAI/pythia-70m"),
        ("bert-base-cased", "bert-base-cased"),
    ],
)
def test_model_aliases_of_the_original_resolve(alias, hub_id):
    assert resolve_model_name(alias) == hub_id


def test_the_readme_test_command_ends_with_pytests_count():
    """`python -m pytest -q` (the README's test command) must keep pytest's closing "N passed" line."""
    assert "\npython -m pytest -q\n" in README
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_pareto.py"],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
    )
    assert re.match(r"\d+ passed", result.stdout.strip().splitlines()[-1]), result.stdout


SCRIPT_ARGUMENTS = {
    "train_supernet.py": (ModelArguments, DataArguments, LMArguments, NASArguments, SupernetArguments,
                          TrainingArguments),
    "run_offline_search.py": (ModelArguments, DataArguments, LMArguments, NASArguments, SearchArguments,
                              CostArguments, MultiFidelityArguments),
    "select_and_extract.py": (SelectionArguments, DataArguments, LMArguments, RecoveryArguments),
}


def documented_section_commands(heading: str) -> list[tuple[str, list[str]]]:
    """The section's `python <script> ...` commands, continuation lines joined and its shell variables expanded."""
    after_heading = re.split(rf"^#+ {heading}", DOCS, flags=re.MULTILINE)[1]
    section = re.split(r"^#{1,2} ", after_heading, flags=re.MULTILINE)[0]
    script = "\n".join(re.findall(r"```bash\n(.*?)```", section, re.DOTALL)).replace("\\\n", " ")
    variables = dict(re.findall(r'^(\w+)="(.*)"$', script, re.MULTILINE)) | {"MINILM": "./minilm"}
    commands = []
    for line in script.splitlines():
        if line.startswith("python ") and line.split()[1] in SCRIPT_ARGUMENTS:
            for name, value in variables.items():
                line = line.replace(f"${name}", value)
            commands.append((line.split()[1], shlex.split(line)[2:]))
    return commands


@pytest.mark.parametrize("heading", ["CPU quickstart", "A real run"])
def test_the_documented_runs_parse_and_train_the_studys_complete_recipe(heading):
    """Every flag of the quickstart and the real run exists, and their super-network is the study's row (e)."""
    sys.path.insert(0, str(PROJECT_DIR / "bench"))
    from study_glue import FULL_RECIPE, TEACHER

    commands = documented_section_commands(heading)
    assert [script for script, _ in commands] == [
        "train_supernet.py", "train_supernet.py", "run_offline_search.py", "select_and_extract.py"]
    parsed = [parse_arguments(SCRIPT_ARGUMENTS[script], argv) for script, argv in commands]
    teacher_dir = parsed[0][-1].output_dir
    supernet = parsed[1][4]
    recipe_flags = [flag.replace(TEACHER, teacher_dir) for flag in FULL_RECIPE.flags]
    recipe = parse_arguments((SupernetArguments,), recipe_flags)[0]
    assert dataclasses.asdict(supernet) == dataclasses.asdict(recipe)
    assert parsed[2][4].checkpoint_dir_model == parsed[1][-1].output_dir
    recovery = parsed[3][-1]
    assert recovery.recover_epochs >= 1 and recovery.teacher_model_name_or_path == teacher_dir
