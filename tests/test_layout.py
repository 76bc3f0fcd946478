"""The package layout (docs/architecture.md): entry scripts on top, the nas_llm package below, imports one way.

Read from the source with `ast`, so a rule holds whatever a test run happened to import.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import nas_llm_cli
from nas_llm.cloud.sagemaker_jobs import staged_source_dir

PROJECT_DIR = Path(__file__).resolve().parents[1]
PACKAGE_DIR = PROJECT_DIR / "nas_llm"
ENTRY_SCRIPTS = sorted(path.stem for path in PROJECT_DIR.glob("*.py"))


def stage_order() -> list[str]:
    """The sub-packages in stage order, as docs/architecture.md lists them (`1. **common**` ...)."""
    text = (PROJECT_DIR / "docs" / "architecture.md").read_text()
    return re.findall(r"^\d+\. \*\*(\w+)\*\*", text, re.MULTILINE)


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_DIR).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in the file (a function-level import is still a dependency)."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return imported


def library_graph() -> dict[str, set[str]]:
    """nas_llm module -> the nas_llm modules it imports."""
    modules = {module_name(path): path for path in PACKAGE_DIR.rglob("*.py")}
    return {name: imported_modules(path) & modules.keys() - {name} for name, path in modules.items()}


def stage_of(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else ""


def test_the_import_graph_of_the_package_has_no_cycle():
    graph = library_graph()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = path[path.index(module):] + [module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module not in done:
            for imported in sorted(graph[module]):
                visit(imported, [*path, module])
            done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_no_library_module_imports_an_entry_script():
    for path in PACKAGE_DIR.rglob("*.py"):
        scripts = imported_modules(path) & set(ENTRY_SCRIPTS)
        assert not scripts, f"{path.relative_to(PROJECT_DIR)} imports the entry script(s) {sorted(scripts)}"


def test_a_stage_imports_only_itself_and_the_stages_before_it():
    order = stage_order()
    assert sorted(order) == sorted(p.name for p in PACKAGE_DIR.iterdir() if (p / "__init__.py").is_file())
    for module, imported in library_graph().items():
        if module == "nas_llm":
            continue
        for dependency in imported:
            if dependency == "nas_llm":
                continue
            assert order.index(stage_of(dependency)) <= order.index(stage_of(module)), (
                f"{module} ({stage_of(module)}) imports {dependency}, of the later stage {stage_of(dependency)}"
            )


def test_the_top_level_holds_only_entry_scripts():
    for name in ENTRY_SCRIPTS:
        tree = ast.parse((PROJECT_DIR / f"{name}.py").read_text())
        runs_as_script = any(
            isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) for node in tree.body
        )
        assert runs_as_script, f"{name}.py is not an entry script (no __main__ block): move it into nas_llm/"


def test_no_entry_script_imports_another():
    for name in ENTRY_SCRIPTS:
        scripts = imported_modules(PROJECT_DIR / f"{name}.py") & set(ENTRY_SCRIPTS)
        assert not scripts, f"{name}.py imports the entry script(s) {sorted(scripts)}: move what it needs into nas_llm/"


MAX_MAIN_LINES = 60  # an entry script's main() parses and orchestrates; the method logic lives in the package


def test_every_entry_scripts_main_only_orchestrates():
    for name in ENTRY_SCRIPTS:
        tree = ast.parse((PROJECT_DIR / f"{name}.py").read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == "main":
                lines = node.end_lineno - node.lineno + 1
                assert lines <= MAX_MAIN_LINES, (
                    f"{name}.py's main() has {lines} lines (at most {MAX_MAIN_LINES}): move its method logic into "
                    "nas_llm/"
                )


def test_no_test_file_imports_conftest_or_another_test_file():
    tests_dir = PROJECT_DIR / "tests"
    test_modules = {path.stem for path in tests_dir.glob("test_*.py")} | {"conftest"}
    for path in tests_dir.glob("*.py"):
        imported = imported_modules(path) & test_modules
        assert not imported, f"{path.name} imports {sorted(imported)}: move what it needs into tests/support.py"


def test_the_package_installs_every_entry_script_and_the_console_command():
    project = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())
    assert sorted(project["tool"]["setuptools"]["py-modules"]) == ENTRY_SCRIPTS
    assert project["project"]["scripts"] == {"nas-llm": "nas_llm_cli:console_main"}


@pytest.mark.parametrize("subcommand", list(nas_llm_cli.SUBCOMMANDS))
def test_each_subcommand_takes_exactly_its_scripts_flags(subcommand, capsys):
    script = __import__(nas_llm_cli.SUBCOMMANDS[subcommand])
    with pytest.raises(SystemExit):
        script.main(["--help"])
    direct = capsys.readouterr().out
    program = sys.argv[0]
    try:
        with pytest.raises(SystemExit):
            nas_llm_cli.main([subcommand, "--help"])
    finally:
        sys.argv[0] = program
    through_command = capsys.readouterr().out
    flags = re.compile(r"--\w+")
    assert flags.findall(direct) and flags.findall(through_command) == flags.findall(direct)


def test_an_unknown_subcommand_is_one_line_and_exit_code_2():
    result = subprocess.run(
        [sys.executable, "nas_llm_cli.py", "trian"], cwd=PROJECT_DIR, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown subcommand 'trian'; choose one of: " + ", ".join(nas_llm_cli.SUBCOMMANDS)
    ]


def test_the_sagemaker_upload_runs_every_entry_script_without_the_repository():
    """The staged source folder alone imports every entry script, with nas_llm from the upload itself."""
    code = (
        "import importlib, sys\n"
        "sys.path.insert(0, '.')\n"
        f"for script in {ENTRY_SCRIPTS}:\n"
        "    importlib.import_module(script)\n"
        "import nas_llm\n"
        "print(nas_llm.__file__)\n"
    )
    with staged_source_dir(PROJECT_DIR, "train_supernet.py") as staging:
        result = subprocess.run(
            [sys.executable, "-I", "-c", code], cwd=staging, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert Path(result.stdout.strip()).resolve().is_relative_to(Path(staging).resolve())
        uploaded = {path.relative_to(staging).as_posix() for path in Path(staging).rglob("*.py")}
    library = {path.relative_to(PROJECT_DIR).as_posix() for path in PACKAGE_DIR.rglob("*.py")}
    assert library <= uploaded and {f"{name}.py" for name in ENTRY_SCRIPTS} <= uploaded
