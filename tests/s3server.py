"""S3 test helpers: moto's server on 127.0.0.1 and a proxy that drops ``If-None-Match``."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["S3Server", "closed_port", "dropping_proxy", "free_port", "moto_server", "storage_options"]

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    """Return a port on 127.0.0.1 where connections are refused (nothing listens)."""
    return free_port()


def storage_options(endpoint: str) -> dict[str, str]:
    """Storage options for a lake on the S3 server at ``endpoint``."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": REGION,
        "AWS_ALLOW_HTTP": "true",
    }


@dataclass
class S3Server:
    """A running S3-compatible server."""

    endpoint: str

    @property
    def options(self) -> dict[str, str]:
        return storage_options(self.endpoint)

    def client(self):  # noqa: ANN201 - boto3 client
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name


@contextmanager
def moto_server() -> Iterator[S3Server]:
    """Run moto's S3 server on 127.0.0.1 on a free port, in a child process.

    Not ``ThreadedMotoServer`` in this process: some deltalake calls (``DeltaTable.history``,
    ``DeltaTable.is_deltatable``) keep the GIL while they wait for the network, so a server
    thread in the same interpreter can never answer them and the test deadlocks.
    """
    port = free_port()
    code = (
        "import sys, time\n"
        "from moto.server import ThreadedMotoServer\n"
        f"s = ThreadedMotoServer(ip_address='127.0.0.1', port={port}, verbose=False)\n"
        "s.start()\n"
        "sys.stdin.read()\n"  # run until the parent closes our stdin (or dies)
        "s.stop()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start on port {port}") from None
                time.sleep(0.05)
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


class _Proxy(BaseHTTPRequestHandler):
    """Forward every request to ``server.upstream`` minus the headers in ``server.drop``."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self) -> None:
        body = self._body()
        host, port = self.server.upstream  # type: ignore[attr-defined]
        drop = self.server.drop  # type: ignore[attr-defined]
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP and k.lower() not in drop}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(host, port, timeout=30)
        try:
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in _HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward


@contextmanager
def dropping_proxy(upstream: str, drop: tuple[str, ...] = ("if-none-match",)) -> Iterator[str]:
    """Run an HTTP proxy on 127.0.0.1 forwarding to ``upstream`` without the ``drop`` headers.

    Yields the proxy's endpoint URL. Dropping ``If-None-Match`` makes a store that honours
    conditional writes look like one that ignores them.
    """
    hostport = upstream.split("://", 1)[1].rstrip("/")
    host, port = hostport.rsplit(":", 1)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    server.daemon_threads = True
    server.upstream = (host, int(port))  # type: ignore[attr-defined]
    server.drop = {d.lower() for d in drop}  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
