"""``lakeops features list|show|register|build-training|materialize|get|check-skew|lineage``: the feature store."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from core.cli._common import emit_frame, open_lake, render_table, settings_from

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``features`` subcommands to ``sub``."""
    feats = sub.add_parser("features", help="feature views: register, training sets, online values, skew check")
    fsub = feats.add_subparsers(dest="features_command", metavar="ACTION")

    p = fsub.add_parser("list", help="list feature views with their latest version and online freshness")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(handler=_list)

    p = fsub.add_parser("show", help="a view version's definition, its versions and materialisations")
    p.add_argument("name", help="view name, or name@vN")
    p.add_argument("--version", type=int, help="view version (default: latest)")
    p.set_defaults(handler=_show)

    p = fsub.add_parser("register", help="register view definitions (TOML or Python); a changed definition is a new version")
    p.add_argument("path", help="a TOML file (name, source, entity, event_time, [[features]]) or a Python file "
                                "defining FeatureView objects (each is registered)")
    p.set_defaults(handler=_register)

    p = fsub.add_parser("build-training", help="join a label dataset with views as of each row's time; write a dataset")
    p.add_argument("--labels", required=True, help="label dataset, or name@vN")
    p.add_argument("--view", action="append", required=True, help="feature view (name or name@vN); repeatable")
    p.add_argument("--time", help="the label rows' event-time column (default: their only datetime column)")
    p.add_argument("--name", required=True, help="the training-set dataset to write")
    p.set_defaults(handler=_build)

    p = fsub.add_parser("materialize", help="compute online values (incremental when exact); default: every view in use")
    p.add_argument("name", nargs="?", help="view name (default: every view's latest version and those champions use)")
    p.add_argument("--version", type=int, help="view version (default: latest)")
    p.add_argument("--full", action="store_true", help="recompute every entity")
    p.add_argument("--as-of", help="compute as of this time (ISO 8601, default now; never before the last run)")
    p.set_defaults(handler=_materialize)

    p = fsub.add_parser("get", help="one entity's current online feature vector")
    p.add_argument("name", help="view name, or name@vN")
    p.add_argument("entity", help="the entity key value")
    p.set_defaults(handler=_get)

    p = fsub.add_parser("check-skew", help="score entities offline (training path) and online (serving path); compare")
    p.add_argument("--model", required=True)
    p.add_argument("--version", type=int, help="model version (default: the champion)")
    p.add_argument("--entities", type=int, default=100, help="entities to compare (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tolerance", type=float, default=1e-12)
    p.add_argument("--api", help="also POST them to this running API (its answers are logged predictions)")
    p.set_defaults(handler=_check_skew)

    p = fsub.add_parser("lineage", help="walk a prediction back: model version, run, training set, views, sources")
    p.add_argument("--model", required=True)
    p.add_argument("--prediction", required=True, help="a prediction id")
    p.add_argument("--sql", action="store_true", help="print the query instead of running it")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(handler=_lineage)

    feats.set_defaults(handler=lambda args: (feats.print_help(), 2)[1])


def _list(args: argparse.Namespace) -> None:
    import polars as pl

    from core import features

    lake = open_lake(args)
    views = features.list_views(lake=lake)
    fresh = features.freshness(lake=lake).rename({"view": "name", "version": "latest_version"})
    out = views.join(fresh.select("name", "latest_version", "as_of", "entities"), on=["name", "latest_version"], how="left")
    emit_frame(out.select("name", "latest_version", "versions", "source", "entity", "features", "hash",
                          pl.col("as_of").alias("online_as_of"), pl.col("entities").alias("online_entities")), args.format)


def _show(args: argparse.Namespace) -> None:
    import polars as pl

    from core import features

    lake = open_lake(args)
    name, ver = features.parse_ref(args.name)
    view = features.get_view(name, args.version or ver, lake=lake)
    out = sys.stdout
    out.write(f"feature view {view.name} v{view.version}  hash {view.content_hash()[:12]}\n")
    out.write(f"source {view.source}  entity {view.entity}  event_time {view.event_time}  missing {view.missing}\n")
    if view.description:
        out.write(f"{view.description}\n")
    rows = [{"feature": f.name, "expr": f.expr or "(rows)", "agg": f.agg or "latest", "window": f.window,
             "default": None if f.fill is None else str(f.fill)} for f in view.features]
    rows += [{"feature": f.name, "expr": f.expr, "agg": "request", "window": None, "default": None}
             for f in view.request_features]
    out.write(render_table(pl.DataFrame(rows)) + "\n")
    if view.request_fields:
        out.write("request fields: " + ", ".join(f"{n} ({t})" for n, t in view.request_fields) + "\n")
    out.write("\nversions\n")
    vs = features.versions(view.name, lake=lake).select("version", pl.col("content_hash").str.slice(0, 12).alias("hash"),
                                                        "created_at", "created_by")
    out.write(render_table(vs) + "\n")
    fresh = features.freshness(lake=lake).filter(pl.col("view") == view.name)
    if fresh.height:
        out.write("\nonline values\n" + render_table(fresh.drop("view")) + "\n")


