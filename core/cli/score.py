"""``lakeops score``: batch scoring of a dataset version with a registered model, on the configured engine."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from core.cli._common import open_lake, settings_from

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``score`` to ``sub``."""
    p = sub.add_parser("score", help="score a dataset version with a model version; the scores become a dataset version")
    p.add_argument("--dataset", required=True, help="dataset name, optionally @version: churn or churn@3")
    p.add_argument("--model", required=True, help="model@alias or model@version: churn@champion, churn@4 (default alias champion)")
    p.add_argument("--output", help="output dataset (default <dataset>_<model>_scores)")
    p.add_argument("--keep", nargs="*", default=None,
                   help="input columns to copy beside the scores (default: the model's pass-through fields)")
    p.add_argument("--engine", choices=["local", "dask"], default=None, help="default: [compute] engine in lakeops.toml")
    p.set_defaults(handler=_score)


def _score(args: argparse.Namespace) -> int:
    from core.errors import DatasetNotFoundError, ModelVersionNotFoundError
    from core.flows.score import score_dataset

    name, _, ver = args.dataset.partition("@")
    try:
        version = int(ver.removeprefix("v")) if ver else None
    except ValueError:
        raise DatasetNotFoundError(f"--dataset {args.dataset!r}: the version after @ must be a number") from None
    model, _, which = args.model.partition("@")
    which = which or "champion"
    model_version, alias = (int(which.removeprefix("v")), None) if which.removeprefix("v").isdigit() else (None, which)
    if not model:
        raise ModelVersionNotFoundError(f"--model {args.model!r}: give the model name, e.g. churn@champion")
    out = score_dataset(name, model=model, model_version=model_version, alias=alias, dataset_version=version,
                        output=args.output, keep=args.keep, engine=args.engine, lake=open_lake(args),
                        settings=settings_from(args))
    sys.stdout.write(
        f"scored {out.rows} rows of {out.dataset}@v{out.dataset_version} with {out.model} v{out.model_version} "
        f"on the {out.engine} engine: dataset {out.output}@v{out.output_version} (run {out.run_id})\n"
    )
    return 0
