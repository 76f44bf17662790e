"""A tampered model artifact is never forced into production, and serving says so loudly when it meets one."""

from __future__ import annotations

from pathlib import Path

import httpx
import polars as pl
import pytest

from core import cli, registry
from core.errors import ArtifactIntegrityError
from core.flows import promote
from core.lake import Lake
from core.serving.app import create_app
from tests.test_serving_support import (
    ThreadServer,
    champion_lake_path,
    copy_lake,
    demo_rows,
    serving_settings,
    wait_for,
)


def _tamper(lake: Lake, version: int) -> None:
    path = Path(lake.uri) / registry.artifact_path("churn", version)
    path.write_bytes(path.read_bytes() + b"\n# edited by hand\n")


def test_force_never_promotes_a_tampered_artifact(tmp_path, tmp_path_factory, capsys, settings):
    lake = Lake(str(copy_lake(champion_lake_path(tmp_path_factory), tmp_path / "lake")))
    _tamper(lake, 2)
    with pytest.raises(ArtifactIntegrityError, match="sha256"):
        promote.promote("churn", 2, reason="because", actor="t", force=True, lake=lake, settings=settings)
    capsys.readouterr()
    assert cli.run(["--lake", lake.uri, "models", "promote", "churn", "2", "--force", "--reason", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sha256" in err
    assert registry.champion_version("churn", lake) == 1


def test_serving_keeps_the_last_good_version_and_reports_the_refusal(tmp_path, tmp_path_factory):
    lake_path = copy_lake(champion_lake_path(tmp_path_factory), tmp_path / "lake")
    lake = Lake(str(lake_path))
    settings = serving_settings(lake_path, tmp_path / "wal")
    with ThreadServer(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        wait_for(lambda: c.get("/ready").status_code == 200)
        _tamper(lake, 2)
        registry.set_alias("churn", "champion", 2, actor="disk", reason="the alias moved; the file was edited", lake=lake)
        detail = wait_for(lambda: (d := c.get("/v1/models/churn").json())["load_error"] and d, timeout=20)
        assert detail["aliases"]["champion"] == 2 and detail["serving_version"] == 1
        assert detail["load_error"]["version"] == 2 and "sha256" in detail["load_error"]["error"]
        ready = c.get("/ready")
        assert ready.status_code == 200  # v1 still answers: no outage, but not silent
        assert "cannot be loaded" in ready.json()["degraded"][0] and "v1 answers" in ready.json()["degraded"][0]
        assert c.post("/v1/models/churn/predict", json=demo_rows(1)).json()["version"] == 1
        wait_for(lambda: lake.exists("alerts") and lake.read("alerts").filter(pl.col("kind") == "model_load").height == 1)
        alert = lake.read("alerts").filter(pl.col("kind") == "model_load").row(0, named=True)
        assert alert["status"] == "open" and alert["model_version"] == 2 and "sha256" in alert["message"]
    # a fresh worker with nothing good to serve is not ready, and says why
    with ThreadServer(create_app(settings)) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
        r = wait_for(lambda: (r := c.get("/ready")).status_code == 503 and r.json(), timeout=20)
        assert any("cannot be loaded" in x for x in r["reasons"])
