"""The prediction service: Litestar app, model cache with hot swap, durable prediction log.

Start it with ``lakeops serve`` (uvicorn on the ``core.serving.app:create_app`` factory).
"""

__all__ = ()  # submodules are the surface: app, service, models, schemas, wal, predlog, problems
