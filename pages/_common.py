"""Helpers shared by the pages: the cached lake handle and settings (not a page itself)."""

from __future__ import annotations

import streamlit as st

from core.config import Settings, load_settings
from core.lake import Lake


@st.cache_resource
def settings() -> Settings:
    """The settings of this UI process (environment + lakeops.toml)."""
    return load_settings()


@st.cache_resource
def lake() -> Lake:
    """The lake this UI reads (one handle per process; each query opens its own snapshot)."""
    return Lake.from_settings(settings())
