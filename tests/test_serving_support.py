"""Shared helpers of the serving tests: a real champion in a lake, uvicorn on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from core.config import Settings, load_settings
from core.lake import Lake

ROOT = Path(__file__).resolve().parents[1]


def build_champion_lake(path: Path | Lake, *, versions: int = 2) -> Lake:
    """A lake (a folder, or a Lake such as an s3:// one) with dataset churn (3,000 demo rows) and
    model churn v1..vN, v1 the champion."""
    from core import datasets, demo, registry
    from core.flows.promote import promote
    from core.flows.train import train_model

    lake = path if isinstance(path, Lake) else Lake(str(path))
    settings = Settings(lake_uri=lake.uri, actor="tester")
    datasets.ingest("churn", demo.generate(n=3000, seed=0), lake=lake, actor="tester", settings=Settings(lake_uri=lake.uri, actor="tester"))
    for i in range(versions):
        outcome = train_model("churn", target="churned", params={"num_iterations": 30 + 5 * i}, seed=i, lake=lake, settings=settings)
        registry.register("churn", outcome.run_id, actor="tester", lake=lake)
    promote("churn", 1, reason="test", actor="tester", force=True, lake=lake, settings=settings)
    return lake


def serving_settings(lake_path: Path, wal_dir: Path, **serving: Any) -> Settings:
    section = {"wal_dir": str(wal_dir), "flush_interval_s": 0.2, "poll_interval_s": 0.2, **serving}
    return load_settings(env={}, config_path=None, lake_uri=str(lake_path), actor="tester", sections={"serving": section})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThreadServer:
    """uvicorn serving ``app`` on 127.0.0.1 in a thread of this process."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on",
                                loop="asyncio", http="httptools")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class ProcessServer:
    """``lakeops serve`` in a subprocess (so it can be SIGKILLed)."""

    def __init__(self, lake_path: Path | str, config_path: Path, port: int | None = None, workers: int = 1, *,
                 env: dict[str, str] | None = None, log: Path | None = None, log_level: str = "warning") -> None:
        self.port = port or free_port()
        self.workers = workers
        self.lake_path = lake_path
        self.config_path = config_path
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = env or {}
        self.log = log
        self.log_level = log_level

    def start(self) -> ProcessServer:
        env = {**os.environ, "LAKEOPS_LAKE": str(self.lake_path), "LAKEOPS_CONFIG": str(self.config_path), **self.env}
        stderr: Any = subprocess.PIPE if self.log is None else self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "core.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", str(self.workers), "--log-level", self.log_level],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL if self.log is None else stderr, stderr=stderr,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else self.log.read_text() if self.log else ""
                raise RuntimeError(f"server exited: {err}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not start")

    def _children(self) -> list[Any]:
        import psutil

        try:
            return psutil.Process(self.proc.pid).children(recursive=True) if self.proc else []
        except psutil.NoSuchProcess:
            return []

    def _wait_children(self, children: list[Any]) -> None:
        """uvicorn workers outlive their supervisor by their graceful shutdown: wait for them."""
        import psutil

        psutil.wait_procs(children, timeout=60)

    def kill(self) -> None:
        assert self.proc is not None
        children = self._children()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._wait_children(children)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            children = self._children()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
            self._wait_children(children)


def demo_rows(n: int, seed: int = 5) -> list[dict[str, Any]]:
    from core import demo

    frame = demo.generate(n=n, seed=seed).select(demo.FEATURES)
    return frame.to_dicts()


_BUILT: dict[str, Path] = {}


def champion_lake_path(tmp_path_factory: Any) -> Path:
    """Build the champion lake once per test session (shared by every serving test module)."""
    key = str(tmp_path_factory.getbasetemp())
    if key not in _BUILT:
        path = tmp_path_factory.mktemp("serving") / "lake"
        build_champion_lake(path)
        _BUILT[key] = path
    return _BUILT[key]


def copy_lake(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.1) -> Any:
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of ``name`` in a Prometheus exposition, summed over the series matching ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
