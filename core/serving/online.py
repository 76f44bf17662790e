"""Online features in the prediction service: in-memory online values and the codec that fills them in.

A model trained on a training set of feature views carries ``feature_views`` in its signature
(``core.flows.train``): for each view version, its entity key (a pass-through field) and the
model features it provides. For such a model a request sends the entity key and the
request-time features only; ``OnlineCodec`` decodes them with the ordinary ``Codec`` (the same
msgspec decoder and checks), looks each entity up in the view version's current online values
(``core.features.online``, held in memory by ``OnlineStores`` and reloaded when the online
table gets a commit) and writes the values into the matrix in signature order, encoded exactly
as ``Model.encode`` encodes the training frame (numbers as float64, null as NaN, categorical
values as their level's index). The matrix is what the model scores and what the prediction log
records, so drift monitoring sees the values the model saw.

A missing entity, under the view's ``missing`` policy: with ``"error"`` a row without the
entity key is a 422 naming the field, and a key with no online row a 422 ``unknown-entity``
problem naming the field and rows; with ``"default"`` both get each feature's default, the
value a training row of an entity without source rows gets (the key is logged as sent, null
when absent, so monitoring can count such rows). No online values loaded for a view version at
all: 503 (``features-unavailable``).

Models without ``feature_views`` get the plain ``Codec``: their path is unchanged.

``check_skew`` scores entities both ways (the training path: ``core.features.values_at`` on the
source version the online row was computed from, at its ``__as_of``, then ``Model.encode``; the
serving path: a JSON request through ``OnlineCodec``) and reports the largest differences.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import numpy as np
import polars as pl

from core import features
from core.errors import DataValidationError, FeatureViewError, LakeopsError
from core.lake import Lake
from core.serving.problems import ProblemError
from core.serving.schemas import Codec, Decoded

__all__ = [
    "OnlineCodec",
    "OnlineSnapshot",
    "OnlineStores",
    "SkewReport",
    "check_skew",
    "codec_for",
    "request_signature",
]

_log = logging.getLogger("lakeops.serving")
_NAN = float("nan")


def request_signature(signature: Mapping[str, Any]) -> dict[str, Any]:
    """The signature of what a request carries: the model's features minus those its views fill in."""
    filled = {f for v in signature.get("feature_views") or () for f in v["features"]}
    return {**signature, "features": [f for f in signature["features"] if f["name"] not in filled]}


@dataclass(frozen=True)
class OnlineSnapshot:
    """One view version's current online values, indexed by entity.

    Attributes:
        view: the view; ``version`` its version.
        entity: the entity column.
        index: entity value -> row.
        numeric: float64 matrix (rows x numeric features, ``numeric_names`` order): values cast
            to float64, null as NaN (``Model.encode``'s rule).
        strings: per string feature, its values (object array, None for null).
        table_version: the online table version read.
        as_of: the newest ``__as_of`` among the rows.
    """

    view: str
    version: int
    entity: str
    index: dict[Any, int]
    numeric_names: list[str]
    numeric: np.ndarray
    strings: dict[str, np.ndarray]
    table_version: int
    as_of: Any
    rows: int

    @classmethod
    def load(cls, view: str, version: int, *, lake: Lake) -> OnlineSnapshot:
        """Read a view version's current values from the lake (``core.features.current_values``)."""
        frame, tv = features.current_values(view, version, lake=lake)
        fv = features.get_view(view, version, lake=lake)
        names = fv.feature_names
        numeric_names = [n for n in names if frame.schema[n] != pl.String]
        numeric = np.ascontiguousarray(
            frame.select([pl.col(n).cast(pl.Float64).fill_null(_NAN) for n in numeric_names]).to_numpy(), dtype=np.float64
        ).reshape(frame.height, len(numeric_names))
        strings = {n: frame[n].to_numpy() for n in names if frame.schema[n] == pl.String}
        keys = frame[fv.entity].to_list()
        return cls(view, version, fv.entity, dict(zip(keys, range(len(keys)), strict=True)), numeric_names, numeric,
                   strings, tv, frame["__as_of"].max() if frame.height else None, frame.height)


