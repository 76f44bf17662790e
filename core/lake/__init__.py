"""The lake: the only package that touches ``deltalake``.

A lake is a root URI (a local folder, or ``s3://bucket/prefix``) holding one Delta table per
catalog entry (``runs``, ``metrics`` ...) plus per-dataset ``data/<name>`` and per-model
``predictions/<model>`` tables, and an ``artifacts/`` area for model files.

Guarantees (see docs/architecture.md and LAKE-FACTS):
    * appends are validated against the table schema and cast before writing (deltalake would
      silently cast lossy values), one Delta commit per call, retried on a lost commit race;
    * reads are snapshots: a ``pyarrow.dataset`` pinned to one version;
    * time travel by version and by timestamp (a time before the table existed is an error,
      not silently version 0);
    * maintenance = compaction + checkpoint + log cleanup + vacuum (retention >= 24 h) + removal
      of crashed writers' staging files;
    * an ``s3://`` root opened for writing is probed for conditional-write support first.

The package is split along those seams: ``_store`` (root, object store, plain files), ``_tables``
(listing, creating, opening tables), ``_conform`` (rows to the stored schema), ``_writes``,
``_timetravel``, ``_reads``, ``_maintenance``; ``Lake`` joins them.
"""

from __future__ import annotations

from core.lake._common import MaintenanceReport
from core.lake._conform import conform
from core.lake._maintenance import LakeMaintenance
from core.lake._reads import LakeReads
from core.lake._writes import LakeWrites, TableParts

__all__ = ["Lake", "MaintenanceReport", "TableParts", "conform"]


class Lake(LakeWrites, LakeReads, LakeMaintenance):
    """A lake root holding Delta tables; safe to share between threads of one process.

    Args:
        uri: a local folder or ``s3://bucket/prefix``.
        storage_options: object-store options (``AWS_ENDPOINT_URL``, keys, region, ``AWS_ALLOW_HTTP``).
        create: create the local folder when missing.
        check_writes: for ``s3://`` roots, refuse stores that ignore conditional writes.

    Example:
        >>> lake = Lake("/tmp/lake")                                    # doctest: +SKIP
        >>> lake.append("feedback", [{"prediction_id": "p1", "label": 1.0, "at": now}])  # doctest: +SKIP
    """
