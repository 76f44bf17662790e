"""Checking a statement (one SELECT-shaped statement, EXPLAIN included) and rewriting it:
bare ``at`` columns quoted, ``AT (VERSION => n)`` / ``AT (TIMESTAMP => '...')`` resolved to
pinned snapshots. Parsing only: nothing here runs a query."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import duckdb

from core.errors import SqlError, SqlRefusedError, TableNotFoundError
from core.sql._views import DERIVED_VIEWS

if TYPE_CHECKING:
    from core.lake import Lake

__all__ = ["check", "first_line", "quote_at", "time_travel"]

_parser: duckdb.DuckDBPyConnection | None = None
_parser_lock = threading.Lock()


def _extract(sql: str) -> list[Any]:
    """Parse only (nothing runs): one shared connection, as a new one costs 50-300 ms."""
    global _parser
    with _parser_lock:
        if _parser is None:
            _parser = duckdb.connect(config={"enable_external_access": False})
        return list(_parser.extract_statements(sql))


@dataclass(frozen=True)
class _Tok:
    start: int
    end: int
    kind: Any
    text: str


def _tokens(sql: str) -> list[_Tok]:
    """DuckDB's tokens of ``sql`` without comments (an empty list when it cannot tokenize)."""
    try:
        raw = duckdb.tokenize(sql)
    except duckdb.Error:
        return []
    out = []
    for i, (pos, kind) in enumerate(raw):
        end = raw[i + 1][0] if i + 1 < len(raw) else len(sql)
        text = sql[pos:end].rstrip()
        if kind != duckdb.token_type.comment:
            out.append(_Tok(pos, pos + len(text), kind, text))
    return out


def _is_kw(tok: _Tok | None, *words: str) -> bool:
    return tok is not None and tok.kind == duckdb.token_type.keyword and tok.text.lower() in words


def _closing(toks: list[_Tok], i: int) -> int | None:
    """Index of the token closing the parenthesis opened at ``toks[i]``."""
    depth = 0
    for j in range(i, len(toks)):
        if toks[j].kind == duckdb.token_type.operator:
            depth += toks[j].text.count("(") - toks[j].text.count(")")
            if depth <= 0:
                return j
    return None


def quote_at(sql: str) -> str:
    """Quote bare ``at`` column references: ``at`` is a DuckDB keyword, and every lakeops table
    has an ``at`` timestamp column, so ``order by at`` would otherwise be a syntax error.

    Keyword tokens spelled ``at`` are left alone when they start DuckDB's ``AT (VERSION => ...)``
    clause or ``AT TIME ZONE``; strings, quoted names and comments are never touched.
    """
    toks = _tokens(sql)
    out, last = [], 0
    for i, tok in enumerate(toks):
        if not _is_kw(tok, "at"):
            continue
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        if nxt is not None and (nxt.text.startswith("(") or _is_kw(nxt, "time")):
            continue
        out.append(sql[last : tok.start])
        out.append(f'"{tok.text}"')
        last = tok.end
    out.append(sql[last:])
    return "".join(out)


def _what(kind: Any) -> str:
    return str(kind).rsplit(".", 1)[-1]


def check(sql: str) -> None:
    """Refuse anything but one SELECT-shaped statement (looking inside EXPLAIN too)."""
    try:
        stmts = _extract(sql)
    except duckdb.Error as exc:
        raise SqlError(first_line(exc)) from None
    if not stmts:
        raise SqlError("the query is empty")
    if len(stmts) > 1:
        raise SqlRefusedError(f"one statement per query, got {len(stmts)}")
    _check_statement(stmts[0].type, stmts[0].query or sql)


def _check_statement(kind: Any, text: str, explained: bool = False) -> None:
    if kind == duckdb.StatementType.SELECT:
        return
    toks = _tokens(text)
    # PIVOT without an IN list parses as several statements (an enum type, then the select)
    if kind == duckdb.StatementType.MULTI and any(_is_kw(t, "pivot", "pivot_wider") for t in toks):
        return
    if kind == duckdb.StatementType.EXPLAIN:
        # EXPLAIN ANALYZE runs its statement: check that statement as if it came alone
        i = 1
        if i < len(toks) and toks[i].text.startswith("("):
            j = _closing(toks, i)
            i = len(toks) if j is None else j + 1
        while i < len(toks) and _is_kw(toks[i], "analyze", "analyse"):
            i += 1
        inner = text[toks[i].start :] if i < len(toks) else ""
        try:
            stmts = _extract(inner)
        except duckdb.Error as exc:
            raise SqlError(first_line(exc)) from None
        if len(stmts) != 1:
            raise SqlRefusedError("EXPLAIN takes one SELECT statement")
        _check_statement(stmts[0].type, stmts[0].query or inner, explained=True)
        return
    prefix = "EXPLAIN of " if explained else ""
    raise SqlRefusedError(
        f"{prefix}{_what(kind)} statements are refused: the SQL console is read-only (SELECT queries only)"
    )


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__



