"""Shared builders for the monitoring tests: a lake with a champion and a prediction log."""

from __future__ import annotations

import json
import shutil
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import polars as pl

from core import datasets, demo, registry
from core.config import Settings, load_settings
from core.flows import promote
from core.flows.train import train_model
from core.ids import new_ids, utcnow
from core.lake import Lake
from core.serving.schemas import prediction_schema

MODEL = "churn"
FAR = datetime(2100, 1, 1, tzinfo=UTC)


def settings_for(lake: Lake, **sections) -> Settings:
    return load_settings(env={}, lake_uri=lake.uri, actor="tester", sections=sections)


def build_champion(root: Path, *, rows: int = 3000, seed: int = 1) -> Lake:
    """A lake with dataset churn v1 (pre-campaign) and model churn v1 as champion."""
    lake = Lake(root)
    settings = settings_for(lake)
    data = demo.generate(rows, seed=seed, campaign_start=FAR)
    datasets.ingest("churn", data, lake=lake, settings=settings_for(lake))
    out = train_model("churn", target="churned", params={"num_iterations": 30, "num_leaves": 15}, lake=lake, settings=settings)
    mv = registry.register(MODEL, out.run_id, lake=lake, actor="tester")
    report = promote.evaluate(MODEL, mv.version, lake=lake, settings=settings_for(lake))
    promote.promote(MODEL, mv.version, reason="first champion", force=not report.passed, lake=lake, actor="tester", settings=settings)
    return lake


def clone(lake: Lake, dest: Path) -> Lake:
    shutil.copytree(lake.uri, dest)
    return Lake(dest)


def traffic(n: int, *, seed: int, campaign: bool) -> pl.DataFrame:
    """Demo rows: all from the campaign period (campaign=True) or none."""
    start = datetime(2025, 1, 1, tzinfo=UTC)
    return demo.generate(n, seed=seed, start=start, campaign_start=start if campaign else FAR)


def log_predictions(lake: Lake, frame: pl.DataFrame, *, at: datetime | None = None, spread_s: float = 0.2,
                    version: int | None = None) -> pl.DataFrame:
    """Score ``frame`` with the champion (or ``version``) and append it to predictions/churn, as serving does."""
    loaded = registry.load(MODEL, version=version, alias=None if version else "champion", lake=lake)
    feats = loaded.signature["features"]
    end = at or utcnow()
    offsets = np.linspace(spread_s, 0, frame.height)
    times = [end - timedelta(seconds=float(o)) for o in offsets]
    scores = loaded.model.predict(frame)
    rows = pl.DataFrame(
        {
            "prediction_id": new_ids(frame.height),
            "at": pl.Series(times, dtype=pl.Datetime("us", "UTC")),
            "model_version": [loaded.version] * frame.height,
            "score": scores,
            "predicted_label": (scores >= 0.5).astype(np.int64),
            "latency_ms": [1.0] * frame.height,
            "role": ["champion"] * frame.height,
        }
    ).with_columns(pl.col("at").dt.date().alias("day"))
    cols = [pl.col(f["name"]).cast(pl.String if f["kind"] == "categorical" else pl.Float64) for f in feats]
    rows = rows.with_columns(frame.select(cols).to_struct("features"))
    schema = prediction_schema(feats)
    lake.append(f"predictions/{MODEL}", rows.select(schema.names), schema=schema, partition_by=["day"])
    return rows.with_columns(frame["churned"].alias("truth"))


def send_feedback(lake: Lake, logged: pl.DataFrame, *, share: float = 1.0, seed: int = 0) -> int:
    """Append ground-truth labels for a share of logged predictions to the feedback table."""
    rng = np.random.default_rng(seed)
    pick = logged.filter(pl.Series(rng.random(logged.height) < share))
    lake.append("feedback", pick.select(
        "prediction_id", pl.lit(MODEL).alias("model"), pl.col("truth").cast(pl.Float64).alias("label"),
        pl.lit(utcnow()).alias("at"), pl.lit("test").alias("source"),
    ))
    return pick.height


class Receiver:
    """A webhook receiver on 127.0.0.1 collecting JSON bodies."""

    def __init__(self) -> None:
        bodies: list[dict] = []
        self.bodies = bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                data = self.rfile.read(int(self.headers["content-length"]))
                bodies.append(json.loads(data))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
