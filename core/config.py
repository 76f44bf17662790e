"""Settings from ``LAKEOPS_*`` environment variables and an optional ``lakeops.toml``.

This is the only module that reads either; everything else receives a ``Settings``.
Precedence: explicit keyword overrides > environment > lakeops.toml > defaults.

Environment variables:
    LAKEOPS_CONFIG      path of the TOML file (default ``./lakeops.toml`` when it exists)
    LAKEOPS_LAKE        lake root URI: a folder (default ``data/lake``) or ``s3://bucket/prefix``
    LAKEOPS_ACTOR       who acts (audit trail); default the OS user
    LAKEOPS_API_HOST, LAKEOPS_API_PORT, LAKEOPS_UI_PORT
    LAKEOPS_API_ALLOWED_HOSTS   comma-separated Host names the API answers (default: see Settings)
    LAKEOPS_S3_ENDPOINT, LAKEOPS_S3_REGION, LAKEOPS_S3_ACCESS_KEY, LAKEOPS_S3_SECRET_KEY,
    LAKEOPS_S3_ALLOW_HTTP   storage options for an s3:// lake (``ALLOW_HTTP=true`` is required for an
                            ``http://`` endpoint such as a local S3 server)
"""

from __future__ import annotations

import getpass
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.errors import ConfigError

__all__ = ["Settings", "load_settings"]

_DEFAULT_LAKE = "data/lake"


def _default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return "unknown"


@dataclass(frozen=True)
class Settings:
    """Every setting lakeops reads, validated on creation.

    Attributes:
        lake_uri: lake root: a local folder or ``s3://bucket/prefix``.
        storage_options: options for the object store (endpoint, keys, region, allow_http).
        actor: the name recorded in audit events and commit metadata.
        api_host: address the prediction API binds to.
        api_port: port of the prediction API.
        api_allowed_hosts: host names (no port) the API answers to in the ``Host`` header;
            requests naming any other host get 400, which stops DNS rebinding from a browser on
            the same machine. Empty (the default): the bound address, plus ``localhost``,
            ``127.0.0.1`` and ``::1`` when it is a loopback or wildcard address, plus the
            machine's own names when it is a wildcard (``0.0.0.0``). ``["*"]`` allows any.
        ui_port: port of the Streamlit UI.
        sql_memory_limit: DuckDB memory limit for user SQL (e.g. ``"2GB"``).
        sql_threads: DuckDB threads for user SQL.
        sql_timeout_s: a user query running longer than this is interrupted.
        sql_max_rows: a console/CLI query result with more rows is refused (export it instead).
        sql_max_result_mb: a query result of more Arrow megabytes (10^6 bytes) is refused.
        sections: the rest of lakeops.toml, by section name (``[serving]``, ``[jobs]``,
            ``[models.churn]``, ``[drift]`` ...), read by the module that owns each section.
        config_path: the TOML file the settings came from, if any.
    """

    lake_uri: str = _DEFAULT_LAKE
    storage_options: Mapping[str, str] = field(default_factory=dict)
    actor: str = field(default_factory=_default_actor)
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_allowed_hosts: tuple[str, ...] = ()
    ui_port: int = 8501
    sql_memory_limit: str = "2GB"
    sql_threads: int = 2
    sql_timeout_s: float = 60.0
    sql_max_rows: int = 1_000_000
    sql_max_result_mb: float = 256.0
    sections: Mapping[str, Any] = field(default_factory=dict)
    config_path: str | None = None

    def __post_init__(self) -> None:
        if not self.lake_uri:
            raise ConfigError("lake_uri is empty: set LAKEOPS_LAKE or [lake] uri in lakeops.toml")
        if "://" in self.lake_uri and not self.lake_uri.startswith(("s3://", "file://")):
            scheme = self.lake_uri.split("://", 1)[0]
            raise ConfigError(
                f"lake_uri scheme {scheme!r} is not supported: use a folder path or s3://bucket/prefix"
            )
        self._check_plain_http()
        for name in ("api_port", "ui_port"):
            port = getattr(self, name)
            if not isinstance(port, int) or not 0 < port < 65536:
                raise ConfigError(f"{name} must be a port number 1-65535, got {port!r}")
        if self.sql_threads < 1:
            raise ConfigError(f"sql_threads must be >= 1, got {self.sql_threads}")
        if self.sql_timeout_s <= 0:
            raise ConfigError(f"sql_timeout_s must be > 0, got {self.sql_timeout_s}")
        if self.sql_max_rows < 1:
            raise ConfigError(f"[sql] max_rows must be >= 1, got {self.sql_max_rows}")
        if self.sql_max_result_mb <= 0:
            raise ConfigError(f"[sql] max_result_mb must be > 0, got {self.sql_max_result_mb}")
        for host in self.api_allowed_hosts:
            if not isinstance(host, str) or not host.strip() or "/" in host:
                raise ConfigError(f"[api] allowed_hosts entries must be host names such as 'lakeops.example.com', got {host!r}")

    def allowed_hosts(self) -> frozenset[str]:
        """The host names (lower case, no port, IPv6 without brackets) the API answers to."""
        if self.api_allowed_hosts:
            return frozenset(h.strip().lower().strip("[]") for h in self.api_allowed_hosts)
        bound = self.api_host.strip().lower().strip("[]")
        hosts = {bound}
        if bound in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "::") or bound.startswith("127."):  # noqa: S104
            hosts |= {"localhost", "127.0.0.1", "::1"}
        if bound in ("0.0.0.0", "::"):  # noqa: S104 - every interface: the machine's own names too
            import socket

            names = {socket.gethostname(), socket.getfqdn()}
            for name in list(names):
                try:
                    names |= set(socket.gethostbyname_ex(name)[2])
                except OSError:
                    pass
            hosts |= {n.lower() for n in names if n}
        return frozenset(hosts)

    def _check_plain_http(self) -> None:
        """An ``http://`` S3 endpoint needs an explicit opt-in; say so here, not as the store's cryptic refusal."""
        opts = {k.lower(): str(v) for k, v in self.storage_options.items()}
        endpoint = next((opts[k] for k in ("aws_endpoint_url", "endpoint_url", "aws_endpoint", "endpoint") if k in opts), "")
        allowed = next((opts[k] for k in ("aws_allow_http", "allow_http") if k in opts), "false")
        if self.lake_uri.startswith("s3://") and endpoint.startswith("http://") and allowed.lower() not in ("true", "1", "yes"):
            raise ConfigError(
                f"the S3 endpoint {endpoint} is plain HTTP: set LAKEOPS_S3_ALLOW_HTTP=true to allow it "
                "(a local S3 server), or use an https:// endpoint"
            )

    def section(self, name: str) -> dict[str, Any]:
        """Return the TOML section ``name`` (dotted for nested: ``"models.churn"``), or ``{}``."""
        node: Any = self.sections
        for part in name.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return {}
            node = node[part]
        if not isinstance(node, Mapping):
            raise ConfigError(f"[{name}] in lakeops.toml must be a table, got {type(node).__name__}")
        return dict(node)

    def with_(self, **changes: Any) -> Settings:
        """Return a copy with some fields changed (validated again)."""
        return replace(self, **changes)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc


