"""Running a Streamlit page with AppTest, as the page tests do."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]


def run_page(path: str) -> AppTest:
    """Run ``pages/<...>.py`` once and fail on any exception it raised."""
    at = AppTest.from_file(str(ROOT / path), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at
