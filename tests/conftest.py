"""Shared fixtures: settings -> lake, each on a temporary folder (see STYLE.md, tests)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.config import Settings, load_settings
from core.lake import Lake

os.environ.setdefault("LIGHTGBM_NUM_THREADS", "1")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings pointing at an empty lake folder under tmp_path (no lakeops.toml read)."""
    return load_settings(env={}, config_path=None, lake_uri=str(tmp_path / "lake"), actor="tester")


@pytest.fixture
def lake(settings: Settings) -> Lake:
    """An empty local lake."""
    return Lake.from_settings(settings)