def _int(name: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


def _hosts(env_value: str | None, toml_value: Any) -> tuple[str, ...]:
    if env_value:
        return tuple(h.strip() for h in env_value.split(",") if h.strip())
    if isinstance(toml_value, str) or not isinstance(toml_value, list):
        raise ConfigError(f"[api] allowed_hosts must be a list of host names, got {toml_value!r}")
    return tuple(str(h) for h in toml_value)


def load_settings(
    env: Mapping[str, str] | None = None, *, config_path: str | Path | None = None, **overrides: Any
) -> Settings:
    """Build ``Settings`` from the environment, the TOML file and explicit overrides.

    Args:
        env: environment to read (default ``os.environ``).
        config_path: TOML file to read; default ``$LAKEOPS_CONFIG`` or ``./lakeops.toml``.
        **overrides: field values that win over everything else.

    Returns:
        The validated settings.

    Raises:
        ConfigError: a value is invalid or the TOML file cannot be parsed.
    """
    env = os.environ if env is None else env
    path: Path | None = None
    if config_path is not None:
        path = Path(config_path)
    elif env.get("LAKEOPS_CONFIG"):
        path = Path(env["LAKEOPS_CONFIG"])
    elif Path("lakeops.toml").is_file():
        path = Path("lakeops.toml")
    doc = _read_toml(path) if path is not None else {}

    lake = dict(doc.get("lake", {}))
    api = dict(doc.get("api", {}))
    ui = dict(doc.get("ui", {}))
    sql = dict(doc.get("sql", {}))
    storage = {str(k): str(v) for k, v in dict(lake.get("storage_options", {})).items()}
    env_storage = {
        "LAKEOPS_S3_ENDPOINT": "AWS_ENDPOINT_URL",
        "LAKEOPS_S3_REGION": "AWS_REGION",
        "LAKEOPS_S3_ACCESS_KEY": "AWS_ACCESS_KEY_ID",
        "LAKEOPS_S3_SECRET_KEY": "AWS_SECRET_ACCESS_KEY",
        "LAKEOPS_S3_ALLOW_HTTP": "AWS_ALLOW_HTTP",
    }
    for var, key in env_storage.items():
        if env.get(var):
            storage[key] = env[var]

    values: dict[str, Any] = {
        "lake_uri": env.get("LAKEOPS_LAKE") or lake.get("uri") or _DEFAULT_LAKE,
        "storage_options": storage,
        "api_host": env.get("LAKEOPS_API_HOST") or api.get("host", "127.0.0.1"),
        "api_port": _int("api port", env.get("LAKEOPS_API_PORT") or api.get("port", 8000)),
        "api_allowed_hosts": _hosts(env.get("LAKEOPS_API_ALLOWED_HOSTS"), api.get("allowed_hosts", [])),
        "ui_port": _int("ui port", env.get("LAKEOPS_UI_PORT") or ui.get("port", 8501)),
        "sql_memory_limit": str(sql.get("memory_limit", "2GB")),
        "sql_threads": _int("sql threads", sql.get("threads", 2)),
        "sql_timeout_s": float(sql.get("timeout_s", 60.0)),
        "sql_max_rows": _int("[sql] max_rows", sql.get("max_rows", 1_000_000)),
        "sql_max_result_mb": float(sql.get("max_result_mb", 256.0)),
        "sections": {k: v for k, v in doc.items() if k not in {"lake", "api", "ui", "sql"}},
        "config_path": str(path) if path is not None else None,
    }
    actor = env.get("LAKEOPS_ACTOR") or doc.get("actor")
    if actor:
        values["actor"] = str(actor)
    values.update(overrides)
    return Settings(**values)
