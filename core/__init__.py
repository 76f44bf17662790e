"""lakeops: the MLOps platform on a Delta lake (datasets, runs, registry, serving, monitoring)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
