"""The one exception hierarchy of lakeops.

Every user-facing error names the thing that is wrong and, where there is one, the fix::

    LakeopsError                      base of everything lakeops raises on purpose
    ├── ConfigError                   a setting or the lakeops.toml is invalid
    ├── LakeError                     the lake could not do what was asked
    │   ├── LakeUnavailableError      the lake root cannot be reached or is not a folder/bucket
    │   ├── UnsafeStoreError          the object store ignores conditional writes (would lose commits)
    │   ├── TableNotFoundError        no such table (or no such version of it)
    │   ├── SchemaMismatchError       rows do not fit the table's schema (names column and problem)
    │   └── CommitConflictError       a commit kept losing races after every retry
    ├── DataValidationError           input data broke rules; carries the report
    ├── NotFoundError                 a named thing does not exist
    │   ├── DatasetNotFoundError
    │   ├── RunNotFoundError
    │   ├── ModelNotFoundError
    │   ├── ModelVersionNotFoundError
    │   └── FeatureViewNotFoundError
    ├── ArtifactIntegrityError        an artifact is missing or its sha256 does not match
    ├── PromotionRefusedError         a promotion the gate or policy does not allow
    ├── AuthError                     who asks is unknown, or may not do what they ask
    │   ├── AuthenticationError       no, malformed, unknown, revoked or expired credentials
    │   └── PermissionDeniedError     a known principal without the scope, role or policy right
    ├── RegistryError                 a registry request that cannot be carried out (bad name, no reason)
    ├── TrainingError                 a training job cannot run with the given input
    │   └── SignatureError            a stored model signature that does not read (names the key)
    ├── FeatureViewError              a feature view definition (or the data it is applied to) cannot be used
    ├── SqlRefusedError               a query the read-only SQL sandbox does not allow
    ├── SqlError                      a query that DuckDB could not run (syntax, unknown column)
    │   └── SqlResultTooLargeError    a result over the row or byte limit (export it instead)
    └── ComputeError                  the Dask cluster cannot be reached, or a distributed job failed

A failed gate is a normal ``GateReport``, not an exception. HTTP status codes live in
``core.serving``; this module knows none.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ArtifactIntegrityError",
    "AuthError",
    "AuthenticationError",
    "CommitConflictError",
    "ComputeError",
    "ConfigError",
    "DataValidationError",
    "DatasetNotFoundError",
    "FeatureViewError",
    "FeatureViewNotFoundError",
    "LakeError",
    "LakeUnavailableError",
    "LakeopsError",
    "ModelNotFoundError",
    "ModelVersionNotFoundError",
    "NotFoundError",
    "PermissionDeniedError",
    "PromotionRefusedError",
    "RegistryError",
    "RunNotFoundError",
    "SchemaMismatchError",
    "SignatureError",
    "SqlError",
    "SqlRefusedError",
    "SqlResultTooLargeError",
    "TableNotFoundError",
    "TrainingError",
    "UnsafeStoreError",
]


class LakeopsError(Exception):
    """Base class of every error lakeops raises on purpose; ``str()`` is one user-facing line."""


class ConfigError(LakeopsError, ValueError):
    """A setting (env var or lakeops.toml) is missing or invalid."""


class LakeError(LakeopsError):
    """The lake could not do what was asked."""


class LakeUnavailableError(LakeError):
    """The lake root cannot be reached, or is a file where a folder is needed."""


class UnsafeStoreError(LakeError):
    """The object store ignores conditional writes, so concurrent commits would be lost."""


class TableNotFoundError(LakeError, LookupError):
    """No table of that name exists in the lake (or not at that version or time)."""


class SchemaMismatchError(LakeError, ValueError):
    """Rows do not fit the table's schema; the message names the column and the problem."""


class CommitConflictError(LakeError):
    """A commit kept losing the race against other writers after every retry."""


class DataValidationError(LakeopsError, ValueError):
    """Input data broke validation rules; ``report`` holds the full report when there is one."""

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


class NotFoundError(LakeopsError, LookupError):
    """A named thing does not exist."""


class DatasetNotFoundError(NotFoundError):
    """No dataset of that name, or no such version of it."""


class RunNotFoundError(NotFoundError):
    """No run with that id."""


class ModelNotFoundError(NotFoundError):
    """No registered model of that name."""


class ModelVersionNotFoundError(NotFoundError):
    """The model exists but not that version (or no version holds that alias)."""


class FeatureViewNotFoundError(NotFoundError):
    """No feature view of that name, or no such version of it."""


class ArtifactIntegrityError(LakeopsError):
    """An artifact is missing or its sha256 does not match the recorded one."""


class PromotionRefusedError(LakeopsError):
    """A promotion that the gate report or the promotion policy does not allow."""


class AuthError(LakeopsError, PermissionError):
    """Who asks is unknown, or may not do what they ask (messages never carry a credential)."""


class AuthenticationError(AuthError):
    """No, malformed, unknown, revoked or expired credentials.

    ``reason`` is one of ``missing``, ``malformed``, ``unknown``, ``invalid``, ``revoked``,
    ``expired`` (the label of the failed-attempt counter).
    """

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class PermissionDeniedError(AuthError):
    """A known principal without the scope, role or policy permission the action needs."""


class TrainingError(LakeopsError, ValueError):
    """A training job cannot run with the given input (unknown target, one class, bad params)."""


class SignatureError(TrainingError):
    """A model signature that does not read: not an object, a required key missing, an unknown key
    or a wrong type (the message names the key and its place, e.g. ``$.features[2].kind``)."""


class FeatureViewError(LakeopsError, ValueError):
    """A feature view definition that does not parse or does not fit its source, or data it cannot
    be applied to (label rows without event times, duplicate entity rows at one time)."""


class RegistryError(LakeopsError, ValueError):
    """A registry request that cannot be carried out: invalid model name, missing reason, bad alias."""


class SqlRefusedError(LakeopsError, PermissionError):
    """A query the read-only SQL sandbox does not allow (file access, writes, settings...)."""


class SqlError(LakeopsError, ValueError):
    """A query DuckDB could not run: syntax error, unknown table or column."""


class SqlResultTooLargeError(SqlError):
    """A query whose result has more rows or bytes than the console returns; export it to a file."""


class ComputeError(LakeopsError):
    """The ``[compute]`` engine cannot run the work: Dask not installed, the scheduler unreachable,
    or a distributed job that failed (a worker lost past Dask's retries)."""
