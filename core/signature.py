"""The model signature as one typed, immutable struct: ``Signature`` (with ``Feature``, ``PassThrough`` and
``FeatureViewRef``), and its JSON form.

The JSON form is the one stored with every run (``model/signature.json``) and registered version
(``signature_json``) since lakeops' first models; ``Signature.to_dict`` writes it key for key as
before, and ``Signature.from_dict``/``from_json`` read it back, older signatures included: the keys
added over time (``passthrough`` and ``feedback_key`` with pass-through fields, ``feature_views``
with the feature store) are optional, with their defaults defined here once::

    {"task": "binary" | "regression", "target": str, "threshold": float,      # threshold: 0.5
     "time_column": str | None,                                               # None
     "features": [{"name": str, "kind": "numeric" | "categorical", "dtype": str,
                   "levels": [str, ...]}],          # levels only for categorical features
     "passthrough": [{"name": str, "type": "string" | "integer" | "number" | "datetime" | "date",
                      "role": "id" | "event_time" | "segment"}],               # []
     "feedback_key": str | None,                                              # None
     "feature_views": [{"view": str, "version": int, "hash": str, "entity": str,
                        "features": [str, ...], "missing": str, "defaults": {str: value}}]}
                                                    # only written when the model has views

A key that is missing (and required) or unknown is an error naming it (``SignatureError``).
Code converts once, where a signature comes in as JSON (run artifacts, the registry, an HTTP
answer, a Dask worker's argument) with ``as_signature``, and reads attributes everywhere else.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import msgspec

from core.errors import SignatureError

__all__ = [
    "Feature", "FeatureViewRef", "Kind", "PassThrough", "PassThroughType", "Role", "Signature", "as_signature",
    "feature_views_of",
]

Kind = Literal["numeric", "categorical"]
PassThroughType = Literal["string", "integer", "number", "datetime", "date"]
Role = Literal["id", "event_time", "segment"]


class Feature(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One model feature: its name, kind, polars dtype and (categorical only) sorted levels.

    A categorical value is encoded as its index in ``levels``; an unknown or null value as NaN.
    """

    name: str
    kind: Kind
    dtype: str
    levels: tuple[str, ...] = ()

    @property
    def categorical(self) -> bool:
        return self.kind == "categorical"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "dtype": self.dtype}
        if self.kind == "categorical":
            out["levels"] = list(self.levels)
        return out


class PassThrough(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A field a request may carry beside the features: validated and logged, never scored."""

    name: str
    type: PassThroughType
    role: Role

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "role": self.role}


class FeatureViewRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A feature view version the model's training set was built from (a reference to a
    ``core.features.FeatureView``, not the definition itself): serving fills its
    ``features`` from the view's online values by the request's ``entity`` field."""

    view: str
    version: int
    hash: str
    entity: str
    features: tuple[str, ...]
    missing: str = "error"
    defaults: dict[str, Any] = msgspec.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"view": self.view, "version": self.version, "hash": self.hash, "entity": self.entity,
                "features": list(self.features), "missing": self.missing, "defaults": dict(self.defaults)}


class Signature(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a model was trained on and what a request to it carries (see the module docstring)."""

    task: Literal["binary", "regression"]
    target: str
    threshold: float = 0.5
    time_column: str | None = None
    features: tuple[Feature, ...]
    passthrough: tuple[PassThrough, ...] = ()
    feedback_key: str | None = None
    feature_views: tuple[FeatureViewRef, ...] = ()

    # --- derived views (computed on demand: the struct stays plain data) ---

    @property
    def names(self) -> list[str]:
        """The feature names in signature (matrix column) order."""
        return [f.name for f in self.features]

    @property
    def binary(self) -> bool:
        return self.task == "binary"

    @property
    def passthrough_names(self) -> list[str]:
        return [p.name for p in self.passthrough]

    @property
    def entity_key(self) -> str | None:
        """The field that names one entity: the feedback key, else the first ``id`` pass-through field."""
        if self.feedback_key:
            return self.feedback_key
        return next((p.name for p in self.passthrough if p.role == "id"), None)

    @property
    def view_features(self) -> set[str]:
        """The features the feature views fill in (a request may leave them out)."""
        return {f for v in self.feature_views for f in v.features}

    def feature(self, name: str) -> Feature:
        """The feature called ``name`` (KeyError if the model has none)."""
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def replace(self, **changes: Any) -> Signature:
        """A copy with ``changes`` (the struct is immutable)."""
        return msgspec.structs.replace(self, **changes)

    # --- the JSON form ---

    def to_dict(self) -> dict[str, Any]:
        """The stored JSON form, key for key as lakeops has always written it."""
        out: dict[str, Any] = {
            "task": self.task,
            "target": self.target,
            "threshold": self.threshold,
            "time_column": self.time_column,
            "features": [f.to_dict() for f in self.features],
            "passthrough": [p.to_dict() for p in self.passthrough],
            "feedback_key": self.feedback_key,
        }
        if self.feature_views:
            out["feature_views"] = [v.to_dict() for v in self.feature_views]
        return out

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict()).encode("utf-8")

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any] | Signature) -> Signature:
        """Read a stored signature (any version lakeops wrote).

        Raises:
            SignatureError: not an object, a required key missing, an unknown key or a wrong type,
                naming the key and where it is (``$.features[2].kind``).
        """
        if isinstance(obj, Signature):
            return obj
        if not isinstance(obj, Mapping):
            raise SignatureError(f"a model signature is a JSON object, not {type(obj).__name__}")
        try:
            return msgspec.convert(dict(obj), cls)
        except msgspec.ValidationError as exc:
            raise SignatureError(f"invalid model signature: {exc}") from None

    @classmethod
    def from_json(cls, data: bytes | str) -> Signature:
        """Read a stored signature from its JSON text (see ``from_dict``)."""
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise SignatureError(f"a model signature is not valid JSON: {exc}") from None
        return cls.from_dict(obj)


def as_signature(value: Signature | Mapping[str, Any] | bytes | str) -> Signature:
    """The ``Signature`` of a struct, a stored dict or its JSON text (the conversion at a boundary)."""
    if isinstance(value, Signature):
        return value
    if isinstance(value, bytes | str):
        return Signature.from_json(value)
    return Signature.from_dict(value)


def feature_views_of(views: Iterable[Mapping[str, Any]], names: Iterable[str]) -> tuple[FeatureViewRef, ...]:
    """``FeatureViewRef``s from the feature store's training views, keeping only the model's features."""
    keep = set(names)
    return tuple(
        FeatureViewRef(view=v["view"], version=int(v["version"]), hash=v["hash"], entity=v["entity"],
                    features=tuple(f for f in v["features"] if f in keep), missing=v["missing"],
                    defaults={f: d for f, d in v["defaults"].items() if f in keep})
        for v in views
    )
