"""The run-search grammar (MLflow's): parse a filter and an order-by safely, apply them to a polars frame.

Grammar (no ``eval``, no SQL: tokens are matched by one regular expression and every value is
a literal)::

    filter     := clause ("and" clause)*
    clause     := entity comparator value
    entity     := ("metrics" | "params" | "tags" | "attributes") "." name
    name       := identifier | `back quoted` | "double quoted"
    comparator := = | != | < | <= | > | >= | LIKE | ILIKE | IN | NOT IN
    value      := number | 'single quoted' | "double quoted" | ( value, ... )
    order_by   := [entity | attribute] ["asc" | "desc"]

Metrics compare as numbers, params and tags as strings, attributes as their column's type.
The frame searched has MLflow's wide column names: ``metrics.auc``, ``params.num_leaves``,
``tags.team`` and plain attribute columns (``run_id``, ``status``, ``started_at`` ...).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl

from core.errors import LakeopsError

__all__ = ["ATTRIBUTES", "Clause", "SearchSyntaxError", "apply", "parse_filter", "parse_order_by"]

# attribute name (and MLflow aliases) -> column of the wide runs frame
ATTRIBUTES: dict[str, str] = {
    "run_id": "run_id",
    "experiment": "experiment",
    "name": "name",
    "run_name": "name",
    "status": "status",
    "started_at": "started_at",
    "start_time": "started_at",
    "ended_at": "ended_at",
    "end_time": "ended_at",
    "parent_run_id": "parent_run_id",
    "dataset_name": "dataset_name",
    "dataset_version": "dataset_version",
    "seed": "seed",
    "git_sha": "git_sha",
    "git_dirty": "git_dirty",
    "user": "user",
    "host": "host",
    "error": "error",
}
_PREFIXES = {
    "metrics": "metrics",
    "metric": "metrics",
    "params": "params",
    "param": "params",
    "parameters": "params",
    "tags": "tags",
    "tag": "tags",
    "attributes": "attributes",
    "attribute": "attributes",
    "attr": "attributes",
    "run": "attributes",
}
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<num>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(?![\w.])
      | '(?P<sq>(?:[^'\\]|\\.|'')*)'
      | "(?P<dq>(?:[^"\\]|\\.)*)"
      | `(?P<bq>[^`]*)`
      | (?P<op><=|>=|!=|<>|==|=|<|>|\(|\)|,|\.)
      | (?P<word>[A-Za-z_][A-Za-z0-9_\-/:]*)
    )""",
    re.VERBOSE,
)
_COMPARATORS = {"=", "!=", "<", "<=", ">", ">=", "like", "ilike", "in", "not in"}


class SearchSyntaxError(LakeopsError, ValueError):
    """A search filter or order-by that does not parse; the message shows where."""


@dataclass(frozen=True)
class Clause:
    """One ``entity comparator value`` comparison."""

    kind: str  # metrics | params | tags | attributes
    key: str
    op: str
    value: Any

    @property
    def column(self) -> str:
        """The wide-frame column this clause reads."""
        return ATTRIBUTES[self.key] if self.kind == "attributes" else f"{self.kind}.{self.key}"


