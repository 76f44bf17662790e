"""Job targets used only by the jobs tests, named in test configs as "jobfuncs:NAME" (tests/ is on sys.path)."""

from __future__ import annotations

import os
import time


def tick(trigger: str = "manual") -> dict:
    return {"pid": os.getpid(), "trigger": trigger}


def boom() -> None:
    raise RuntimeError("boom: this job always fails")


def sleepy(seconds: float = 1.5) -> dict:
    time.sleep(seconds)
    return {"slept": seconds}


def whoami(settings) -> dict:
    return {"actor": settings.actor}
