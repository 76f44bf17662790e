"""The layering holds: import-linter contracts, one owner per third-party library, __all__ everywhere."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE_MODULES = sorted(p for p in (ROOT / "core").rglob("*.py") if p.name != "__main__.py")

# library -> the only place (path prefix under the repo) allowed to import it
OWNERS = {
    "deltalake": ("core/lake/",),
    "duckdb": ("core/sql/",),
    "lightgbm": ("core/training/",),
    "litestar": ("core/serving/",),
    "apscheduler": ("jobs/",),
    "dask": ("core/compute/",),
    "distributed": ("core/compute/",),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _lint_imports(config: Path) -> subprocess.CompletedProcess[str]:
    linter = Path(sys.executable).with_name("lint-imports")  # the console script of this interpreter
    return subprocess.run([str(linter), "--config", str(config)], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_import_linter_contracts_hold():
    res = _lint_imports(ROOT / "pyproject.toml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Contracts: 6 kept, 0 broken." in res.stdout  # every contract was checked, none skipped


def test_import_linter_fails_on_a_broken_contract(tmp_path):
    """The check can fail: the same configuration plus a contract the code breaks exits 1, naming it."""
    broken = (ROOT / "pyproject.toml").read_text() + (
        '\n[[tool.importlinter.contracts]]\nname = "lake may not use the catalog (deliberately false)"\n'
        'type = "forbidden"\nsource_modules = ["core.lake"]\nforbidden_modules = ["core.catalog"]\n'
    )
    config = tmp_path / "pyproject.toml"
    config.write_text(broken)
    res = _lint_imports(config)
    assert res.returncode == 1 and "lake may not use the catalog (deliberately false) BROKEN" in res.stdout


@pytest.mark.parametrize("library", sorted(OWNERS))
def test_each_third_party_library_has_one_owner(library):
    offenders = []
    for path in [*ROOT.glob("core/**/*.py"), *ROOT.glob("jobs/**/*.py"), *ROOT.glob("pages/*.py"), ROOT / "app.py"]:
        rel = path.relative_to(ROOT).as_posix()
        if library in _imports(path) and not rel.startswith(OWNERS[library]):
            offenders.append(rel)
    assert not offenders, f"{library} imported outside {OWNERS[library]}: {offenders}"


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_core_module_declares_its_public_surface(path):
    tree = ast.parse(path.read_text())
    if path.name == "__init__.py" and not tree.body:
        return
    assert ast.get_docstring(tree), f"{path} has no module docstring"
    names = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}
    if path.name != "__init__.py" or len(tree.body) > 1:
        assert "__all__" in names, f"{path} does not declare __all__"


def test_ruff_finds_nothing():
    """ruff as configured in pyproject.toml (lint rules only; formatting is not enforced)."""
    ruff = Path(sys.executable).with_name("ruff")
    res = subprocess.run([str(ruff), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
