"""``lakeops drift``, ``lakeops performance``, ``lakeops alerts``, ``lakeops retrain`` and ``lakeops simulate``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import polars as pl

from core.cli._common import emit_frame, open_lake, settings_from

__all__ = ["register"]

_FORMATS = ["table", "csv", "json"]


def register(sub: Any) -> None:
    """Add the monitoring subcommands to ``sub``."""
    d = sub.add_parser("drift", help="drift checks of a model's prediction log against its reference")
    dsub = d.add_subparsers(dest="drift_command", metavar="COMMAND")
    p = dsub.add_parser("check", help="compare the latest window of predictions with the champion's reference")
    p.add_argument("model", help="model name, e.g. churn (its champion is checked)")
    p.add_argument("--rows", type=int, help="window: the last N predictions (default from config: 5000)")
    p.add_argument("--hours", type=float, help="window: the last N hours")
    p.add_argument("--format", choices=_FORMATS, default="table")
    p.set_defaults(handler=_drift_check)
    p = dsub.add_parser("history", help="past drift reports (one row per feature per check)")
    p.add_argument("model", help="model name, e.g. churn (see 'lakeops models list')")
    p.add_argument("--last", type=int, default=5, help="number of checks (default 5)")
    p.add_argument("--format", choices=_FORMATS, default="table")
    p.set_defaults(handler=_drift_history)

    p = sub.add_parser("performance", help="metrics of the champion on labelled predictions vs its gate")
    p.add_argument("model", help="model name, e.g. churn (its champion is checked)")
    p.add_argument("--hours", type=float, help="window in hours (default from config: 168)")
    p.set_defaults(handler=_performance)

    a = sub.add_parser("alerts", help="monitoring alerts")
    asub = a.add_subparsers(dest="alerts_command", metavar="COMMAND")
    p = asub.add_parser("list", help="open and acknowledged alerts (one per condition), newest first")
    p.add_argument("--model", help="only this model's alerts")
    p.add_argument("--all", action="store_true", help="every alert row, resolved ones too")
    p.add_argument("--format", choices=_FORMATS, default="table")
    p.set_defaults(handler=_alerts_list)
    for action, text in (
        ("ack", "acknowledge an open alert: you own it (the retrain job no longer answers it)"),
        ("resolve", "resolve an alert by hand (if the condition persists, the next check opens a new one)"),
    ):
        p = asub.add_parser(action, help=text)
        p.add_argument("alert", help="the alert's fingerprint (e.g. drift:churn) or id, from 'lakeops alerts list'")
        p.add_argument("--reason", required=True, help="why (recorded with the alert)")
        p.set_defaults(handler=_alerts_handle, alert_action=action)

    p = sub.add_parser("retrain", help="retrain on dataset + labelled feedback, gate, promote if the policy allows")
    p.add_argument("model", help="model name, e.g. churn (its champion is retrained)")
    p.add_argument("--reason", required=True, help="why (goes into the audit trail)")
    p.add_argument("--if-needed", action="store_true", help="only when a drift/performance alert is open")
    p.set_defaults(handler=_retrain)

    p = sub.add_parser("simulate", help="send time-compressed churn traffic and late labels to the running API")
    p.add_argument("--api", default=None, help="API base URL (default http://<api_host>:<api_port>)")
    p.add_argument("--model", default="churn")
    p.add_argument("--speed", type=float, default=60.0, help="simulated seconds per real second (default 60)")
    p.add_argument("--duration", type=float, default=30.0, help="simulated minutes to run (default 30)")
    p.add_argument("--rate", type=float, default=60.0, help="customers per simulated minute (default 60)")
    p.add_argument("--campaign-after", type=float, default=None, help="simulated minutes before the campaign starts")
    p.add_argument("--feedback-delay", type=float, default=10.0, help="simulated minutes until a label arrives")
    p.add_argument("--label-share", type=float, default=1.0, help="share of predictions that get a label")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-requests", type=int, default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=_simulate)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _drift_check(args: argparse.Namespace) -> int:
    from core.flows import monitor

    rep = monitor.check_drift_and_alert(args.model, window_rows=args.rows, window_hours=args.hours,
                              lake=open_lake(args), settings=settings_from(args))
    if rep.status != "ok":
        sys.stdout.write(f"{args.model} v{rep.model_version}: only {rep.window_rows} predictions in the window; no verdict\n")
        return 0
    emit_frame(rep.to_frame(), args.format)
    if args.format == "table":
        assert rep.result is not None
        sys.stdout.write(
            f"report {rep.report_id}: {args.model} v{rep.model_version}, {rep.window_rows} predictions vs "
            f"{rep.reference_dataset}@v{rep.reference_version}; drifted share {rep.result.share:.2f} "
            f"(threshold {rep.result.share_threshold:.2f}) -> "
            f"{ {True: 'DRIFT', False: 'no drift', None: 'NO DATA: nothing could be compared'}[rep.drifted]}"
            f"{'' if rep.alert is None else f'; alert {rep.alert}'}\n"
        )
    return 0


def _drift_history(args: argparse.Namespace) -> None:
    from core import monitoring

    frame = monitoring.drift_history(args.model, last=args.last, lake=open_lake(args))
    emit_frame(frame.select("at", "report_id", "model_version", "window_rows", "feature", "status", "test",
                            "statistic", "p_value", "threshold", "drifted"), args.format)


def _performance(args: argparse.Namespace) -> None:
    from core.flows import monitor

    rep = monitor.check_performance_and_alert(args.model, window_hours=args.hours, lake=open_lake(args), settings=settings_from(args))
    sys.stdout.write(
        f"{args.model} v{rep.model_version}: {rep.labelled} of {rep.predictions} predictions labelled "
        f"({rep.coverage:.1%})\n"
    )
    if rep.status != "ok":
        sys.stdout.write("not enough labels for a verdict\n")
        return
    emit_frame(pl.DataFrame({"metric": list(rep.metrics), "value": list(rep.metrics.values())}))
    verdict = "DEGRADED" if rep.degraded else "ok"
    sys.stdout.write(
        f"{rep.metric} {_num(rep.value)} vs {_num(rep.baseline)} at the {rep.baseline_source} "
        f"(tolerance {rep.tolerance}) -> {verdict}{'' if rep.alert is None else f'; alert {rep.alert}'}\n"
    )


def _alerts_list(args: argparse.Namespace) -> None:
    from core import monitoring

    lake = open_lake(args)
    if args.all:
        frame = monitoring.alert_history(args.model, lake=lake).select(
            "at", "kind", "severity", "model", "status", "message", "fingerprint")
    else:
        frame = monitoring.alerts(args.model, status=None, lake=lake).filter(
            pl.col("status").is_in(["open", "acknowledged"])
        ).select("opened_at", "status", "kind", "severity", "model", "fingerprint", "message")
    emit_frame(frame, args.format)


def _alerts_handle(args: argparse.Namespace) -> None:
    from core import monitoring

    handle = monitoring.acknowledge_alert if args.alert_action == "ack" else monitoring.close_alert
    settings = settings_from(args)
    done = handle(args.alert, reason=args.reason, lake=open_lake(args), settings=settings)
    sys.stdout.write(f"alert {done.fingerprint} {done.status} by {settings.actor}: {args.reason}\n")


def _retrain(args: argparse.Namespace) -> None:
    from core.flows import monitor

    lake, settings = open_lake(args), settings_from(args)
    if args.if_needed:
        out = monitor.retrain_if_needed(args.model, lake=lake, settings=settings)
        if out is None:
            sys.stdout.write("no retrain needed (no open alert, already retrained, or not enough new labels)\n")
            return
    else:
        out = monitor.retrain(args.model, reason=args.reason, lake=lake, settings=settings)
    sys.stdout.write(json.dumps(out.to_dict(), default=str, indent=2) + "\n")


def _simulate(args: argparse.Namespace) -> None:
    from core.simulate import simulate

    settings = settings_from(args)
    api = args.api or f"http://{settings.api_host}:{settings.api_port}"

    def progress(stats: Any) -> None:
        if not args.quiet:
            sys.stdout.write(
                f"\rsim {stats.simulated_minutes:6.1f} min  rows {stats.rows:7d} (campaign {stats.campaign_rows})  "
                f"labels {stats.labels:7d}  errors {stats.errors}"
            )
            sys.stdout.flush()

    stats = simulate(
        api, model=args.model, speed=args.speed, duration=args.duration, rate=args.rate,
        campaign_after=args.campaign_after, feedback_delay=args.feedback_delay, label_share=args.label_share,
        seed=args.seed, max_requests=args.max_requests, progress=progress, token=settings.token, settings=settings,
    )
    if not args.quiet:
        sys.stdout.write("\n")
    sys.stdout.write(json.dumps(stats.as_dict(), default=str) + "\n")
    if stats.errors and any("422" in e for e in stats.error_samples):
        sys.stdout.write('hint: the API refused rows (422); with [serving] unknown_category = "error", levels the model never saw are refused (the default "missing" scores them as missing)\n')
