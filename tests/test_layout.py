"""The package's layering: no stage imports a later one (README, "How the code is laid out")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

HPC = Path(__file__).resolve().parent.parent / "hpc"
# What each subpackage may import, besides itself and the root package.
ALLOWED = {
    "core": set(),
    "models": {"core"},
    "execution": {"core"},
    "sweep": {"core", "models", "execution"},
    "train": {"core", "models", "execution", "sweep"},
    "report": {"core", "models", "execution", "sweep", "train"},
    "cluster": {"core"},
}


def hpc_imports(path: Path) -> set[str]:
    """The subpackages of hpc that the module at ``path`` imports (at any depth in the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + ([f"{node.module}.{a.name}" for a in node.names] if node.module == "hpc" else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "hpc" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_every_subpackage_is_in_the_layering():
    subpackages = {p.name for p in HPC.iterdir() if (p / "__init__.py").exists()}
    assert subpackages == set(ALLOWED)


@pytest.mark.parametrize("stage", sorted(ALLOWED))
def test_no_stage_imports_a_later_one(stage):
    for module in sorted((HPC / stage).rglob("*.py")):
        bad = hpc_imports(module) - ALLOWED[stage] - {stage}
        assert not bad, f"{module.relative_to(HPC.parent)} imports hpc.{', hpc.'.join(sorted(bad))}"


def test_the_checker_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from hpc.report import build\n    import hpc.sweep.store\n")
    assert hpc_imports(module) == {"report", "sweep"}


@pytest.mark.parametrize("stage", sorted(ALLOWED))
def test_every_subpackage_says_what_it_owns(stage):
    doc = ast.get_docstring(ast.parse((HPC / stage / "__init__.py").read_text()))
    assert doc and len(doc.split()) >= 10, f"hpc/{stage}/__init__.py needs a docstring saying what it owns"