class _Holder:
    """The current snapshot of one view version (swapped whole; a request reads it once)."""

    __slots__ = ("error", "snapshot", "version_seen")

    def __init__(self) -> None:
        self.snapshot: OnlineSnapshot | None = None
        self.version_seen = -2
        self.error: str | None = None


class OnlineStores:
    """The online values of every view version a loaded model uses, kept current by ``refresh``.

    Args:
        lake: the lake holding ``online/<view>_v<N>``.
    """

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self._holders: dict[tuple[str, int], _Holder] = {}
        self._lock = threading.Lock()

    def holder(self, view: str, version: int) -> _Holder:
        """The holder of a view version, loaded now when it is new (blocking: model-load time)."""
        key = (view, version)
        with self._lock:
            h = self._holders.get(key)
            if h is None:
                h = self._holders[key] = _Holder()
        if h.snapshot is None:
            self._reload(key, h)
        return h

    def _reload(self, key: tuple[str, int], h: _Holder) -> None:
        table = features.online_table(*key)
        try:
            seen = self.lake.latest_version_hint(table)
            if seen == h.version_seen:
                return
            if seen < 0:
                h.version_seen, h.error = seen, f"{key[0]} v{key[1]} has never been materialised"
                return
            h.snapshot = OnlineSnapshot.load(key[0], key[1], lake=self.lake)  # the atomic swap
            h.version_seen, h.error = seen, None
            _log.info("online features %s v%s: %d entities (table v%s)", key[0], key[1], h.snapshot.rows, seen)
        except LakeopsError as exc:
            h.error = str(exc)
            _log.warning("online features %s v%s could not be loaded: %s", key[0], key[1], exc)

    def refresh(self) -> None:
        """Reload every view version whose online table got a commit (one listing each)."""
        with self._lock:
            items = list(self._holders.items())
        for key, h in items:
            self._reload(key, h)

    def status(self) -> dict[str, Any]:
        """Per view version: entities, table version and newest ``as_of`` loaded, or the error."""
        out: dict[str, Any] = {}
        with self._lock:
            items = list(self._holders.items())
        for (view, version), h in sorted(items):
            snap = h.snapshot
            out[f"{view}@v{version}"] = {
                "entities": snap.rows if snap else 0, "table_version": snap.table_version if snap else None,
                "as_of": snap.as_of.isoformat() if snap is not None and snap.as_of is not None else None,
                "error": h.error,
            }
        return out


@dataclass
class _ViewFill:
    """What the codec needs to fill one view's features into the matrix."""

    entity: str
    holder: _Holder
    name: str
    missing: str
    positions: list[int] = field(default_factory=list)  # matrix columns of the numeric features
    numeric_src: np.ndarray | None = None  # their columns in the snapshot's numeric matrix
    strings: list[tuple[int, str, dict[str, float]]] = field(default_factory=list)  # (column, feature, level -> code)
    defaults: np.ndarray = field(default_factory=lambda: np.zeros(0))  # the encoded default of every feature
    all_positions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    # the fast layout: every feature of the view numeric, in the model, contiguous and in view order,
    # so the snapshot's matrix row is copied as it is into X[:, slice]
    slice: slice | None = None
    snapshot_names: list[str] | None = None
    request: _RequestFill | None = None  # the view's request features, computed after the lookup


@dataclass
class _RequestFill:
    """A view's request features: computed per request by ``FeatureView.request_values`` (the training set's code)."""

    plan: features.RequestPlan
    # (input name, matrix column or -1 for a pass-through field, levels of a categorical column or None)
    inputs: list[tuple[str, int, list[str] | None]]
    # (request feature, matrix column, levels of a categorical feature or None)
    outputs: list[tuple[str, int, list[str] | None]]
    # the matrix columns of the plan's numeric inputs, when every one is a numeric model feature (one gather)
    block_cols: np.ndarray | None = None


