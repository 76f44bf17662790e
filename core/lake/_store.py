"""The lake root and its object store: opening a local folder or an ``s3://`` prefix (probing the
store for conditional writes), paths, plain files (artifacts, the lake id) under the root."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlparse

import pyarrow.fs as pafs

from core.errors import LakeError, LakeUnavailableError, UnsafeStoreError
from core.lake._common import _check_name, _is_s3

if TYPE_CHECKING:
    from deltalake import DeltaTable

__all__ = ["LakeStore"]


class LakeStore:
    """The root, its filesystem and the per-process state every other part of ``Lake`` uses."""

    def __init__(
        self,
        uri: str | os.PathLike[str],
        storage_options: Mapping[str, str] | None = None,
        *,
        create: bool = True,
        check_writes: bool = True,
    ) -> None:
        raw = str(uri)
        if raw.startswith("file://"):
            raw = raw[len("file://") :]
        self.storage_options: dict[str, str] = {str(k): str(v) for k, v in (storage_options or {}).items()}
        self._lock = threading.Lock()
        self._tables: dict[str, DeltaTable] = {}
        self._table_locks: dict[str, threading.Lock] = {}
        self._boto: Any = None
        self._lake_id: str | None = None
        if _is_s3(raw):
            self.uri = raw.rstrip("/")
            self._open_s3(check_writes)
        else:
            path = Path(raw).expanduser().resolve()
            if path.exists() and not path.is_dir():
                raise LakeUnavailableError(f"lake path {path} is a file, not a folder: pass a folder")
            if not path.exists():
                if not create:
                    raise LakeUnavailableError(f"lake folder {path} does not exist")
                try:
                    path.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise LakeUnavailableError(f"cannot create lake folder {path}: {exc.strerror}") from exc
            self.uri = str(path)
            self._fs: pafs.FileSystem = pafs.LocalFileSystem()
            self._fs_root = self.uri

    @classmethod
    def from_settings(cls, settings: Any, *, create: bool = True, check_writes: bool = True) -> Self:
        """Open the lake that ``settings`` (a ``core.config.Settings``) names."""
        return cls(settings.lake_uri, settings.storage_options, create=create, check_writes=check_writes)

    # ------------------------------------------------------------------ object store
    def _open_s3(self, check_writes: bool) -> None:
        parsed = urlparse(self.uri)
        opts = self.storage_options
        endpoint = opts.get("AWS_ENDPOINT_URL", "")
        scheme = urlparse(endpoint).scheme if endpoint else "https"
        self._fs = pafs.S3FileSystem(
            access_key=opts.get("AWS_ACCESS_KEY_ID"),
            secret_key=opts.get("AWS_SECRET_ACCESS_KEY"),
            region=opts.get("AWS_REGION", "us-east-1"),
            endpoint_override=urlparse(endpoint).netloc if endpoint else None,
            scheme=scheme or "https",
            connect_timeout=5,
            request_timeout=10,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=2),
        )
        self._bucket = parsed.netloc
        self._prefix = parsed.path.strip("/")
        self._fs_root = f"{self._bucket}/{self._prefix}".rstrip("/")
        try:
            info = self._fs.get_file_info(self._bucket)
        except OSError as exc:
            raise LakeUnavailableError(
                f"cannot reach the object store for {self.uri}: {str(exc).splitlines()[0]}"
            ) from exc
        if info.type == pafs.FileType.NotFound:
            raise LakeUnavailableError(f"bucket {self._bucket!r} of lake {self.uri} does not exist")
        if check_writes:
            self._probe_conditional_writes()

    def _s3_client(self) -> Any:
        if self._boto is None:  # boto3 clients are thread-safe; creating one costs ~50 ms
            self._boto = self._new_s3_client()
        return self._boto

    def _new_s3_client(self) -> Any:
        import boto3  # only s3:// lakes need it
        from botocore.config import Config

        opts = self.storage_options
        return boto3.client(
            "s3",
            endpoint_url=opts.get("AWS_ENDPOINT_URL"),
            aws_access_key_id=opts.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=opts.get("AWS_SECRET_ACCESS_KEY"),
            region_name=opts.get("AWS_REGION", "us-east-1"),
            config=Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 1}),
        )

    def _probe_conditional_writes(self) -> None:
        """Refuse a store that ignores ``If-None-Match: *`` (LAKE-FACTS: it loses commits)."""
        from botocore.exceptions import BotoCoreError, ClientError

        from core.ids import new_id

        client = self._s3_client()
        key = "/".join(p for p in (self._prefix, "_lakeops", f"probe-{new_id()}") if p)
        try:
            client.put_object(Bucket=self._bucket, Key=key, Body=b"1", IfNoneMatch="*")
            try:
                client.put_object(Bucket=self._bucket, Key=key, Body=b"2", IfNoneMatch="*")
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status in (409, 412):
                    return
                raise
            raise UnsafeStoreError(
                f"the object store behind {self.uri} ignores conditional writes (If-None-Match): "
                "concurrent Delta commits would be silently lost; use a store that supports them"
            )
        except (BotoCoreError, ClientError) as exc:
            raise LakeUnavailableError(f"cannot write to {self.uri}: {str(exc).splitlines()[0]}") from exc
        finally:
            try:
                client.delete_object(Bucket=self._bucket, Key=key)
            except (BotoCoreError, ClientError):
                pass

    # ------------------------------------------------------------------ paths and files
    @property
    def is_local(self) -> bool:
        """True for a local folder lake."""
        return not _is_s3(self.uri)

    def table_uri(self, name: str) -> str:
        """Return the URI of table ``name`` (``"runs"``, ``"data/churn"``, ``"predictions/churn"``)."""
        _check_name(name)
        return f"{self.uri}/{name}"

    def _fs_path(self, rel: str) -> str:
        return f"{self._fs_root}/{rel}" if self._fs_root else rel

    def put_bytes(self, rel: str, data: bytes) -> str:
        """Write ``data`` at ``rel`` under the lake root atomically; return its URI."""
        target = self._fs_path(rel)
        parent = target.rsplit("/", 1)[0]
        if not self.is_local:
            # One PUT (atomic on S3): pyarrow's multipart upload fails on some S3-compatible
            # stores (moto: "CompleteMultipartUpload got error embedded in a 200 OK response").
            from botocore.exceptions import BotoCoreError, ClientError

            try:
                self._s3_client().put_object(Bucket=self._bucket, Key=target.split("/", 1)[1], Body=data)
            except (BotoCoreError, ClientError) as exc:
                raise LakeError(f"cannot write {rel} in lake {self.uri}: {exc}") from exc
            return f"{self.uri}/{rel}"
        try:
            self._fs.create_dir(parent, recursive=True)
            tmp = f"{target}.tmp-{os.getpid()}-{threading.get_ident()}"
            with self._fs.open_output_stream(tmp) as out:
                out.write(data)
            Path(tmp).replace(target)
        except OSError as exc:
            raise LakeError(f"cannot write {rel} in lake {self.uri}: {exc}") from exc
        return f"{self.uri}/{rel}"

    @property
    def lake_id(self) -> str:
        """This lake's identity: a random id created once, with the lake, at ``_lakeops/lake_id``.

        Things kept outside the lake that belong to it (the prediction service's write-ahead
        log) carry it, so they are never replayed into another lake. Creating it is
        create-if-absent (a hard link locally, a conditional PUT on S3): racing first users
        agree on one id.

        Raises:
            LakeError: the id cannot be read or written.
        """
        if self._lake_id is None:
            self._lake_id = self._read_or_create_id()
        return self._lake_id

    def _read_or_create_id(self) -> str:
        import uuid

        rel = "_lakeops/lake_id"
        try:
            return self.get_bytes(rel).decode("utf-8").strip()
        except FileNotFoundError:
            pass
        fresh = uuid.uuid4().hex
        if self.is_local:
            target = Path(self._fs_path(rel))
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f"lake_id.tmp-{os.getpid()}-{threading.get_ident()}")
                tmp.write_text(fresh, encoding="utf-8")
                try:
                    os.link(tmp, target)  # atomic create-if-absent: a racing creator's id wins
                except FileExistsError:
                    pass
                finally:
                    tmp.unlink(missing_ok=True)
            except OSError as exc:
                raise LakeError(f"cannot create the lake id in {self.uri}: {exc}") from exc
        else:
            from botocore.exceptions import BotoCoreError, ClientError

            key = self._fs_path(rel).split("/", 1)[1]
            try:
                self._s3_client().put_object(Bucket=self._bucket, Key=key, Body=fresh.encode(), IfNoneMatch="*")
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") not in (409, 412):
                    raise LakeError(f"cannot create the lake id in {self.uri}: {exc}") from exc
            except BotoCoreError as exc:
                raise LakeError(f"cannot create the lake id in {self.uri}: {exc}") from exc
        return self.get_bytes(rel).decode("utf-8").strip()

    def get_bytes(self, rel: str) -> bytes:
        """Read the file at ``rel`` under the lake root.

        Raises:
            FileNotFoundError: when there is no such file.
        """
        try:
            with self._fs.open_input_stream(self._fs_path(rel)) as src:
                return bytes(src.read())
        except FileNotFoundError:
            raise
        except OSError as exc:
            if "not found" in str(exc).lower() or "no such file" in str(exc).lower():
                raise FileNotFoundError(f"{rel} is not in lake {self.uri}") from exc
            raise LakeError(f"cannot read {rel} in lake {self.uri}: {exc}") from exc

    def list_files(self, rel: str) -> list[str]:
        """Return the paths (relative to the root) of files under ``rel``, recursively."""
        sel = pafs.FileSelector(self._fs_path(rel), allow_not_found=True, recursive=True)
        root = f"{self._fs_root}/"
        return sorted(
            i.path[len(root) :] for i in self._fs.get_file_info(sel) if i.type == pafs.FileType.File
        )
