"""The package's shape: one namespace, layers that import only downward, no cycles.

The contracts live in pyproject.toml ([tool.importlinter]); these tests run them on the
installed package and on a copy with a forbidden import planted, so the check is shown to bite.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import medharness

ROOT = Path(__file__).resolve().parent.parent
SOURCE_FOLDERS = ("harness", "tasks", "trainers", "reports")
BARE_NAMES = set(SOURCE_FOLDERS)


def lint_imports(config: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    code = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    return subprocess.run(
        [sys.executable, "-c", code, "--no-logo", "--no-cache", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=config.parent,
        timeout=300,
        check=False,
    )


def test_the_installed_package_keeps_every_contract() -> None:
    result = lint_imports(ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_nothing_imports_a_generic_top_level_name() -> None:
    """Every import of our own code goes through medharness.*; `import tasks` would find
    another distribution's module (or a user's tasks.py) first."""
    offenders = []
    for folder in (*SOURCE_FOLDERS, "tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                offenders += [f"{path}:{node.lineno}: {name}" for name in names
                              if name.split(".")[0] in BARE_NAMES]  # fmt: skip
    assert offenders == []


def planted_copy(tmp_path: Path, module: str, line: str) -> Path:
    """A copy of the package with one import line added to ``module``'s file."""
    package = Path(medharness.__file__).parent
    target = tmp_path / "src" / "medharness"
    shutil.copytree(package, target, symlinks=False, ignore=shutil.ignore_patterns("*.so"))
    planted = target.joinpath(*module.split(".")[1:]).with_suffix(".py")
    planted.write_text(line + "\n" + planted.read_text(encoding="utf-8"), encoding="utf-8")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path / "src"


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("medharness.tasks.medqa", "from medharness.runner import run", "downward"),
        ("medharness.tasks.base", "from medharness.trainers.spec import TrainSpec", "downward"),
        (
            "medharness.reports.html",
            "from medharness.models.loading import load_model",
            "never load a model",
        ),
        ("medharness.tasks.base", "import medharness.tasks.medqa", "no import cycles"),
    ],
)
def test_a_forbidden_import_breaks_a_contract(
    tmp_path: Path, module: str, line: str, broken: str
) -> None:
    source = planted_copy(tmp_path, module, line)
    result = lint_imports(tmp_path / "pyproject.toml", pythonpath=source)
    assert result.returncode != 0, result.stdout
    broken_lines = [row for row in result.stdout.splitlines() if row.endswith("BROKEN")]
    assert any(broken in row for row in broken_lines), result.stdout
