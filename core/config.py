"""Settings from ``LAKEOPS_*`` environment variables and an optional ``lakeops.toml``.

This is the only module that reads either; everything else receives a ``Settings``.
Precedence: explicit keyword overrides > environment > lakeops.toml > defaults.

Environment variables:
    LAKEOPS_CONFIG      path of the TOML file (default ``./lakeops.toml`` when it exists)
    LAKEOPS_LAKE        lake root URI: a folder (default ``data/lake``) or ``s3://bucket/prefix``
    LAKEOPS_ACTOR       who acts (audit trail) when auth is off; default the OS user
    LAKEOPS_AUTH        ``tokens`` turns authentication on (default ``off``; also ``[auth] mode``)
    LAKEOPS_TOKEN       the CLI's bearer token when auth is on: it names the principal who acts
    LAKEOPS_METRICS_DIR set by ``lakeops serve`` for its workers: where they share /metrics counts
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
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from core.errors import ConfigError, LakeopsError
from core.sections import parse_section

__all__ = ["AUTH_MODES", "Settings", "build_settings", "load_settings", "read_toml"]

_DEFAULT_LAKE = "data/lake"
AUTH_MODES = ("off", "tokens")
_SECRET_OPTION_WORDS = ("secret", "token", "password", "session", "credential")
S = TypeVar("S", bound="Settings")


def _default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry in some containers
        return "unknown"


@dataclass(frozen=True, repr=False)
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
        auth_mode: ``"off"`` (default: anyone who reaches the API or UI may do anything; the
            actor is ``actor``) or ``"tokens"`` (bearer tokens with scopes on the API, a login on
            the UI, ``LAKEOPS_TOKEN`` on the CLI; see ``core.auth``).
        token: the CLI's bearer token (``LAKEOPS_TOKEN``); never shown by ``repr`` or ``redacted``.
        metrics_dir: folder where the workers of one ``lakeops serve`` share their /metrics
            counts (set by ``lakeops serve`` for its workers; None: this process only).
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
    auth_mode: str = "off"
    token: str | None = None
    metrics_dir: str | None = None

    def __post_init__(self) -> None:
        if self.auth_mode not in AUTH_MODES:
            raise ConfigError(f"[auth] mode (LAKEOPS_AUTH) must be one of {', '.join(AUTH_MODES)}, got {self.auth_mode!r}")
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

    def redacted(self) -> dict[str, Any]:
        """Every setting as plain values with secrets masked (``lakeops config``, logs, repr).

        Masked: the token, and storage options whose name says secret, token, password,
        session or credential (``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``). The access key
        id is shown as its first 4 characters (it names the key; it is not the secret).
        """
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "token":
                value = None if value is None else "***"
            elif f.name == "storage_options":
                value = {k: _mask_option(k, str(v)) for k, v in value.items()}
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        return out

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.redacted().items() if k != "sections")
        return f"Settings({shown})"

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


def _mask_option(key: str, value: str) -> str:
    low = key.lower()
    if any(w in low for w in _SECRET_OPTION_WORDS):
        return "***"
    if "access_key" in low:
        return value[:4] + "***" if len(value) > 4 else "***"
    return value


def read_toml(path: str | Path, *, what: str = "config file", error: type[LakeopsError] = ConfigError) -> dict[str, Any]:
    """Read a TOML file: the one reader of lakeops.toml, policy, params, spec and feature view files.

    Args:
        path: the file.
        what: what the file is, for the messages (``"policy file"``).
        error: the exception raised (``ConfigError``, or the caller's own such as ``TrainingError``).

    Raises:
        error: the file cannot be read (``cannot read <what> <path>: <reason>``) or is not TOML
            (``<what> <path> is not valid TOML: <where>``).
    """
    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} {p} is not valid TOML: {exc}") from None


# [section] key -> Settings field; these sections are Settings' own (an unknown key is an error)
_TOML_FIELDS: dict[str, dict[str, str]] = {
    "lake": {"uri": "lake_uri", "storage_options": "storage_options"},
    "api": {"host": "api_host", "port": "api_port", "allowed_hosts": "api_allowed_hosts"},
    "ui": {"port": "ui_port"},
    "sql": {"memory_limit": "sql_memory_limit", "threads": "sql_threads", "timeout_s": "sql_timeout_s",
            "max_rows": "sql_max_rows", "max_result_mb": "sql_max_result_mb"},
}
# how each field is named in errors: its TOML key
_FIELD_NAMES = {f: f"[{sec}] {key}" for sec, keys in _TOML_FIELDS.items() for key, f in keys.items()}
_FIELD_NAMES |= {"auth_mode": "[auth] mode", "actor": "actor"}
_ENV_STORAGE = {
    "LAKEOPS_S3_ENDPOINT": "AWS_ENDPOINT_URL",
    "LAKEOPS_S3_REGION": "AWS_REGION",
    "LAKEOPS_S3_ACCESS_KEY": "AWS_ACCESS_KEY_ID",
    "LAKEOPS_S3_SECRET_KEY": "AWS_SECRET_ACCESS_KEY",
    "LAKEOPS_S3_ALLOW_HTTP": "AWS_ALLOW_HTTP",
}


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None


def _toml_values(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Settings fields from the TOML document: only the keys it has (the rest keep their field defaults)."""
    values: dict[str, Any] = {}
    for sec, keys in _TOML_FIELDS.items():
        table = doc.get(sec, {})
        if not isinstance(table, Mapping):
            raise ConfigError(f"[{sec}] in lakeops.toml must be a table, got {type(table).__name__}")
        unknown = sorted(set(table) - set(keys))
        if unknown:
            raise ConfigError(f"[{sec}]: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(keys))}")
        values |= {keys[k]: v for k, v in table.items()}
    if isinstance(values.get("storage_options"), Mapping):  # TOML true/false/numbers as the store's strings
        values["storage_options"] = {str(k): str(v) for k, v in values["storage_options"].items()}
    auth = doc.get("auth", {})  # [auth]'s other keys are core.auth's
    if not isinstance(auth, Mapping):
        raise ConfigError(f"[auth] in lakeops.toml must be a table, got {type(auth).__name__}")
    if "mode" in auth:
        values["auth_mode"] = auth["mode"]
    if "actor" in doc:
        values["actor"] = doc["actor"]
    return values


def _env_values(env: Mapping[str, str], storage: Mapping[str, str]) -> dict[str, Any]:
    """Settings fields from ``LAKEOPS_*`` variables (they win over the file)."""
    values: dict[str, Any] = {}
    for var, name in (("LAKEOPS_LAKE", "lake_uri"), ("LAKEOPS_API_HOST", "api_host"), ("LAKEOPS_AUTH", "auth_mode"),
                      ("LAKEOPS_METRICS_DIR", "metrics_dir"), ("LAKEOPS_ACTOR", "actor")):
        if env.get(var):
            values[name] = env[var]
    for var, name in (("LAKEOPS_API_PORT", "api_port"), ("LAKEOPS_UI_PORT", "ui_port")):
        if env.get(var):
            values[name] = _int(var, env[var])
    if env.get("LAKEOPS_API_ALLOWED_HOSTS"):
        values["api_allowed_hosts"] = tuple(h.strip() for h in env["LAKEOPS_API_ALLOWED_HOSTS"].split(",") if h.strip())
    if env.get("LAKEOPS_TOKEN"):
        values["token"] = env["LAKEOPS_TOKEN"].strip()
    extra = {key: env[var] for var, key in _ENV_STORAGE.items() if env.get(var)}
    if extra:
        values["storage_options"] = {**storage, **extra}
    return values


def build_settings(cls: type[S], doc: Mapping[str, Any], env: Mapping[str, str], *,
                  config_path: str | None = None, **overrides: Any) -> S:
    """Build settings of type ``cls`` from a parsed TOML document, an environment and overrides.

    Only the keys the document and the environment have are passed on, so every default is the
    field default of ``cls`` (``Settings`` or a subclass).

    Raises:
        ConfigError: an unknown key of ``[lake]``, ``[api]``, ``[ui]`` or ``[sql]``, or a value of
            the wrong type, naming the key.
    """
    values = _toml_values(doc)
    values |= _env_values(env, values.get("storage_options", {}))
    if isinstance(values.get("auth_mode"), str):
        values["auth_mode"] = values["auth_mode"].strip().lower()
    values["sections"] = {k: v for k, v in doc.items() if k not in _TOML_FIELDS}
    values["config_path"] = config_path
    out = parse_section(cls, values, where="settings", names=_FIELD_NAMES)
    return replace(out, **overrides) if overrides else out


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
    doc = read_toml(path) if path is not None else {}
    return build_settings(Settings, doc, env, config_path=str(path) if path is not None else None, **overrides)
