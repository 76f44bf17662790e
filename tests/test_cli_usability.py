"""The CLI as a newcomer meets it: --version, help on every argument, required flags shown, plain one-line errors."""

from __future__ import annotations

import argparse
import socket

import polars as pl
import pytest

from core import datasets, demo
from core.cli import build_parser, run
from core.cli._common import one_line
from core.config import load_settings
from core.errors import ConfigError
from core.lake import Lake


def _parsers(parser: argparse.ArgumentParser, path: str = "lakeops"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, f"{path} {name}")


def test_version(capsys):
    assert run(["--version"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("lakeops ") and out.split()[1][0].isdigit()


def test_every_positional_argument_has_help_and_reason_is_shown_required():
    missing, optional_reason = [], []
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if not action.option_strings and not isinstance(action, argparse._SubParsersAction) and not action.help:
                missing.append(f"{path} {action.dest}")
            if "--reason" in action.option_strings and not action.required and not any(
                w in (action.help or "") for w in ("required", "optional")
            ):  # an optional reason says so in its help (tokens create); a decision's reason is required
                optional_reason.append(path)
    assert missing == [] and optional_reason == []
    promote = dict(_parsers(build_parser()))["lakeops models promote"]
    usage = promote.format_usage()
    assert "--reason REASON" in usage and "[--reason REASON]" not in usage


def test_missing_reason_is_one_line_exit_2(tmp_path, capsys):
    assert run(["--lake", str(tmp_path / "lake"), "models", "promote", "churn", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lakeops: error: the following arguments are required: --reason")


def test_error_lines_carry_no_terminal_colour_codes():
    assert one_line("\x1b[1;31mGeneric S3 error:\x1b[0m URL scheme is not allowed\n  caused by x") == (
        "Generic S3 error: URL scheme is not allowed caused by x")


def test_plain_http_s3_endpoint_needs_the_allow_http_setting(tmp_path, capsys, monkeypatch):
    env = {"LAKEOPS_LAKE": "s3://bucket/lake", "LAKEOPS_S3_ENDPOINT": "http://127.0.0.1:9"}
    with pytest.raises(ConfigError, match="set LAKEOPS_S3_ALLOW_HTTP=true"):
        load_settings(env=env)
    assert load_settings(env={**env, "LAKEOPS_S3_ALLOW_HTTP": "true"}).storage_options["AWS_ALLOW_HTTP"] == "true"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("LAKEOPS_S3_ALLOW_HTTP", raising=False)
    assert run(["tables"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "LAKEOPS_S3_ALLOW_HTTP" in err and "\x1b" not in err


def test_up_refuses_a_port_in_use_in_one_line_before_anything_starts(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert run(["--lake", str(tmp_path / "lake"), "up", "--api-port", str(port)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert f"port {port} for the API on 127.0.0.1 is in use" in err and "--api-port" in err
    assert not (tmp_path / "lake").exists()
    assert run(["--lake", str(tmp_path / "lake"), "up", "--api-port", "8123", "--ui-port", "8123"]) == 2
    assert "cannot share port 8123" in capsys.readouterr().err


def test_demo_export_then_train_and_register(tmp_path, capsys, settings):
    target = tmp_path / "new.csv"
    assert run(["demo", "export", str(target), "--rows", "800"]) == 0
    assert "wrote 800 customers" in capsys.readouterr().out
    frame = pl.read_csv(target, try_parse_dates=True)
    assert frame.height == 800 and frame["customer_id"][0] == "C1000001"
    assert frame.filter(pl.col("signup_channel") == "campaign").height > 300
    assert run(["demo", "export", str(target)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert run(["demo", "export", str(tmp_path / "x.txt")]) == 2
    capsys.readouterr()

    lake = Lake(tmp_path / "lake")
    datasets.ingest("churn", demo.generate(2000, seed=3), lake=lake, settings=settings)
    assert run(["--lake", lake.uri, "data", "ingest", "churn", str(target)]) == 0
    assert "version 2 (800 rows appended, 2,800 in total)" in capsys.readouterr().out
    assert run(["--lake", lake.uri, "train", "--dataset", "churn", "--target", "churned", "--register", "churn"]) == 0
    assert "registered churn v1; next: 'lakeops models evaluate churn 1'" in capsys.readouterr().out
