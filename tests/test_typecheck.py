"""mypy, as configured in pyproject.toml ([tool.mypy]: core/, strict), finds no error (and can find one).

A cold run (no .mypy_cache, the case in CI) costs about 12 s of CPU, a warm one 0.3 s; the cache is
the gitignored .mypy_cache of the checkout.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _mypy(*args: str) -> subprocess.CompletedProcess[str]:
    # this interpreter's mypy (the test extra pins it), from the repository root so pyproject.toml applies;
    # the cache is the gitignored .mypy_cache there unless a test names another
    return subprocess.run(
        [sys.executable, "-m", "mypy", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_mypy_finds_no_error_in_core():
    res = _mypy()  # no arguments: the files and flags are pyproject.toml's
    assert res.returncode == 0, res.stdout + res.stderr
    checked = re.search(r"Success: no issues found in (\d+) source files", res.stdout)
    assert checked, res.stdout
    assert int(checked.group(1)) == len(list((ROOT / "core").rglob("*.py")))  # all of core, nothing skipped


def test_mypy_fails_on_a_bad_module(tmp_path):
    """The check can fail: a type error, and an unannotated function (the config's strictness), are reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def half(n: int) -> int:\n    return n / 2\n\n\ndef untyped(x):\n    return x\n")
    res = _mypy("--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(tmp_path / "cache"), str(bad))
    assert res.returncode == 1, res.stdout + res.stderr
    assert 'bad.py:2: error: Incompatible return value type (got "float", expected "int")' in res.stdout
    assert "bad.py:5: error: Function is missing a type annotation  [no-untyped-def]" in res.stdout