@dataclass(frozen=True)
class _Tok:
    kind: str  # num | str | name | op | word
    text: str
    pos: int


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise SearchSyntaxError(
                f"cannot read the search text at position {pos}: {text[pos : pos + 20]!r}"
            )
        kind = m.lastgroup or ""
        raw = m.group(kind)
        if kind == "sq":
            out.append(_Tok("str", raw.replace("''", "'").replace("\\'", "'"), m.start(kind)))
        elif kind == "dq":
            out.append(_Tok("str", raw.replace('\\"', '"'), m.start(kind)))
        elif kind == "bq":
            out.append(_Tok("name", raw, m.start(kind)))
        else:
            out.append(_Tok(kind, raw, m.start(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, what: str) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise SearchSyntaxError(f"{self.text!r}: expected {what} at the end")
        self.i += 1
        return tok

    def fail(self, tok: _Tok, what: str) -> SearchSyntaxError:
        return SearchSyntaxError(f"{self.text!r}: expected {what} at position {tok.pos}, got {tok.text!r}")

    def entity(self) -> tuple[str, str]:
        tok = self.take("metrics.<name>, params.<name>, tags.<name> or attributes.<name>")
        if tok.kind != "word" or tok.text.lower() not in _PREFIXES:
            # bare attribute names are allowed (status = 'finished')
            if tok.kind in ("word", "name") and tok.text in ATTRIBUTES:
                return "attributes", tok.text
            raise self.fail(tok, "metrics.<name>, params.<name>, tags.<name> or attributes.<name>")
        kind = _PREFIXES[tok.text.lower()]
        dot = self.take("'.'")
        if dot.text != ".":
            raise self.fail(dot, "'.' after " + tok.text)
        name = self.take("a name")
        if name.kind not in ("word", "name", "str"):
            raise self.fail(name, "a name")
        key = name.text
        # metric names may contain dots when not quoted: metrics.valid.auc
        while (nxt := self.peek()) is not None and nxt.text == "." and name.kind == "word":
            self.i += 1
            key += "." + self.take("a name").text
        if kind == "attributes" and key not in ATTRIBUTES:
            raise SearchSyntaxError(f"unknown attribute {key!r}; known: {', '.join(sorted(set(ATTRIBUTES)))}")
        return kind, key

    def value(self) -> Any:
        tok = self.take("a value")
        if tok.kind == "num":
            return float(tok.text) if any(c in tok.text for c in ".eE") else int(tok.text)
        if tok.kind == "str":
            return tok.text
        if tok.text == "(":
            items = [self.value()]
            while (sep := self.take("',' or ')'")).text == ",":
                items.append(self.value())
            if sep.text != ")":
                raise self.fail(sep, "',' or ')'")
            return tuple(items)
        if tok.kind == "word" and tok.text.lower() in ("true", "false"):
            return tok.text.lower() == "true"
        raise self.fail(tok, "a number or a quoted string")

    def comparator(self) -> str:
        tok = self.take("a comparator")
        text = tok.text.lower()
        if text == "not":
            nxt = self.take("'in'")
            if nxt.text.lower() != "in":
                raise self.fail(nxt, "'in' after 'not'")
            return "not in"
        text = {"==": "=", "<>": "!="}.get(text, text)
        if text not in _COMPARATORS:
            raise self.fail(tok, "one of = != < <= > >= LIKE ILIKE IN")
        return text

    def clause(self) -> Clause:
        kind, key = self.entity()
        op = self.comparator()
        value = self.value()
        if op in ("in", "not in") and not isinstance(value, tuple):
            value = (value,)
        if op not in ("in", "not in") and isinstance(value, tuple):
            raise SearchSyntaxError(f"{self.text!r}: a list of values needs IN, not {op!r}")
        if kind == "metrics":
            vals = value if isinstance(value, tuple) else (value,)
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
                raise SearchSyntaxError(f"metrics.{key} compares with numbers, got {value!r}")
            if op in ("like", "ilike"):
                raise SearchSyntaxError(f"metrics.{key}: LIKE works on params, tags and attributes only")
        elif kind in ("params", "tags"):
            vals = value if isinstance(value, tuple) else (value,)
            if not all(isinstance(v, str) for v in vals):
                raise SearchSyntaxError(
                    f"{kind}.{key} holds strings: quote the value, e.g. {kind}.{key} = '{value}'"
                )
        return Clause(kind, key, op, value)


def parse_filter(text: str | None) -> list[Clause]:
    """Parse an MLflow-style filter into clauses joined by AND (``None``/empty -> no clause).

    Raises:
        SearchSyntaxError: with the position of the problem.
    """
    if text is None or not text.strip():
        return []
    p = _Parser(text)
    clauses = [p.clause()]
    while (tok := p.peek()) is not None:
        if tok.kind == "word" and tok.text.lower() == "and":
            p.i += 1
            clauses.append(p.clause())
        elif tok.kind == "word" and tok.text.lower() == "or":
            raise SearchSyntaxError(
                f"{text!r}: OR is not supported (MLflow's grammar has AND only); run two searches"
            )
        else:
            raise p.fail(tok, "'and' or the end")
    return clauses


def parse_order_by(items: Sequence[str] | str | None) -> list[tuple[str, bool]]:
    """Parse order-by items (``"metrics.auc desc"``) into ``(column, descending)`` pairs."""
    if items is None:
        return []
    if isinstance(items, str):
        items = [items]
    out = []
    for item in items:
        p = _Parser(item)
        kind, key = p.entity()
        desc = False
        if (tok := p.peek()) is not None:
            if tok.text.lower() not in ("asc", "desc"):
                raise p.fail(tok, "'asc' or 'desc'")
            desc = tok.text.lower() == "desc"
            p.i += 1
            if p.peek() is not None:
                raise p.fail(p.toks[p.i], "the end of the order-by item")
        column = ATTRIBUTES[key] if kind == "attributes" else f"{kind}.{key}"
        out.append((column, desc))
    return out


def _like_regex(pattern: str, *, case_insensitive: bool) -> str:
    body = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return ("(?is)" if case_insensitive else "(?s)") + "^" + body + "$"


def _literal(value: Any, dtype: pl.DataType) -> Any:
    """Cast a literal to the column's type (ISO text for datetimes, numbers for integers)."""
    if isinstance(dtype, pl.Datetime) and isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise SearchSyntaxError(f"{value!r} is not an ISO timestamp") from None
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    if isinstance(dtype, pl.Datetime) and isinstance(value, (int, float)):  # MLflow: epoch ms
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    if dtype.is_numeric() and isinstance(value, str):
        raise SearchSyntaxError(f"compare this attribute with a number, not {value!r}")
    return value


def _expr(clause: Clause, schema: pl.Schema) -> pl.Expr:
    column = clause.column
    if column not in schema:  # a metric/param/tag no run has: nothing matches
        return pl.lit(False)
    col = pl.col(column)
    dtype = schema[column]
    op, value = clause.op, clause.value
    if column == "status":  # MLflow spells statuses in capitals: FINISHED == finished
        value = tuple(v.lower() for v in value) if isinstance(value, tuple) else str(value).lower()
    if op in ("like", "ilike"):
        if not isinstance(value, str):
            raise SearchSyntaxError(f"LIKE needs a quoted pattern, got {value!r}")
        return (
            col.cast(pl.String)
            .str.contains(_like_regex(value, case_insensitive=op == "ilike"))
            .fill_null(False)
        )
    if op in ("in", "not in"):
        values = [_literal(v, dtype) for v in value]
        expr = col.is_in(pl.Series(values, dtype=dtype, strict=False).implode())
        return (expr if op == "in" else ~expr).fill_null(False)
    lit = _literal(value, dtype)
    table = {"=": col.eq, "!=": col.ne, "<": col.lt, "<=": col.le, ">": col.gt, ">=": col.ge}
    return table[op](lit).fill_null(False)


def apply(
    frame: pl.DataFrame,
    clauses: Sequence[Clause],
    order: Sequence[tuple[str, bool]],
    max_results: int | None,
) -> pl.DataFrame:
    """Filter, sort (nulls last, run_id as the final tie-break) and cut ``frame``."""
    schema = frame.schema
    if clauses:
        expr = _expr(clauses[0], schema)
        for c in clauses[1:]:
            expr = expr & _expr(c, schema)
        frame = frame.filter(expr)
    by = [c for c, _ in order if c in schema] + ["run_id"]
    desc = [d for c, d in order if c in schema] + [False]
    if max_results is not None and max_results < frame.height and len(by) >= 1:
        idx = frame.select(pl.arg_sort_by(by, descending=desc, nulls_last=True)).to_series()
        return frame[idx.head(max_results)]
    frame = frame.sort(by, descending=desc, nulls_last=True)
    return frame.head(max_results) if max_results is not None else frame
