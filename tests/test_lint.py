"""ruff, as configured in pyproject.toml, finds nothing in the repository (and can find something)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ruff(*args: str) -> subprocess.CompletedProcess[str]:
    # this interpreter's ruff (the test extra pins it), from the repository root so pyproject.toml applies
    return subprocess.run(
        [sys.executable, "-m", "ruff", "check", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_check_is_clean():
    res = _ruff(".")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "All checks passed!" in res.stdout


def test_ruff_check_fails_on_a_bad_file(tmp_path):
    """The check can fail: an unused import and a 16-branch function, under the project's own config."""
    branches = "".join(f"    if x == {i}:\n        return {i}\n" for i in range(15))
    bad = tmp_path / "bad.py"
    bad.write_text(f"import os\n\n\ndef tangled(x: int) -> int:\n{branches}    return -1\n")
    res = _ruff("--no-cache", "--config", str(ROOT / "pyproject.toml"), "--output-format", "concise", str(bad))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "F401" in res.stdout  # `os` imported but unused
    assert "C901 `tangled` is too complex (16 > 15)" in res.stdout  # the complexity limit is on
