"""``lakeops models list|show|history|register|evaluate|approve|reject|promote|rollback|alias``.

``evaluate`` prints the gate report and exits 0 when it passed, 1 when it failed; bad input
(unknown model/version/alias, a refused promotion, a missing reason) is one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import polars as pl

from core.cli._common import emit_frame, open_lake, render_table, settings_from

__all__ = ["register"]

_FORMATS = ["table", "csv", "json"]


def register(sub: Any) -> None:
    """Add ``lakeops models ...`` to ``sub``."""
    models = sub.add_parser("models", help="model registry: versions, gates, approvals, promotion, rollback")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", parser_class=type(models))

    p = msub.add_parser("list", help="registered models with their champion and aliases")
    p.add_argument("--format", choices=_FORMATS, default="table")
    p.set_defaults(handler=_list)

    p = msub.add_parser(
        "show", help="a model's versions (status, aliases, gate, metrics), or one version in detail"
    )
    p.add_argument("model", help="registered model name, e.g. churn")
    p.add_argument("version", nargs="?", type=int, help="a version to show in detail (default: every version)")
    p.add_argument("--format", choices=_FORMATS, default="table")
    p.set_defaults(handler=_show)

    p = msub.add_parser("history", help="deployment history: who moved which alias, when and why")
    p.add_argument("model", help="registered model name, e.g. churn")
    p.add_argument("--alias", help="only this alias (e.g. champion)")
    p.add_argument("--all", action="store_true", help="every registry event (register, gate, approve ...)")
    p.add_argument("--at", help="which version held --alias (default champion) at this ISO time (UTC if no zone)")
    p.add_argument("--format", choices=_FORMATS, default="table")
    p.set_defaults(handler=_history)

    p = msub.add_parser("register", help="register a finished run's model as the next version")
    p.add_argument("model", help="model name: the version is added to it (created on first use)")
    p.add_argument("run_id", help="a finished run with a model (see 'lakeops runs list')")
    p.add_argument("--description")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(handler=_register)

    p = msub.add_parser("evaluate", help="run the promotion gate and record its report (exit 1 if it fails)")
    p.add_argument("model", help="registered model name, e.g. churn")
    p.add_argument("version", type=int, help="model version number (see 'lakeops models show MODEL')")
    p.add_argument("--policy", help="TOML policy file (default: [models.<model>.policy] in lakeops.toml)")
    p.add_argument("--format", choices=_FORMATS, default="table")
    p.set_defaults(handler=_evaluate)

    for action, text in (
        ("approve", "approve a version (needed when the policy requires approval)"),
        ("reject", "reject a version"),
    ):
        p = msub.add_parser(action, help=text)
        p.add_argument("model", help="registered model name, e.g. churn")
        p.add_argument("version", type=int, help="model version number (see 'lakeops models show MODEL')")
        p.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
        p.set_defaults(handler=_decide, action=action)

    p = msub.add_parser("promote", help="make a version the champion (its latest gate must have passed)")
    p.add_argument("model", help="registered model name, e.g. churn")
    p.add_argument("version", type=int, help="model version number (see 'lakeops models show MODEL')")
    p.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    p.add_argument("--force", action="store_true", help="skip the gate/approval checks (recorded as forced)")
    p.add_argument("--policy", help="TOML policy file (for require_approval)")
    p.set_defaults(handler=_promote)

    p = msub.add_parser("policy", help="show the promotion policy in force, or record a new one in the lake")
    p.add_argument("model", help="registered model name, e.g. churn")
    p.add_argument("--set", dest="policy_file", metavar="FILE", help="TOML policy to record (needs --reason)")
    p.add_argument("--reason", help="why (required with --set)")
    p.set_defaults(handler=_policy)

    p = msub.add_parser("rollback", help="return the champion alias to the previous champion")
    p.add_argument("model", help="registered model name, e.g. churn")
    p.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    p.set_defaults(handler=_rollback)

    p = msub.add_parser(
        "alias", help="point a non-champion alias (challenger ...) at a version, or --delete it"
    )
    p.add_argument("model", help="registered model name, e.g. churn")
    p.add_argument("alias", help="alias name, e.g. challenger (champion moves only by promote/rollback)")
    p.add_argument("version", nargs="?", type=int, help="version the alias points to (omit with --delete)")
    p.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    p.add_argument("--delete", action="store_true")
    p.set_defaults(handler=_alias)

    p = msub.add_parser("stage", help="put a gated version beside the champion on live traffic (shadow or canary)")
    p.add_argument("model", help="registered model name, e.g. churn")
    p.add_argument("version", type=int, help="the version to stage (its gate must have passed)")
    p.add_argument("--mode", required=True, choices=["shadow", "canary"],
                   help="shadow: scored beside the champion, never the answer; canary: answers --fraction of the keys")
    p.add_argument("--fraction", type=float, default=0.1, help="canary: share of entity keys it answers (default 0.1)")
    p.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    p.set_defaults(handler=_stage)

    p = msub.add_parser("unstage", help="end a staged rollout: the champion answers everything again")
    p.add_argument("model", help="registered model name, e.g. churn")
    p.add_argument("--reason", required=True, help="why (recorded in the audit trail)")
    p.set_defaults(handler=_unstage)

    p = msub.add_parser("rollout", help="compare the staged challenger with the champion on live traffic and apply "
                                        "the live gate (promote, withdraw, or wait)")
    p.add_argument("model", help="registered model name, e.g. churn")
    p.add_argument("--dry-run", action="store_true", help="compare and store the report, but do not act on it")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(handler=_rollout)

    models.set_defaults(handler=lambda args: _usage(models))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _list(args: argparse.Namespace) -> None:
    from core import registry

    emit_frame(registry.list_models(lake=open_lake(args)), args.format)


def _show(args: argparse.Namespace) -> None:
    from core import registry
    from core.flows import promote

    lake = open_lake(args)
    if args.version is None:
        frame = registry.versions(args.model, lake=lake)
        emit_frame(frame, args.format)
        return
    mv = registry.get_version(args.model, args.version, lake=lake)
    st = registry.state(args.model, lake=lake)
    report = promote.latest_gate(args.model, args.version, lake=lake)
    info = {
        "model": mv.model,
        "version": mv.version,
        "status": st.statuses.get(mv.version, "candidate"),
        "aliases": ", ".join(a for a, v in sorted(st.aliases.items()) if v == mv.version),
        "run_id": mv.run_id,
        "dataset": f"{mv.dataset_name} v{mv.dataset_version}" if mv.dataset_name else "",
        "sha256": mv.sha256,
        "size_bytes": mv.size_bytes,
        "artifact": mv.artifact_uri,
        "created": f"{mv.created_at} by {mv.created_by}",
        "description": mv.description or "",
        "tags": json.dumps(mv.tags),
        "features": ", ".join(f["name"] for f in mv.signature.get("features", [])),
        "metrics": json.dumps({k: round(v, 6) for k, v in mv.metrics.items()}),
        "approval": promote.approval(args.model, args.version, lake=lake) or "",
        "gate": report.summary() if report else "not evaluated",
    }
    if args.format == "table":
        width = max(map(len, info))
        sys.stdout.write("".join(f"{k.ljust(width)}  {v}\n" for k, v in info.items()))
        if report:
            emit_frame(_checks(report), "table")
    else:
        emit_frame(pl.DataFrame([{k: str(v) for k, v in info.items()}]), args.format)


def _history(args: argparse.Namespace) -> None:
    from core import registry

    lake = open_lake(args)
    if args.at:
        _alias_at(args, lake)
        return
    if args.all:
        frame = registry.events(args.model, lake=lake)
        if frame.height == 0:
            registry.versions(args.model, lake=lake)  # raises ModelNotFoundError
        frame = frame.select("at", "action", "version", "alias", "actor", "reason", "event_id")
    else:
        frame = registry.history(args.model, args.alias, lake=lake)
    emit_frame(frame, args.format)


def _alias_at(args: argparse.Namespace, lake: Any) -> None:
    from datetime import UTC, datetime

    from core import registry
    from core.errors import RegistryError

    try:
        when = datetime.fromisoformat(args.at)
    except ValueError:
        raise RegistryError(f"--at {args.at!r} is not an ISO time, e.g. 2026-01-31T12:00:00Z") from None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    alias = args.alias or "champion"
    held = registry.alias_at(args.model, alias, when, lake=lake)
    if held is None:
        sys.stdout.write(f"no version held {alias} of {args.model} at {when.isoformat()}\n")
        return
    sys.stdout.write(
        f"v{held.version} held {alias} of {args.model} at {when.isoformat()}: moved there by {held.actor} "
        f"at {held.at.isoformat()} ({held.action}: {held.reason})\n"
    )


def _register(args: argparse.Namespace) -> None:
    from core import registry
    from core.errors import RegistryError

    tags = {}
    for item in args.tag:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RegistryError(f"--tag {item!r} must look like KEY=VALUE")
        tags[key] = value
    settings = settings_from(args)
    mv = registry.register(
        args.model,
        args.run_id,
        description=args.description,
        tags=tags,
        actor=settings.actor,
        lake=open_lake(args),
    )
    sys.stdout.write(
        f"registered {mv.model} v{mv.version} from run {mv.run_id} (sha256 {mv.sha256[:12]}...)\n"
    )


def _checks(report: Any) -> pl.DataFrame:
    rows = [
        {
            "check": c.name,
            "value": ""
            if c.value is None
            else (f"{c.value:.6g}" if isinstance(c.value, float) else str(c.value)),
            "threshold": ""
            if c.threshold is None
            else (f"{c.threshold:.6g}" if isinstance(c.threshold, float) else str(c.threshold)),
            "result": "pass" if c.passed else "FAIL",
            "detail": c.detail,
        }
        for c in report.checks
    ]
    return pl.DataFrame(
        rows, schema={k: pl.String for k in ("check", "value", "threshold", "result", "detail")}
    )


def _evaluate(args: argparse.Namespace) -> int:
    from core.flows import promote

    settings = settings_from(args)
    lake = open_lake(args)
    policy = promote.load_policy(args.model, settings=settings, path=args.policy, lake=lake)
    report = promote.evaluate(
        args.model, args.version, actor=settings.actor, lake=lake, settings=settings, policy=policy
    )
    if args.format == "json":
        sys.stdout.write(json.dumps(report.to_dict(), default=str) + "\n")
    else:
        emit_frame(_checks(report), args.format)
        if args.format == "table":
            sys.stdout.write(report.summary() + "\n")
    return 0 if report.passed else 1


def _decide(args: argparse.Namespace) -> None:
    from core.flows import promote

    settings = settings_from(args)
    fn = promote.approve if args.action == "approve" else promote.reject
    fn(
        args.model,
        args.version,
        reason=args.reason,
        actor=settings.actor,
        lake=open_lake(args),
        settings=settings,
    )
    sys.stdout.write(f"{args.action}d {args.model} v{args.version} ({settings.actor}: {args.reason})\n")


def _promote(args: argparse.Namespace) -> None:
    from core.flows import promote

    settings = settings_from(args)
    lake = open_lake(args)
    policy = promote.load_policy(args.model, settings=settings, path=args.policy, lake=lake)
    change = promote.promote(
        args.model,
        args.version,
        reason=args.reason,
        actor=settings.actor,
        force=args.force,
        lake=lake,
        settings=settings,
        policy=policy,
    )
    prev = "none" if change.previous_version is None else f"v{change.previous_version}"
    forced = " (FORCED)" if args.force else ""
    sys.stdout.write(f"champion of {args.model}: {prev} -> v{change.version}{forced}\n")


def _rollback(args: argparse.Namespace) -> None:
    from core.flows import promote

    settings = settings_from(args)
    change = promote.rollback(
        args.model, reason=args.reason, actor=settings.actor, lake=open_lake(args), settings=settings
    )
    sys.stdout.write(
        f"champion of {args.model}: v{change.previous_version} -> v{change.version} (rollback)\n"
    )


def _alias(args: argparse.Namespace) -> None:
    from core.errors import RegistryError
    from core.flows import promote

    if args.version is None and not args.delete:
        raise RegistryError(f"give the version alias {args.alias!r} should point to, or --delete")
    settings = settings_from(args)
    change = promote.alias(
        args.model,
        args.alias,
        args.version,
        reason=args.reason,
        actor=settings.actor,
        delete=args.delete,
        lake=open_lake(args),
        settings=settings,
    )
    target = "removed" if change.version is None else f"v{change.version}"
    sys.stdout.write(f"alias {args.alias} of {args.model}: {target}\n")


def _policy(args: argparse.Namespace) -> None:
    from core.config import read_toml
    from core.flows import promote

    settings = settings_from(args)
    lake = open_lake(args)
    if args.policy_file:
        data = read_toml(args.policy_file, what="policy file")
        promote.set_policy(args.model, data, reason=args.reason, actor=settings.actor, lake=lake, settings=settings)
    policy, source = promote.policy_with_source(args.model, settings=settings, lake=lake)
    sys.stdout.write(f"policy of {args.model!r} ({source}):\n")
    sys.stdout.write(json.dumps(policy.to_dict(), indent=2, default=str) + "\n")


def _stage(args: argparse.Namespace) -> None:
    from core.flows import rollout

    settings = settings_from(args)
    change = rollout.stage(args.model, args.version, mode=args.mode, fraction=args.fraction, reason=args.reason,
                           actor=settings.actor, lake=open_lake(args), settings=settings)
    share = f" answering {change.report.get('fraction', 0):.0%} of the keys" if args.mode == "canary" else ""
    smoke = change.report.get("smoke", {}).get("reason", "")
    sys.stdout.write(f"challenger of {args.model}: v{change.version} in {args.mode} mode{share} (smoke test: {smoke})\n")


def _unstage(args: argparse.Namespace) -> None:
    from core.flows import rollout

    settings = settings_from(args)
    rollout.unstage(args.model, reason=args.reason, actor=settings.actor, lake=open_lake(args), settings=settings)
    sys.stdout.write(f"the staged rollout of {args.model} ended; the champion answers everything\n")


def _rollout(args: argparse.Namespace) -> int:
    import json

    from core.errors import PromotionRefusedError
    from core.flows import rollout

    settings = settings_from(args)
    lake = open_lake(args)
    if args.dry_run:
        report = rollout.compare_live(args.model, lake=lake, settings=settings)
        action, why = "compared", report.why
    else:
        out = rollout.check_rollout(args.model, lake=lake, settings=settings)
        if out is None:
            raise PromotionRefusedError(f"model {args.model!r} has no staged challenger ('lakeops models stage ...')")
        report, action, why = out.report, out.action, out.why
    if args.format == "json":
        sys.stdout.write(json.dumps({"action": action, "why": why, **report.to_dict()}, default=str, indent=1) + "\n")
        return 0
    rows = pl.DataFrame([{"check": c.name, "value": str(c.value), "threshold": str(c.threshold), "passed": c.passed,
                          "detail": c.detail} for c in report.checks])
    sys.stdout.write(f"{args.model}: challenger v{report.challenger_version} ({report.mode}) vs champion "
                     f"v{report.champion_version} since {report.since:%Y-%m-%d %H:%M} UTC: {report.requests} requests, "
                     f"{report.labelled} labelled\n{render_table(rows)}\n{action}: {why}\n")
    return 0
