"""The package's shape: one namespace, layers that import only downward, no cycles.

The contracts live in pyproject.toml ([tool.importlinter]); these tests run them on the
installed package and on a copy with a forbidden import planted, so the check is shown to bite,
and keep the README's Layout section (the one written description of the layers) equal to them.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

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
        ("medharness.tasks.medqa", "from medharness.run.runner import run", "downward"),
        ("medharness.tasks.base", "from medharness.trainers.spec import TrainSpec", "downward"),
        (
            "medharness.reports.html",
            "from medharness.models.loading import load_model",
            "never load a model",
        ),
        ("medharness.tasks.base", "import medharness.tasks.medqa", "no import cycles"),
        # a backend reached through the config, not imported by reports themselves
        (
            "medharness.config",
            "from medharness.models.endpoint import Endpoint",
            "never load a model",
        ),
        ("medharness.models.specs", "import medharness.models.hub", "never load a model"),
        # models and trainers sit side by side: neither imports the other
        ("medharness.models.choice", "from medharness.trainers.spec import TrainSpec", "downward"),
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


def contracts() -> list[dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    found: list[dict[str, Any]] = config["tool"]["importlinter"]["contracts"]
    return found


def short(name: str) -> str:
    """A module's name as the README writes it: without the ``medharness.`` prefix."""
    return name.removeprefix("medharness.")


def readme_layout() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("### Layout")
    end = text.find("\n#", start + 1)
    return text[start : end if end != -1 else None]


def readme_layers(layout: str) -> list[str]:
    """The fenced ``text`` block of the Layout section: one layer a line, top first."""
    block = re.search(r"```text\n(.*?)```", layout, re.DOTALL)
    assert block is not None, "the README's Layout section has no ```text block of layers"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def modules_matching(pattern: str) -> set[str]:
    """``models.*``: every module of that package, as the README names them."""
    if not pattern.endswith(".*"):
        return {pattern}
    package = ROOT / "harness" / pattern.removesuffix(".*").replace(".", "/")
    return {
        f"{pattern[:-2]}.{path.stem}" for path in package.glob("*.py") if path.stem != "__init__"
    }


def readme_forbidden(layout: str) -> list[tuple[set[str], set[str]]]:
    """The Layout table's rows as (these, the modules they never import): each row's
    pattern expanded over the package's files, less its exceptions."""
    rows = []
    for line in layout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        these, forbidden, exceptions = (re.findall(r"`([^`]+)`", cell) for cell in cells)
        never = set().union(*map(modules_matching, forbidden)) - set(exceptions)
        rows.append((set(these), never))
    return rows


def test_the_readme_describes_the_layers_the_contracts_enforce() -> None:
    layout = readme_layout()
    kinds = {contract["type"] for contract in contracts()}
    assert kinds <= {"layers", "forbidden", "acyclic_siblings"}, kinds  # a kind it describes
    (layers,) = [c for c in contracts() if c["type"] == "layers"]
    enforced = [" | ".join(map(short, layer.split(" | "))) for layer in layers["layers"]]
    assert readme_layers(layout) == enforced
    forbidden = [
        (
            set(map(short, contract["source_modules"])),
            set(map(short, contract["forbidden_modules"])),
        )
        for contract in contracts()
        if contract["type"] == "forbidden"
    ]
    # a new backend module is forbidden to reports by the README's pattern: pyproject must follow
    assert readme_forbidden(layout) == forbidden
    cycles = [c for c in contracts() if c["type"] == "acyclic_siblings"]
    assert all(c["ancestors"] == ["medharness"] for c in cycles)
    assert ("no import cycles" in layout) == bool(cycles)
