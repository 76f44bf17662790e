"""The ``Host`` header check in front of the whole API (DNS rebinding protection).

A web page on any site can make a browser on this machine send requests to
``http://evil.example:8000`` after pointing ``evil.example`` at 127.0.0.1; the only thing that
tells such a request apart is its ``Host`` header. Requests naming a host that is not in
``Settings.allowed_hosts()`` (by default the bound address and its loopback names) are answered
400 with a problem body, before routing, so the predict fast path is covered too.

*Deviation:* Litestar's ``AllowedHostsConfig`` matches the whole header, port included, so it
cannot say "this host on any port" (tests and ``--port`` pick ports at run time), and its
middleware sits behind the predict fast path; this check compares host names only.
"""

from __future__ import annotations

from typing import Any

from core.serving.problems import Problem

__all__ = ["HostCheck", "host_name"]


def host_name(header: bytes) -> str:
    """The host name of a ``Host`` header value: lower case, no port, IPv6 without brackets."""
    text = header.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text[1:]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


class HostCheck:
    """ASGI wrapper answering 400 ``invalid-host`` when the ``Host`` header names another host.

    Args:
        app: the ASGI app to protect.
        allowed: host names (from ``Settings.allowed_hosts()``); ``"*"`` allows every host.
    """

    __slots__ = ("allowed", "app", "open")

    def __init__(self, app: Any, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed
        self.open = "*" in allowed

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.open or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = next((v for k, v in scope["headers"] if k == b"host"), b"")
        name = host_name(host)
        if name in self.allowed:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        shown = name or "(none)"
        await Problem(
            400,
            "invalid-host",
            f"this API does not answer to host {shown!r}: call it by {', '.join(sorted(self.allowed))}, "
            "or add the name to [api] allowed_hosts (LAKEOPS_API_ALLOWED_HOSTS)",
        ).send(send, scope.get("path"))
