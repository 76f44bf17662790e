"""Training parameters: lakeops' defaults and the check of the user's LightGBM params."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from core.errors import TrainingError
from core.training._lgbprivate import param_aliases

__all__ = ["DEFAULT_PARAMS", "Task", "validate_params"]

Task = Literal["binary", "regression"]

DEFAULT_PARAMS: dict[str, Any] = {
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 20,
    "num_iterations": 200,
    "early_stopping_round": 20,
    "num_threads": 1,
}
"""Defaults under the user's params; ``objective``, ``metric``, ``seed`` and the determinism
switches are set by ``train`` itself."""

# lakeops' own training keys, accepted next to LightGBM's.
_OWN_KEYS = {"valid_fraction", "threshold"}
# Parameters that read/write files or start network training: refused, training is pure.
# fmt: off
_REFUSED = {
    "task", "config", "data", "valid", "input_model", "output_model", "output_result",
    "convert_model", "convert_model_language", "machine_list_filename", "machines",
    "num_machines", "local_listen_port", "time_out", "forcedsplits_filename",
    "forcedbins_filename", "parser_config_file", "save_binary", "snapshot_freq",
    "header", "label_column", "weight_column", "group_column", "ignore_column",
    "categorical_feature", "device_type", "gpu_platform_id", "gpu_device_id", "num_gpu",
    "pre_partition", "tree_learner",
}
# fmt: on
_FORCED = {"deterministic", "force_row_wise", "force_col_wise", "verbosity", "objective", "metric", "seed"}

_ALIASES = param_aliases()


def validate_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check user params against LightGBM's parameter names and return them canonicalised.

    Aliases become canonical names (``n_estimators`` -> ``num_iterations``); lakeops' own keys
    ``valid_fraction`` and ``threshold`` pass through.

    Raises:
        TrainingError: an unknown key (with close matches), a refused key (file/network/device
            parameters, or one lakeops sets itself), or a non-scalar value.
    """
    import difflib

    out: dict[str, Any] = {}
    for key, value in (params or {}).items():
        if key in _OWN_KEYS:
            out[key] = value
            continue
        canonical = _ALIASES.get(key)
        if canonical is None:
            near = difflib.get_close_matches(key, [*_ALIASES, *_OWN_KEYS], n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else "; see LightGBM's parameter list"
            raise TrainingError(f"unknown training parameter {key!r}{hint}")
        if canonical in _REFUSED:
            raise TrainingError(
                f"training parameter {key!r} is not allowed (training is pure and in-process)"
            )
        if canonical in _FORCED and canonical != "seed":
            raise TrainingError(
                f"training parameter {key!r} is set by lakeops (task and determinism); remove it"
            )
        if canonical == "seed":
            raise TrainingError("pass the seed with --seed / seed=, not in the params")
        if not isinstance(value, (bool, int, float, str)) and not (
            isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value)
        ):
            raise TrainingError(f"training parameter {key!r} must be a number, string or list of numbers")
        if canonical in out:
            raise TrainingError(f"training parameter {canonical!r} is given twice (as {key!r} and an alias)")
        out[canonical] = list(value) if isinstance(value, tuple) else value
    frac = out.get("valid_fraction", 0.2)
    if not isinstance(frac, (int, float)) or not 0 < float(frac) < 1:
        raise TrainingError(f"valid_fraction must be between 0 and 1 (exclusive), got {frac!r}")
    return out
