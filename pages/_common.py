"""Helpers shared by the pages: settings and the cached lake handle (not a page itself)."""

from __future__ import annotations

import json

import streamlit as st

from core.config import Settings, load_settings
from core.lake import Lake


def settings() -> Settings:
    """The settings of this UI process (environment + lakeops.toml; cheap to read)."""
    return load_settings()


@st.cache_resource
def _lake(uri: str, storage_options_json: str) -> Lake:
    return Lake(uri, json.loads(storage_options_json))


def lake() -> Lake:
    """The lake this UI reads: one handle per lake URI; each query opens its own snapshot."""
    s = settings()
    return _lake(s.lake_uri, json.dumps(dict(s.storage_options), sort_keys=True))