class OnlineCodec:
    """A ``Codec`` for a model with feature views: request fields decoded as usual, view features looked up.

    Exposes what the service and the log writer read from a codec (``names``, ``levels``,
    ``signature``, ``decode``...) for the *whole* signature.
    """

    def __init__(
        self, signature: Mapping[str, Any], *, stores: OnlineStores, unknown_category: Literal["error", "missing"],
        max_rows: int,
    ) -> None:
        self.signature = dict(signature)
        self.inner = Codec(request_signature(signature), unknown_category=unknown_category, max_rows=max_rows)
        feats = list(signature["features"])
        self.features = feats
        self.names = [f["name"] for f in feats]
        self.categorical = [f["name"] for f in feats if f["kind"] == "categorical"]
        self.levels = {f["name"]: list(f.get("levels") or []) for f in feats if f["kind"] == "categorical"}
        self.names_raw = msgspec.Raw(msgspec.msgpack.encode(self.names))
        self.levels_raw = msgspec.Raw(msgspec.msgpack.encode(self.levels))
        self.passthrough = self.inner.passthrough
        self._pt = self.inner._pt
        self.max_rows = max_rows
        self.unknown_category = unknown_category
        self._width = len(feats)
        pos = {n: i for i, n in enumerate(self.names)}
        self._req_pos = np.array([pos[n] for n in self.inner.names], dtype=np.intp)
        pt_names = {p["name"] for p in self.inner.passthrough}
        self._views: list[_ViewFill] = []
        for v in signature["feature_views"]:
            if v["entity"] not in pt_names:
                raise FeatureViewError(f"feature view {v['view']!r}: its entity {v['entity']!r} is not a pass-through field of the model")
            h = stores.holder(v["view"], int(v["version"]))
            fill = _ViewFill(v["entity"], h, f"{v['view']} v{v['version']}", v.get("missing", "error"))
            fill.request = self._request_fill(v, stores.lake, pos, feats, pt_names)
            computed = {o[0] for o in fill.request.outputs} if fill.request else set()
            looked_up = [name for name in v["features"] if name not in computed]
            defaults = np.full(len(looked_up), _NAN)
            fill.all_positions = np.array([pos[name] for name in looked_up], dtype=np.intp)
            for k, name in enumerate(looked_up):
                f = feats[pos[name]]
                d = (v.get("defaults") or {}).get(name)
                if f["kind"] == "categorical":
                    lookup = {level: float(i) for i, level in enumerate(f.get("levels") or [])}
                    fill.strings.append((pos[name], name, lookup))
                    defaults[k] = lookup.get(d, _NAN) if d is not None else _NAN
                else:
                    fill.positions.append(pos[name])
                    defaults[k] = float(d) if d is not None else _NAN
            fill.defaults = defaults
            first = int(fill.all_positions[0]) if fill.all_positions.size else 0
            if not fill.strings and list(fill.all_positions) == list(range(first, first + len(looked_up))):
                fill.slice = slice(first, first + len(looked_up))
                fill.snapshot_names = looked_up  # a snapshot with exactly these numeric columns
            self._views.append(fill)
        k = self._req_pos.size
        self._req_slice = slice(0, k) if list(self._req_pos) == list(range(k)) else None

    @staticmethod
    def _request_fill(v: Mapping[str, Any], lake: Lake, pos: Mapping[str, int], feats: Sequence[Mapping[str, Any]],
                      pt_names: set[str]) -> _RequestFill | None:
        """How to compute a view's request features: each input from the matrix (a model feature) or
        the pass-through fields; None for a view without request features.

        Raises:
            FeatureViewError: an input the request cannot carry (neither a model feature nor a
                pass-through field).
        """
        fv = features.get_view(v["view"], int(v["version"]), lake=lake)
        wanted = [f.name for f in fv.request_features if f.name in v["features"]]
        if not wanted:
            return None
        inputs: list[tuple[str, int, list[str] | None]] = []
        for name in fv.request_inputs:
            if name in pos:
                f = feats[pos[name]]
                inputs.append((name, pos[name], list(f.get("levels") or []) if f["kind"] == "categorical" else None))
            elif name in pt_names:
                inputs.append((name, -1, None))
            else:
                raise FeatureViewError(
                    f"feature view {fv.name!r} v{fv.version}: request features need {name!r}, which is neither a feature "
                    "nor a pass-through field of the model (train with --passthrough to let requests carry it)"
                )
        outputs: list[tuple[str, int, list[str] | None]] = []
        for name in wanted:
            f = feats[pos[name]]
            outputs.append((name, pos[name], list(f.get("levels") or []) if f["kind"] == "categorical" else None))
        schema = features.view_schema(fv.name, int(fv.version or 0), lake=lake)
        plan = fv.request_plan(schema)
        where = {name: col for name, col, levels in inputs if levels is None}
        for name, col, levels in inputs:
            if (name in plan.numeric) != (levels is None and col >= 0) and col >= 0:
                raise FeatureViewError(
                    f"feature view {fv.name!r} v{fv.version}: request field {name!r} is declared "
                    f"{'a number' if name in plan.numeric else 'a string'} but the model takes it as "
                    f"{'categorical' if levels is not None else 'numeric'}"
                )
        cols = [where.get(name, -1) for name in plan.numeric]
        block_cols = np.array(cols, dtype=np.intp) if all(c >= 0 for c in cols) else None
        return _RequestFill(plan, inputs, outputs, block_cols)

    @staticmethod
    def _compute_request(r: _RequestFill, X: np.ndarray, pt: Mapping[str, Any], n: int) -> None:
        """Write a view's request features into ``X`` from the request fields and the looked-up features
        (``RequestPlan.values_block``; categorical values decoded from, and encoded to, level indexes
        as ``Model.encode`` does)."""
        block = X[:, r.block_cols] if r.block_cols is not None else np.empty((n, len(r.plan.numeric)))
        strings: dict[str, pl.Series] = {}
        for name, col, levels in r.inputs:
            if col < 0:  # a pass-through field
                values = pl.Series(name, pt.get(name) or [None] * n, strict=False)
                if name in r.plan.strings:
                    strings[name] = values
                else:
                    block[:, r.plan.numeric.index(name)] = values.cast(pl.Float64, strict=False).to_numpy()
            elif levels is None:
                if r.block_cols is None:
                    block[:, r.plan.numeric.index(name)] = X[:, col]
            else:
                codes = X[:, col]  # a level's index, NaN for null/unknown: the last slot of ``table`` (None)
                table = np.asarray([*levels, None], dtype=object)
                idx = np.where(np.isnan(codes), len(levels), codes).astype(np.intp)
                strings[name] = pl.Series(name, table[idx].tolist(), dtype=pl.String)
        out = r.plan.values_block(block, strings)
        for name, col, levels_out in r.outputs:
            s = out[name]
            if levels_out is None:
                X[:, col] = s.cast(pl.Float64).to_numpy()  # null -> NaN (``Model.encode``'s rule)
            else:
                X[:, col] = (s.cast(pl.String).replace_strict(levels_out, list(range(len(levels_out))), default=None,
                                                              return_dtype=pl.Float64).fill_null(_NAN).to_numpy())

    def decode(self, body: bytes) -> Decoded:
        """Decode a request and fill in the view features (see the module docstring).

        Raises:
            ProblemError: not JSON (400), unknown entities under ``missing = "error"`` (422
                ``unknown-entity``), no online values loaded (503).
            DataValidationError: the request fields do not fit the signature, or an entity key
                is missing (422, naming row and field).
        """
        return self._fill(self.inner.decode(body))

    def decode_arrow(self, body: bytes) -> Decoded:
        """``decode`` for an Arrow IPC stream body (request fields and entity keys as columns)."""
        return self._fill(self.inner.decode_arrow(body))

    def _fill(self, d: Decoded) -> Decoded:
        """The full matrix: the request's features where they go, each view's online values by entity key.

        Training sets put the view features after the label dataset's columns, so the usual
        layout is [request features | view 1 | view 2 ...]: then every copy is a slice
        assignment (a 1-row request costs a few microseconds more than with the values sent).
        """
        n = d.rows
        X = np.empty((n, self._width), dtype=np.float64)
        if self._req_slice is not None:
            X[:, self._req_slice] = d.X
        elif self._req_pos.size:
            X[:, self._req_pos] = d.X
        pt = d.passthrough or {}
        for v in self._views:
            self._lookup(v, X, pt, n)
            if v.request is not None:  # after the lookup: request features read the view's values
                self._compute_request(v.request, X, pt, n)
        return Decoded(X, n, d.unknown, d.passthrough)

    def _lookup(self, v: _ViewFill, X: np.ndarray, pt: Mapping[str, Any], n: int) -> None:
        """Copy one view's online values into ``X`` by entity key (defaults or a problem per its policy)."""
        keys = pt.get(v.entity)
        if keys is None and v.missing == "default":
            keys = [None] * n  # no key at all: every row is an entity without values
        if v.missing == "error" and (keys is None or None in keys):
            rows = list(range(n)) if keys is None else [i for i, k in enumerate(keys) if k is None]
            raise DataValidationError(
                f"row {rows[0]}, {v.entity}: the entity key is required: the model's features {v.name} are looked up by it",
                report=[{"row": i, "field": v.entity, "message": "missing entity key"} for i in rows[:20]],
            )
        snap = v.holder.snapshot
        if snap is None:
            raise ProblemError(503, "features-unavailable",
                               f"online features {v.name} are not loaded: {v.holder.error or 'not materialised yet'}")
        get = snap.index.get
        if n == 1:
            r = get(keys[0], -1)  # type: ignore[index]
            unknown = [0] if r < 0 else []
            if r >= 0 and v.slice is not None and snap.numeric_names == v.snapshot_names:
                X[0, v.slice] = snap.numeric[r]
                return
            idx = [r]
        else:
            idx = [get(k, -1) for k in keys]  # type: ignore[union-attr]
            unknown = [i for i, r in enumerate(idx) if r < 0] if -1 in idx else []  # a None key is unknown too
        if unknown and v.missing == "error":
            first = unknown[0]
            raise ProblemError(
                422, "unknown-entity",
                f"{len(unknown)} {v.entity} value(s) have no online features in {v.name}; first: row {first}, "
                f"{v.entity}={keys[first]!r}",  # type: ignore[index]
                [{"row": i, "field": v.entity, "message": f"unknown entity {keys[i]!r}: no online features"}  # type: ignore[index]
                 for i in unknown[:20]],
            )
        if snap.rows:
            at = np.array(idx, dtype=np.intp)  # -1 (unknown) reads the last row; overwritten below
            if v.slice is not None and snap.numeric_names == v.snapshot_names:
                X[:, v.slice] = snap.numeric[at]
            else:
                if v.positions:
                    X[:, v.positions] = snap.numeric[at][:, self._numeric_cols(v, snap)]
                for col, name, lookup in v.strings:
                    X[:, col] = [lookup.get(x, _NAN) if x is not None else _NAN for x in snap.strings[name][at]]
        if unknown:
            X[np.array(unknown)[:, None], v.all_positions[None, :]] = v.defaults

    def _numeric_cols(self, v: _ViewFill, snap: OnlineSnapshot) -> np.ndarray:
        """The snapshot matrix's columns of the view's numeric model features (same for every
        snapshot of a view version: the definition fixes the order)."""
        if v.numeric_src is None:
            v.numeric_src = np.array([snap.numeric_names.index(self.names[p]) for p in v.positions], dtype=np.intp)
        return v.numeric_src


