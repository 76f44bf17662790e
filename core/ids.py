"""Time-sortable ids (UUIDv7) and the one UTC clock."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime

__all__ = ["new_id", "new_ids", "utcnow"]

_lock = threading.Lock()
_last_ms = 0
_seq = 0


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime with microseconds."""
    return datetime.now(UTC)


def _next_stamp() -> tuple[int, int]:
    """Return (unix_ms, 12-bit counter), monotonic within this process."""
    global _last_ms, _seq
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            _seq += 1
            if _seq > 0xFFF:  # counter exhausted within one millisecond: borrow the next one
                ms += 1
                _seq = 0
        else:
            _seq = 0
        _last_ms = ms
        return ms, _seq


def new_id() -> str:
    """Return a new UUIDv7 string (RFC 9562): sortable by creation time, unique across processes.

    Example:
        >>> len(new_id())
        36
    """
    ms, seq = _next_stamp()
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | seq << 64 | 0b10 << 62 | rand
    h = f"{value:032x}"  # what str(uuid.UUID(int=value)) gives, without the object (~4x cheaper)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_ids(n: int) -> list[str]:
    """Return ``n`` new UUIDv7 strings, in increasing order."""
    return [new_id() for _ in range(n)]