# ---------------------------------------------------------------------------- time travel
def time_travel(sql: str, lake: Lake, by_view: dict[str, str], datasets: dict[str, Any]) -> str:
    """Replace ``name [AS alias] AT (VERSION => n | TIMESTAMP => 'time')`` by a pinned snapshot.

    DuckDB parses the clause but registered Arrow data cannot time travel, so each clause
    becomes a view (``"data_churn@v3"``) registered from ``Lake.snapshot(version=/as_of=)``; the
    original name stays usable as the alias. A time before the table existed is an error.
    """
    toks = _tokens(sql)
    edits: list[tuple[int, int, str]] = []
    for i, tok in enumerate(toks):
        if not (_is_kw(tok, "at") and i + 3 < len(toks) and toks[i + 1].text == "("):
            continue
        kind = toks[i + 2].text.lower()
        if kind not in ("version", "timestamp") or toks[i + 3].text != "=>":
            continue
        close = _closing(toks, i + 1)
        if close is None or i == 0:
            continue
        value = toks[i + 4 : close]
        t_idx = i - 1
        alias = None
        if t_idx >= 1 and _is_kw(toks[t_idx - 1], "as"):
            alias, t_idx = toks[t_idx], t_idx - 2
        elif t_idx >= 1 and toks[t_idx - 1].kind == duckdb.token_type.identifier:
            alias, t_idx = toks[t_idx], t_idx - 1
        table_tok = toks[t_idx] if t_idx >= 0 else None
        if table_tok is None or table_tok.kind != duckdb.token_type.identifier:
            raise SqlError("AT (VERSION => ...) / AT (TIMESTAMP => ...) must follow a table name")
        name = table_tok.text.strip('"').lower()
        table = {k.lower(): t for k, t in by_view.items()}.get(name)
        if table is None:
            what = "a derived view" if name in DERIVED_VIEWS or name == "predictions" else "not a lake table"
            hint = " (use runs_history for the raw rows of runs)" if name == "runs" else ""
            raise SqlError(f"{name} is {what}: time travel (AT ...) works on lake tables{hint}")
        clause = sql[tok.start : toks[close].end]
        try:
            if kind == "version":
                if len(value) != 1 or value[0].kind != duckdb.token_type.numeric_const or not value[0].text.isdigit():
                    raise SqlError(f"{clause}: VERSION takes a version number, e.g. AT (VERSION => 3)")
                gen = f"{name}@v{int(value[0].text)}"
                ds = lake.snapshot(table, version=int(value[0].text))
            else:
                when = _literal_time(value, clause)
                gen = f"{name}@{when.isoformat()}"
                ds = lake.snapshot(table, as_of=when)
        except TableNotFoundError as exc:
            raise SqlError(f"{name}: {exc}") from None
        datasets[gen] = ds
        quoted = '"' + gen.replace('"', '""') + '"'
        edits.append((tok.start, toks[close].end, ""))
        edits.append((table_tok.start, table_tok.end, quoted if alias else f"{quoted} as {table_tok.text}"))
    for start, end, text in sorted(edits, reverse=True):
        sql = sql[:start] + text + sql[end:]
    return sql


def _literal_time(value: list[_Tok], clause: str) -> datetime:
    """``'2026-05-01 12:00'``, ``TIMESTAMP '...'`` or ``'...'::timestamptz`` as an aware datetime."""
    toks = list(value)
    if toks and _is_kw(toks[0], "timestamp", "timestamptz"):
        toks = toks[1:]
    if len(toks) >= 2 and toks[1].text == "::":
        toks = toks[:1]
    if len(toks) != 1 or toks[0].kind != duckdb.token_type.string_const:
        raise SqlError(
            f"{clause}: TIMESTAMP takes a literal time, e.g. AT (TIMESTAMP => '2026-05-01 12:00:00+00')"
        )
    text = toks[0].text[1:-1].replace("''", "'").strip()
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise SqlError(f"{clause}: {text!r} is not a time such as '2026-05-01 12:00:00+00'") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
