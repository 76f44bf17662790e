"""The prediction service: Litestar app, model cache with hot swap, durable prediction log."""

__all__: list[str] = []
