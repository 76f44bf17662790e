"""``lakeops train`` and ``lakeops runs list|show|compare|reproduce``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import polars as pl

from core.cli._common import emit_frame, open_lake, render_table, settings_from

__all__ = ["register"]

_PREFERRED = ["auc", "log_loss", "f1", "accuracy", "rmse", "mae", "r2", "precision", "recall", "brier"]
_LIST_ATTRS = ["run_id", "experiment", "name", "status", "started_at", "dataset", "seed"]


def register(sub: Any) -> None:
    """Add ``train`` and ``runs`` to ``sub``."""
    p = sub.add_parser("train", help="train a LightGBM model on a dataset version and record the run")
    p.add_argument("--dataset", required=True, help="dataset name, optionally @version: churn or churn@3")
    p.add_argument("--target", required=True, help="target column (0/1 for classification)")
    p.add_argument("--params", help="TOML file of LightGBM params ([params] table or top-level keys)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of LightGBM (default 0)")
    p.add_argument("--experiment", help="experiment name (default: the dataset name)")
    p.add_argument("--name", help="run name (default dataset@vN)")
    p.add_argument("--task", choices=["binary", "regression"], help="default: inferred from the target")
    p.add_argument("--time-column", default="auto", help="split by this column; 'auto' (default) or 'none'")
    p.add_argument("--exclude", nargs="*", default=[], help="columns to keep out of the features")
    p.add_argument("--register", metavar="MODEL", help="also register the trained model as the next version of MODEL")
    p.add_argument("--passthrough", nargs="*", default=None,
                   help="columns requests may carry beside the features (logged, never scored); "
                        "default: the time column and id-like columns")
    p.add_argument("--feedback-key", default=None, help="a pass-through column feedback may join by (an entity id)")
    p.add_argument("--engine", choices=["local", "dask"], default=None,
                   help="train in this process or with lightgbm.dask on the [compute] cluster (default: [compute] engine)")
    p.set_defaults(handler=_train)

    runs = sub.add_parser("runs", help="list, show, compare and reproduce experiment runs")
    rsub = runs.add_subparsers(dest="runs_command", metavar="ACTION", parser_class=type(runs))
    p = rsub.add_parser("list", help="list runs (newest first), with MLflow-style filters")
    p.add_argument("--experiment", help="only this experiment")
    p.add_argument("--filter", help="e.g. \"metrics.auc > 0.8 and params.num_leaves = '31'\"")
    p.add_argument("--order-by", action="append", help="e.g. 'metrics.auc desc' (repeatable)")
    p.add_argument("--max", type=int, default=50, help="at most this many runs (default 50)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(handler=_list)
    p = rsub.add_parser("show", help="show one run: lineage, params, metrics, tags, artifacts")
    p.add_argument("run_id", help="run id (see 'lakeops runs list')")
    p.set_defaults(handler=_show)
    p = rsub.add_parser("compare", help="compare runs side by side (params and metrics)")
    p.add_argument("run_ids", nargs="+", metavar="RUN_ID", help="two or more run ids")
    p.add_argument("--all", action="store_true", help="also show rows where every run has the same value")
    p.set_defaults(handler=_compare)
    p = rsub.add_parser("reproduce", help="retrain a run from its recorded data, params and seed")
    p.add_argument("run_id", help="the run to reproduce")
    p.set_defaults(handler=_reproduce)
    runs.set_defaults(handler=lambda args: (runs.print_help(), 2)[1])


def _train(args: argparse.Namespace) -> int:
    from core.errors import TrainingError
    from core.flows.train import load_params_file, train_model

    name, _, ver = args.dataset.partition("@")
    try:
        version = int(ver.removeprefix("v")) if ver else None
    except ValueError:
        raise TrainingError(f"--dataset {args.dataset!r}: the version after @ must be a number") from None
    params = load_params_file(args.params) if args.params else None
    time_column = None if args.time_column.lower() == "none" else args.time_column
    lake = open_lake(args)
    out = train_model(
        name,
        target=args.target,
        version=version,
        params=params,
        seed=args.seed,
        experiment=args.experiment,
        name=args.name,
        task=args.task,
        time_column=time_column,
        exclude=args.exclude,
        lake=lake,
        passthrough=args.passthrough,
        feedback_key=args.feedback_key,
        engine=args.engine,
        settings=settings_from(args),
    )
    sys.stdout.write(
        f"run {out.run_id} finished: dataset {out.dataset}@v{out.dataset_version}, "
        f"best iteration {out.best_iteration}, model sha256 {out.model.sha256}\n"
    )
    left_out = {c: why for c, why in (out.excluded or {}).items() if why != "excluded by request"}
    if left_out:
        sys.stdout.write("left out of the features: " + "; ".join(f"{c}: {why}" for c, why in left_out.items()) + "\n")
    for d in (out.leakage or {}).get("flagged", []):
        sys.stderr.write(f"lakeops: warning: possible target leakage: feature {d['feature']!r} {d['why']}; "
                         f"exclude it (--exclude {d['feature']}) unless it is known before the outcome\n")
    for d in (out.leakage or {}).get("warnings", []):
        sys.stderr.write(f"lakeops: note: feature {d['feature']!r} {d['why']}\n")
    metrics = pl.DataFrame({"metric": list(out.metrics), "value": list(out.metrics.values())})
    sys.stdout.write(render_table(metrics) + "\n")
    if args.register:
        from core import registry

        mv = registry.register(args.register, out.run_id, actor=settings_from(args).actor, lake=lake)
        sys.stdout.write(
            f"registered {mv.model} v{mv.version}; next: 'lakeops models evaluate {mv.model} {mv.version}' (the gate)\n"
        )
    return 0


def _list(args: argparse.Namespace) -> int:
    from core.tracking import search_runs

    frame = search_runs(args.experiment, args.filter, args.order_by, args.max, lake=open_lake(args))
    if frame.height:
        frame = frame.with_columns(
            pl.when(pl.col("dataset_name").is_not_null())
            .then(pl.format("{}@v{}", "dataset_name", "dataset_version"))
            .alias("dataset"),
            pl.col("started_at").dt.strftime("%Y-%m-%d %H:%M:%S"),
        )
        final = [c for c in frame.columns if c.startswith("metrics.") and "." not in c[len("metrics.") :]]
        final.sort(key=lambda c: (_PREFERRED.index(c[8:]) if c[8:] in _PREFERRED else len(_PREFERRED), c))
        frame = frame.select(_LIST_ATTRS + final[:8])
    emit_frame(frame, args.format)
    return 0


def _kv(title: str, data: dict[str, Any]) -> str:
    frame = pl.DataFrame(
        {"key": list(data), "value": ["" if v is None else str(v) for v in data.values()]},
        schema={"key": pl.String, "value": pl.String},
    )
    return f"{title}\n{render_table(frame, max_width=90)}\n"


def _show(args: argparse.Namespace) -> int:
    from core.tracking import get_run, list_artifacts

    lake = open_lake(args)
    info = get_run(args.run_id, lake=lake)
    lineage = info.lineage()
    out = [_kv("run", lineage)]
    final = {k: f"{v:.6g}" for k, v in sorted(info.metrics.items())}
    out += [_kv("params", dict(sorted(info.params.items()))), _kv("metrics (last value)", final)]
    out.append(_kv("tags", dict(sorted(info.tags.items()))))
    arts = list_artifacts(info.run_id, lake=lake).select("path", "size_bytes", "sha256")
    out.append(f"artifacts\n{render_table(arts, max_width=70)}\n")
    sys.stdout.write("\n".join(out))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from core.tracking import compare_runs

    frame = compare_runs(args.run_ids, lake=open_lake(args))
    runs = [c for c in frame.columns if c not in ("section", "key")]
    if not args.all and len(runs) > 1:
        same = pl.concat_list(runs).list.eval(pl.element().fill_null("∅")).list.n_unique() == 1
        frame = frame.filter(~same | (pl.col("section") == "run"))
    emit_frame(frame)
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from core.flows.train import reproduce

    out = reproduce(args.run_id, lake=open_lake(args), settings=settings_from(args))
    verdict = "MATCH" if out.matches else "MISMATCH"
    sys.stdout.write(
        f"{verdict}: run {out.run_id} sha256 {out.sha256}\n"
        f"{' ' * len(verdict)}  retrain {out.new_run_id} sha256 {out.new_sha256}\n"
    )
    return 0 if out.matches else 1
