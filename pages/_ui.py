"""Presentation helpers shared by the pages (not a page): number and time formats, tables, links, charts.

Times are shown in the viewer's time zone (the browser's, ``st.context.timezone``; UTC when
unknown) with the zone named; charts draw the same zone (Vega-Lite uses the browser's) on a
24-hour axis. Metrics show 4 significant digits, sizes MB, latencies ms.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import altair as alt
import polars as pl
import streamlit as st
from streamlit.errors import StreamlitPageNotFoundError

from core.errors import LakeopsError

PALETTE = "tableau10"  # categorical: runs and versions get clearly different colours
TIME_FORMAT = "%Y-%m-%d %H:%M"
_CLI_WORDS = (
    ('pass --reason "..."', "give a reason"),
    ("--reason ...", "a reason"),
    ("use --force with a reason", "force it (tick “Force”) with a reason"),
    ("--force", "“Force”"),
)


# ---------------------------------------------------------------- zone and time
def zone_name() -> str:
    """The viewer's time zone name (``UTC`` when the browser did not say)."""
    name = getattr(st.context, "timezone", None)
    try:
        ZoneInfo(name) if name else None
    except (ZoneInfoNotFoundError, ValueError):
        name = None
    return name or "UTC"


def when(value: datetime | None, *, seconds: bool = False) -> str:
    """A timestamp in the viewer's zone with the zone's abbreviation, e.g. ``2025-03-01 14:05 CET``."""
    if value is None:
        return "-"
    local = value.astimezone(ZoneInfo(zone_name()))
    return local.strftime(f"%Y-%m-%d %H:%M{':%S' if seconds else ''} %Z")


def time_format(values: pl.Series | None = None) -> str:
    """A 24-hour label format fitting the span of ``values``: seconds for minutes, dates for months."""
    if values is None or values.len() == 0:
        return TIME_FORMAT
    span = values.max() - values.min()  # type: ignore[operator]
    if span < timedelta(minutes=10):
        return "%H:%M:%S"
    if span < timedelta(days=2):
        return "%m-%d %H:%M"
    return "%Y-%m-%d" if span > timedelta(days=60) else TIME_FORMAT


def time_axis(field: str, title: str = "time", values: pl.Series | None = None) -> alt.X:
    """A real time axis in the viewer's zone: 24-hour labels fitting the span, the zone in the title."""
    return alt.X(f"{field}:T", title=f"{title} ({zone_name()})",
                 axis=alt.Axis(format=time_format(values), labelAngle=-30, labelOverlap=True, tickCount=6))


# ---------------------------------------------------------------- numbers
def num(value: Any) -> str:
    """A metric with 4 significant digits (``0.7618``), ``-`` for missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def megabytes(n: float | None) -> str:
    """A size in MB (``0.42 MB``)."""
    return "-" if n is None else f"{n / 1e6:.3g} MB"


def millis(ms: float | None) -> str:
    """A latency in ms (``1.3 ms``)."""
    return "-" if ms is None else f"{ms:.3g} ms"


def tidy(frame: pl.DataFrame) -> pl.DataFrame:
    """A frame for display: floats to 4 significant digits, times in the viewer's zone."""
    tz = zone_name()
    exprs = []
    for name, dtype in frame.schema.items():
        if dtype in (pl.Float64, pl.Float32):
            exprs.append(pl.col(name).round_sig_figs(4))
        elif isinstance(dtype, pl.Datetime) and dtype.time_zone:
            exprs.append(pl.col(name).dt.convert_time_zone(tz))
    return frame.with_columns(exprs) if exprs else frame


def table(frame: pl.DataFrame, *, key: str | None = None, **kwargs: Any) -> Any:
    """``st.dataframe`` of a tidied frame; time columns formatted with the zone in their header."""
    config: dict[str, Any] = {
        name: st.column_config.DatetimeColumn(f"{name} ({zone_name()})", format="YYYY-MM-DD HH:mm:ss")
        for name, dtype in frame.schema.items()
        if isinstance(dtype, pl.Datetime)
    }
    if "p_value" in frame.columns:  # tiny p-values read as 0.0000000 in plain notation
        config["p_value"] = st.column_config.NumberColumn("p_value", format="%.2e")
    config.update(kwargs.pop("column_config", {}))
    return st.dataframe(tidy(frame), hide_index=True, width="stretch", column_config=config, key=key, **kwargs)


def kv(mapping: Mapping[str, Any]) -> pl.DataFrame:
    """A two-column frame (``field``, ``value``) of formatted values."""
    return pl.DataFrame({"field": list(mapping), "value": [num(v) for v in mapping.values()]},
                        schema={"field": pl.String, "value": pl.String})


# ---------------------------------------------------------------- errors and links
def error_text(exc: LakeopsError) -> str:
    """A core error as the UI says it: the CLI's flag names become the page's controls."""
    text = str(exc)
    for cli, ui in _CLI_WORDS:
        text = text.replace(cli, ui)
    return text


def show_error(exc: LakeopsError) -> None:
    """One red box with the error, in the page's words."""
    st.error(error_text(exc), icon=":material/error:")


def link(page: str, label: str, icon: str | None = None, **params: Any) -> None:
    """A link to ``pages/<page>.py`` carrying the selection as query parameters."""
    query = {k: str(v) for k, v in params.items() if v is not None}
    try:
        st.page_link(f"pages/{page}.py", label=label, icon=icon, query_params=query)
    except StreamlitPageNotFoundError:  # the page runs on its own (no st.navigation): a plain link
        st.markdown(f"[{label}](/{page}?{urlencode(query)})")


def empty(what: str, how: str) -> None:
    """An empty section: what is missing and how to get it."""
    st.info(f"{what} {how}", icon=":material/info:")


def pick(label: str, options: Iterable[Any], *, key: str, container: Any = None, **kwargs: Any) -> Any:
    """A selectbox whose choice lives in the URL (``?key=value``), so the view can be shared."""
    return (container or st).selectbox(label, list(options), key=key, bind="query-params", **kwargs)