def _register(args: argparse.Namespace) -> None:
    from core import features

    settings = settings_from(args)
    lake = open_lake(args, create=True)
    defined = features.load_views(args.path)
    for view in defined:  # every definition checked against its source before any is written
        features.check_view(view, lake=lake)
    for view in defined:
        view, created = features.register(view, lake=lake, actor=settings.actor)
        state = "registered" if created else "unchanged (same content hash as the latest version)"
        sys.stdout.write(f"feature view {view.name} v{view.version}: {state}; hash {view.content_hash()[:12]}, "
                         f"{len(view.features)} features over {view.source}\n")


def _build(args: argparse.Namespace) -> None:
    from core import features

    settings = settings_from(args)
    labels, lv = features.parse_ref(args.labels)
    ts = features.build_training_set(args.name, labels=labels, label_version=lv, views=args.view, time_column=args.time,
                                     lake=open_lake(args), actor=settings.actor, settings=settings)
    views = ", ".join(f"{v['view']} v{v['version']} ({v['source']} v{v['source_version']})" for v in ts.views)
    sys.stdout.write(f"training set {ts.name}: version {ts.version}, {ts.rows:,} rows of {ts.label_dataset} v{ts.label_version} "
                     f"as of {ts.time_column}, features from {views}\n"
                     f"train on it: lakeops train --dataset {ts.name} --target <label column>\n")


def _materialize(args: argparse.Namespace) -> None:
    from core import features

    settings = settings_from(args)
    lake = open_lake(args)
    if args.name is None:
        if args.version or args.full or args.as_of:
            from core.errors import LakeopsError

            raise LakeopsError("--version, --full and --as-of need a view name")
        out = features.materialize_all(lake=lake, actor=settings.actor)
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return
    name, ver = features.parse_ref(args.name)
    as_of = _time(args.as_of) if args.as_of else None
    m = features.materialize(name, version=args.version or ver, as_of=as_of, full=args.full, lake=lake, actor=settings.actor)
    why = f" ({m.why})" if m.why else ""
    sys.stdout.write(f"materialised {m.view} v{m.version} as of {m.as_of.isoformat()}: {m.mode}{why}, {m.entities:,} "
                     f"entities written from source v{m.source_version}\n")


def _time(text: str) -> datetime:
    from datetime import UTC

    from core.errors import LakeopsError

    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise LakeopsError(f"--as-of {text!r} is not an ISO 8601 time (e.g. 2025-03-01T12:00:00Z)") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _get(args: argparse.Namespace) -> None:
    from core import features

    name, ver = features.parse_ref(args.name)
    row = features.entity_vector(name, args.entity, version=ver, lake=open_lake(args))
    sys.stdout.write(json.dumps(row, default=str, indent=2) + "\n")


def _check_skew(args: argparse.Namespace) -> int:
    from core.serving.online import check_skew

    r = check_skew(args.model, version=args.version, entities=args.entities, seed=args.seed, tolerance=args.tolerance,
                   api=args.api, token=settings_from(args).token, lake=open_lake(args))
    out = sys.stdout
    out.write(f"model {r.model} v{r.version}, views {', '.join(r.views)}: {r.entities} entities "
              f"({r.unknown_entities} unknown, served by default)\n")
    out.write(f"max |feature offline - online| = {r.max_feature_diff:.3g}\nmax |score offline - online|   = {r.max_score_diff:.3g}\n")
    if r.api_max_score_diff is not None:
        out.write(f"max |score offline - API|      = {r.api_max_score_diff:.3g}\n")
    verdict = "identical" if r.identical else "SKEW"
    out.write(f"{verdict} (tolerance {r.tolerance:g})\n")
    return 0 if r.identical else 1


def _lineage(args: argparse.Namespace) -> None:
    from core import features

    if args.sql:
        sys.stdout.write(features.lineage_sql(args.model) + "\n")
        return
    emit_frame(features.lineage(args.model, args.prediction, lake=open_lake(args)), args.format)
