"""Shared fixtures: settings -> lake, each on a temporary folder (see STYLE.md, tests)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from core.config import Settings, load_settings
from core.lake import Lake

os.environ.setdefault("LIGHTGBM_NUM_THREADS", "1")
# Job configs in tests name test-only job functions as "jobfuncs:NAME" (tests/jobfuncs.py).
if str(Path(__file__).parent) not in sys.path:
    sys.path.append(str(Path(__file__).parent))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings pointing at an empty lake folder under tmp_path (no lakeops.toml read)."""
    return load_settings(env={}, config_path=None, lake_uri=str(tmp_path / "lake"), actor="tester")


@pytest.fixture
def lake(settings: Settings) -> Lake:
    """An empty local lake."""
    return Lake.from_settings(settings)


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 (a child process; see tests/s3server.py), one per session."""
    from tests.s3server import moto_server

    with moto_server() as server:
        yield server


def _fresh_bucket(server) -> str:  # noqa: ANN001 - s3server.S3Server
    import uuid

    return server.create_bucket(f"lake-{uuid.uuid4().hex[:16]}")


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def any_lake(request: pytest.FixtureRequest, tmp_path: Path) -> Lake:
    """A Lake on a fresh local folder, or on a fresh bucket of the moto S3 server."""
    if request.param == "local":
        return Lake(tmp_path / "lake")
    server = request.getfixturevalue("s3_server")
    return Lake(f"s3://{_fresh_bucket(server)}/lake", server.options)


@pytest.fixture
def ui_lake(lake: Lake, monkeypatch: pytest.MonkeyPatch):
    """``lake`` as the one the Streamlit pages read (via the environment), Streamlit caches cleared."""
    import streamlit as st

    monkeypatch.setenv("LAKEOPS_LAKE", lake.uri)
    monkeypatch.delenv("LAKEOPS_CONFIG", raising=False)
    st.cache_resource.clear()  # pages/_common caches lake handles per process
    st.cache_data.clear()
    yield lake
    st.cache_resource.clear()
    st.cache_data.clear()