def codec_for(
    signature: Mapping[str, Any], *, stores: OnlineStores, unknown_category: Literal["error", "missing"], max_rows: int
) -> Codec | OnlineCodec:
    """The codec of a model version: ``OnlineCodec`` when its signature names feature views, else ``Codec``."""
    if signature.get("feature_views"):
        return OnlineCodec(signature, stores=stores, unknown_category=unknown_category, max_rows=max_rows)
    return Codec(signature, unknown_category=unknown_category, max_rows=max_rows)


# ---------------------------------------------------------------------------- skew check
@dataclass(frozen=True)
class SkewReport:
    """Offline (training path) against online (serving path) for the same entities.

    Attributes:
        model: the model; ``version`` its version.
        entities: entities compared (``unknown_entities`` of them absent from the online values,
            served by default).
        max_feature_diff: largest absolute difference between the two feature matrices (NaN
            against NaN counts as equal; NaN against a number as infinite).
        max_score_diff: largest absolute score difference.
        tolerance: what counts as identical.
        rows: per entity: the entity, both scores and the largest feature difference.
        api_max_score_diff: the same for scores returned by a running API (None when not asked).
    """

    model: str
    version: int
    entities: int
    unknown_entities: int
    max_feature_diff: float
    max_score_diff: float
    tolerance: float
    rows: pl.DataFrame
    views: list[str]
    api_max_score_diff: float | None = None

    @property
    def identical(self) -> bool:
        """True when vectors and scores agree within ``tolerance`` (and the API's, when asked)."""
        ok = self.max_feature_diff <= self.tolerance and self.max_score_diff <= self.tolerance
        return ok and (self.api_max_score_diff is None or self.api_max_score_diff <= self.tolerance)


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row max |a - b| with NaN == NaN and NaN != number (inf)."""
    both = np.isnan(a) & np.isnan(b)
    d = np.where(both, 0.0, np.abs(a - b))
    d = np.where(np.isnan(d), np.inf, d)
    return d.max(axis=1) if d.ndim == 2 and d.shape[1] else np.zeros(a.shape[0])


def check_skew(
    model: str,
    *,
    version: int | None = None,
    entities: int = 100,
    seed: int = 0,
    tolerance: float = 1e-12,
    api: str | None = None,
    token: str | None = None,
    lake: Lake,
) -> SkewReport:
    """Score entities through the training path and the serving path; report the largest differences.

    Entities are drawn (seeded) from those in both the model's training set and every view's
    online values; their request-time fields are their newest training-set row. With a view
    whose ``missing = "default"``, one entity absent from the online values is added, to check
    that its defaults equal what the training path gives an entity without source rows.

    Args:
        model: the model; ``version`` its version (champion by default).
        entities: how many entities to compare.
        seed: the sampling seed.
        tolerance: the largest difference that counts as identical.
        api: also POST the requests to a running API (``http://127.0.0.1:8000``) and compare its scores.
        token: the bearer token for ``api`` when its auth is on (a token with the ``predict`` scope).
        lake: the lake.

    Raises:
        FeatureViewError: the model has no feature views, or no entity to compare.
    """
    from core import datasets, registry

    v = version if version is not None else registry.resolve_version(model, lake=lake)
    loaded = registry.load(model, version=v, lake=lake)
    sig = loaded.signature
    views = list(sig.get("feature_views") or ())
    if not views:
        raise FeatureViewError(f"model {model!r} v{v} was not trained on feature views; nothing to compare")
    mv = registry.get_version(model, v, lake=lake)
    if mv.dataset_name is None:
        raise FeatureViewError(f"model {model!r} v{v} records no training dataset; nothing to compare")
    train = datasets.load(mv.dataset_name, mv.dataset_version, lake=lake)
    stores = OnlineStores(lake)
    codec = OnlineCodec(sig, stores=stores, unknown_category="missing", max_rows=max(entities + len(views), 1))
    snaps = []
    for fill, spec in zip(codec._views, views, strict=True):
        if fill.holder.snapshot is None:
            raise FeatureViewError(f"{spec['view']} v{spec['version']} has no online values: {fill.holder.error}")
        snaps.append(fill.holder.snapshot)
    entity = views[0]["entity"]
    time_col = sig.get("time_column")
    pool = train.filter(pl.col(entity).is_not_null())
    if time_col and time_col in pool.columns:
        pool = pool.sort(time_col)
    pool = pool.unique(entity, keep="last", maintain_order=True)
    for snap in snaps:
        pool = pool.filter(pl.col(snap.entity).is_in(list(snap.index)))
    if pool.height == 0:
        raise FeatureViewError(f"no entity of {model!r}'s training set has online values in every view")
    rng = np.random.default_rng(seed)
    pick = pool[np.sort(rng.choice(pool.height, min(entities, pool.height), replace=False))]
    unknown = 0
    if any(s.get("missing") == "default" for s in views) and len(views) == 1:
        stranger = pick.head(1).with_columns(_stranger(pick[entity]).alias(entity))
        pick, unknown = pl.concat([pick, stranger]), 1
    req_names = list(codec.inner.names)
    offline = pick.drop([f for s in views for f in s["features"] if f in pick.columns])
    for spec, snap in zip(views, snaps, strict=True):
        offline = offline.with_columns(_offline_values(spec, snap, offline, lake=lake))
    X_off = loaded.model.encode(offline)
    s_off = loaded.model.predict_matrix(X_off)
    extra = [name for fill in codec._views if fill.request for name, col, _ in fill.request.inputs if col < 0]
    body = msgspec.json.encode([_request_row(r, req_names, views, extra) for r in pick.iter_rows(named=True)])
    X_on = codec.decode(body).X
    s_on = loaded.model.predict_matrix(X_on)
    fdiff = _diff(X_off, X_on)
    sdiff = np.abs(s_off - s_on)
    api_diff = None
    if api is not None:
        import httpx

        resp = httpx.post(f"{api.rstrip('/')}/v1/models/{model}/predict?version={v}", content=body,
                          headers={"content-type": "application/json",
                                   **({"authorization": f"Bearer {token}"} if token else {})}, timeout=30.0)
        if resp.status_code != 200:
            raise FeatureViewError(f"the API at {api} answered {resp.status_code}: {resp.text[:300]}")
        api_diff = float(np.max(np.abs(np.asarray(resp.json()["scores"]) - s_off), initial=0.0))
    rows = pl.DataFrame({entity: pick[entity].cast(pl.String), "score_offline": s_off, "score_online": s_on,
                         "max_feature_diff": fdiff})
    return SkewReport(model, v, pick.height, unknown, float(fdiff.max(initial=0.0)), float(sdiff.max(initial=0.0)),
                      tolerance, rows, [f"{s['view']}@v{s['version']}" for s in views], api_diff)


def _stranger(keys: pl.Series) -> pl.Expr:
    """An entity value no training row or online row has (of the key's type)."""
    if keys.dtype.is_integer():
        top = keys.max()
        return pl.lit((top if isinstance(top, int) else 0) + 10_000_000, dtype=keys.dtype)
    return pl.lit("__lakeops_skew_check_unknown__")


def _offline_values(spec: Mapping[str, Any], snap: OnlineSnapshot, rows: pl.DataFrame, *, lake: Lake) -> list[pl.Series]:
    """The training path's values of a view's features for ``rows`` (``features.view_values``: the
    lookup, then the request features from the rows' request fields), each entity at the time and
    source version its online row was computed from (entities without an online row: at that
    snapshot's newest time)."""
    fv = features.get_view(spec["view"], int(spec["version"]), lake=lake)
    keys = rows[fv.entity]
    online, _ = features.current_values(fv.name, int(spec["version"]), lake=lake)
    meta = keys.to_frame(fv.entity).with_row_index("__k").join(
        online.select(fv.entity, "__as_of", "__source_version"), on=fv.entity, how="left")
    meta = meta.with_columns(
        pl.col("__as_of").fill_null(snap.as_of), pl.col("__source_version").fill_null(online["__source_version"].max())
    ).sort("__k")
    out: list[pl.DataFrame] = []
    order: list[np.ndarray] = []
    for sv in meta["__source_version"].unique().sort().to_list():
        part = meta.filter(pl.col("__source_version") == sv)
        events, _ = features.load_source(fv, int(sv), lake=lake)
        prepared = features.prepare(fv, events, schema=features.view_schema(fv.name, int(spec["version"]), lake=lake))
        out.append(features.view_values(prepared, rows[part["__k"]], part[fv.entity], part["__as_of"]))
        order.append(part["__k"].to_numpy())
    frame = pl.concat(out)
    inverse = np.empty(keys.len(), dtype=np.int64)
    inverse[np.concatenate(order)] = np.arange(keys.len())
    frame = frame[inverse]
    return [frame[name] for name in spec["features"]]


def _request_row(row: Mapping[str, Any], req_names: Sequence[str], views: Sequence[Mapping[str, Any]],
                 extra: Sequence[str] = ()) -> dict[str, Any]:
    out = {n: _jsonable(row[n]) for n in req_names}
    for spec in views:
        out[spec["entity"]] = row[spec["entity"]]
    for n in extra:  # request fields the model takes as pass-through fields only
        out[n] = _jsonable(row[n])
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
