"""The SQL worker process: runs one checked query at a time on a fresh, locked DuckDB connection.

``python -c "from core.sql._worker import main; main(RFD, WFD)"``: reads pickled jobs (the
statement, pinned pyarrow datasets, derived view definitions, limits) from one pipe and answers
on the other with framed messages: ``S`` the query starts, ``B`` an Arrow IPC stream (the schema first, then one per
batch), then ``D`` done, ``L`` a result limit was passed, or ``E`` an error. It stops reading
a result as soon as a limit is passed. This module imports only duckdb, pyarrow and
``core.errors``, so a worker starts in about half a second.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import duckdb
import pyarrow as pa

from core.sql._statements import first_line

__all__ = ["BATCH_ROWS", "main"]

BATCH_ROWS = 65_536

def _connect(memory_limit: str, threads: int) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(
        config={
            "enable_external_access": False,
            "memory_limit": memory_limit,
            "threads": threads,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            # No spill: a read-only console query must not fill the disk (4.6 GB measured in
            # <cwd>/.tmp), and with no temp directory DuckDB has no allowed directory either.
            "temp_directory": "",
        }
    )
    # UTC, not the host's zone: results keep the lake's UTC type and ::date / hour() agree with
    # the `day` partitions. TimeZone cannot go in the connect config (ICU loads after it).
    con.execute("set TimeZone = 'UTC'")
    con.execute("set lock_configuration = true")
    return con


def _ipc(schema: pa.Schema, batches: Sequence[pa.RecordBatch]) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return bytes(sink.getvalue())


def _classify(exc: BaseException) -> dict[str, str]:
    """A DuckDB error as ``{"kind", "message"}`` for the caller to turn into a lakeops error."""
    msg = first_line(exc)
    low = msg.lower()
    if isinstance(exc, duckdb.PermissionException):
        kind = "files"
    elif isinstance(exc, duckdb.InterruptException) or "interrupted" in low:
        kind = "timeout"
    elif isinstance(exc, duckdb.OutOfMemoryException) or "out of memory" in low:
        kind = "memory"
    elif isinstance(exc, duckdb.InvalidInputException) and ("lock" in low or "disabled" in low):
        kind = "refused"
    elif isinstance(exc, duckdb.CatalogException):
        kind = "catalog"
    else:
        kind = "error"
    if not isinstance(exc, duckdb.Error) and kind == "error":
        msg = f"{type(exc).__name__}: {msg}"
    return {"kind": kind, "message": msg}


def _serve(job: dict[str, Any], tx: Connection) -> None:
    """Run one job and stream its result: ``B`` Arrow IPC, then ``D`` done, ``L`` limit or ``E`` error."""
    con = None
    try:
        con = _connect(job["memory_limit"], job["threads"])
        for name, ds in job["datasets"].items():
            con.register(name, ds)
        for name, body in job["views"]:
            con.execute(f"create temp view {name} as {body}")
        timer = threading.Timer(job["timeout_s"], con.interrupt)
        timer.daemon = True
        tx.send_bytes(b"S")
        timer.start()
        try:
            # duckdb 1.x (which pyproject still allows) gives None for a statement with no result; 2.x never
            rel: duckdb.DuckDBPyRelation | None = con.sql(job["sql"], params=job["params"] or None)
            if rel is None:
                tx.send_bytes(b"B" + _ipc(pa.schema([]), []))
                tx.send_bytes(b"D{}")
                return
            reader = rel.to_arrow_reader(BATCH_ROWS)
            tx.send_bytes(b"B" + _ipc(reader.schema, []))
            rows = size = 0
            for batch in reader:
                rows += batch.num_rows
                size += batch.nbytes
                for what, used, limit in (("rows", rows, job["max_rows"]), ("bytes", size, job["max_bytes"])):
                    if limit is not None and used > limit:
                        tx.send_bytes(b"L" + json.dumps({"what": what, "limit": limit}).encode())
                        return
                tx.send_bytes(b"B" + _ipc(reader.schema, [batch]))
            tx.send_bytes(b"D" + json.dumps({"rows": rows}).encode())
        finally:
            timer.cancel()
    except (BrokenPipeError, ConnectionResetError):
        raise
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller as one line
        tx.send_bytes(b"E" + json.dumps(_classify(exc)).encode())
    finally:
        if con is not None:
            con.close()


def main(rfd: int, wfd: int) -> None:
    """Entry point of a worker process: serve pickled jobs until the request pipe closes."""
    import pyarrow.dataset  # noqa: F401 - DuckDB recognises datasets only once it is imported

    rx, tx = Connection(rfd, writable=False), Connection(wfd, readable=False)
    while True:
        try:
            payload = rx.recv_bytes()
        except (EOFError, OSError):
            break
        try:
            # trusted: the only writer is the process that started this worker
            _serve(pickle.loads(payload), tx)  # noqa: S301
        except (BrokenPipeError, ConnectionResetError, EOFError):
            break
    sys.stdout.flush()
    os._exit(0)  # deltalake/arrow native threads can abort a normal interpreter exit (LAKE-FACTS)
