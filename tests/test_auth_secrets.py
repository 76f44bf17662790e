"""No secret anywhere: the tokens and the S3 keys used by a whole auth session (CLI, API, lake) are
grepped for in everything it wrote: output, logs, every object of the lake, every table's values,
the write-ahead log. The one exception is the line of ``tokens create`` that hands the token over."""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from core import auth
from core.lake import Lake
from tests.test_serving_support import ProcessServer, build_champion_lake, demo_rows

ROOT = Path(__file__).resolve().parents[1]
PREDICT = "/v1/models/churn/predict"


@pytest.mark.s3
@pytest.mark.slow
def test_no_secret_in_output_logs_or_lake(tmp_path, s3_server, caplog):
    caplog.set_level(logging.DEBUG)
    access, secret = f"AKIA{secrets.token_hex(8).upper()}", f"s3secret{secrets.token_hex(16)}"
    bucket = s3_server.create_bucket("secrets")
    uri = f"s3://{bucket}/team"
    options = {**s3_server.options, "AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret}
    lake = build_champion_lake(Lake(uri, options))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAKEOPS_")}
    env.update({"LAKEOPS_LAKE": uri, "LAKEOPS_AUTH": "tokens", "LAKEOPS_S3_ENDPOINT": s3_server.endpoint,
                "LAKEOPS_S3_ACCESS_KEY": access, "LAKEOPS_S3_SECRET_KEY": secret, "LAKEOPS_S3_REGION": "us-east-1",
                "LAKEOPS_S3_ALLOW_HTTP": "true", "PYTHONPATH": str(ROOT)})
    written: list[str] = []  # everything the session printed, but the one line that hands a token over

    def cli(*argv: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        e = {**env, **({"LAKEOPS_TOKEN": token} if token else {})}
        r = subprocess.run([sys.executable, "-m", "core.cli", *argv], env=e, cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
        written.append(r.stderr)
        if argv[:2] != ("tokens", "create"):
            written.append(r.stdout)
        return r

    boss = json.loads(cli("tokens", "create", "boss", "--scope", "admin", "--format", "json").stdout)["token"]
    reader = cli("tokens", "create", "reader", "--scope", "read", "--scope", "predict", token=boss).stdout.strip()
    assert reader.startswith("lko_")
    assert cli("tokens", "list", token=boss).returncode == 0
    assert cli("config", token=boss).returncode == 0
    assert cli("config", "--format", "json").returncode == 0
    assert cli("models", "list", token=reader).returncode == 0
    assert cli("models", "promote", "churn", "2", "--force", "--reason", "x", token=reader).returncode == 2
    assert cli("models", "list", token=reader[:-5] + "XXXXX").returncode == 2
    assert cli("models", "list", token="Bearer " + boss).returncode == 2  # malformed: must not be echoed
    r = subprocess.run([sys.executable, "-m", "core.cli", "serve", "--host", "0.0.0.0"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env={**env, "LAKEOPS_AUTH": "off"})
    written += [r.stdout, r.stderr]
    assert r.returncode == 2 and "--insecure" in r.stderr and r.stderr.count("\n") == 1

    cfg = tmp_path / "lakeops.toml"
    cfg.write_text(f'[serving]\nwal_dir = "{tmp_path / "wal"}"\nflush_interval_s = 0.3\n')
    log = tmp_path / "server.log"
    server = ProcessServer(uri, cfg, workers=2, env=env, log=log, log_level="debug").start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            for token in (reader, reader[:-5] + "XXXXX", boss, None, "lko_0123456789abcdef_" + "x" * 43, reader):
                resp = c.post(PREDICT, json=demo_rows(2), headers={"Authorization": f"Bearer {token}"} if token else {})
                written += [resp.text, json.dumps(dict(resp.headers))]
            written.append(c.get("/metrics", headers={"Authorization": f"Bearer {reader}"}).text)
            written.append(c.get("/ready").text)
    finally:
        server.stop()
    written.append(log.read_text())
    ours = list(written)
    # this process's logs at DEBUG too: botocore's debug lines name the access key id (an identifier, in
    # the signature's credential scope) but never the secret key
    written.append(caplog.text)
    for path in (tmp_path / "wal").rglob("*"):
        if path.is_file():
            written.append(path.read_bytes().decode("latin-1"))
    client = s3_server.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):  # the Delta logs, commit metadata, artifacts, parquet bytes
            written.append(client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().decode("latin-1"))
    for table in [*lake.tables(), "artifacts"]:  # and every value, decompressed
        written.append(lake.read(table).write_json())
    assert any("boss" in w for w in written) and any("reader" in w for w in written)  # the grep sees what it should

    tokens = auth.list_tokens(lake=lake)
    assert set(tokens["principal"]) == {"boss", "reader"}
    checks = {"S3 secret key": (secret, written), "admin token": (auth.parse_token(boss)[1], written),
              "read token": (auth.parse_token(reader)[1], written), "S3 access key id": (access, ours)}
    for name, (value, where) in checks.items():
        leaks = [w[max(0, w.find(value) - 80): w.find(value) + 80] for w in where if value in w]
        assert not leaks, f"{name} found: {leaks[:2]}"
