"""Where uploaded files' bytes live: a local directory (one machine) or an S3-compatible bucket
(several web machines share it). Callers name objects by key; the backend is chosen by settings."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Protocol

if TYPE_CHECKING:
    from kernel.settings import Settings

CHUNK_BYTES = 64 * 1024
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")


class ObjectMissing(Exception):
    """No object is stored under the key."""


class StorageUnavailable(Exception):
    """The storage could not be reached or refused us (credentials, bucket); the message says which."""


def check_key(key: str) -> str:
    """Keys are relative paths of plain names: never `..`, never absolute, never empty."""
    if len(key) > 512 or not _KEY.fullmatch(key) or any(part in (".", "..") for part in key.split("/")):
        raise ValueError(f"not a storage key: {key!r}")
    return key


class ObjectStorage(Protocol):
    def put(self, key: str, content: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def stream(self, key: str) -> Iterator[bytes]:
        """The object's bytes in chunks; ObjectMissing is raised before the first chunk is yielded
        (callers may answer 404 before they start a response)."""
        ...

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...


class LocalStorage:
    """Files under one directory (the layout of earlier versions: `ab/abcdef…`)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, content: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{secrets.token_hex(4)}.part")
        temporary.write_bytes(content)
        os.replace(temporary, path)  # never a half-written file under its real name

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectMissing(key) from None

    def stream(self, key: str) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        return _chunks(handle)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()


def _chunks(handle: Any) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


class S3Storage:
    """Objects in one bucket (AWS S3, MinIO, Ceph, Scaleway, OVH…), under an optional prefix."""

    def __init__(self, bucket: str, *, prefix: str = "", endpoint_url: str | None = None, region: str | None = None,
                 access_key_id: str | None = None, secret_access_key: str | None = None) -> None:
        import boto3
        from botocore.config import Config as BotoConfig

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        # Without keys, boto3 looks for them itself (environment, instance role, ~/.aws).
        self._client: Any = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region, aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=BotoConfig(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30),
        )

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put(self, key: str, content: bytes) -> None:
        # A PUT replaces the object whole: readers never see a partial one.
        self._call("put_object", Key=self._name(key), Body=content)

    def get(self, key: str) -> bytes:
        return b"".join(self.stream(key))

    def stream(self, key: str) -> Iterator[bytes]:
        response = self._call("get_object", Key=self._name(key))
        return _body_chunks(response["Body"])

    def delete(self, key: str) -> None:
        self._call("delete_object", Key=self._name(key))

    def exists(self, key: str) -> bool:
        try:
            self._call("head_object", Key=self._name(key))
        except ObjectMissing:
            return False
        return True

    def check(self) -> None:
        """The bucket answers with these credentials (StorageUnavailable otherwise)."""
        self._call("head_bucket", key_name=False)

    def _call(self, operation: str, key_name: bool = True, **arguments: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client, operation)(Bucket=self.bucket, **arguments)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if key_name and code in ("NoSuchKey", "404", "NotFound"):
                raise ObjectMissing(arguments.get("Key", "")) from None
            raise StorageUnavailable(f"S3 {operation} on bucket {self.bucket!r} failed: {code or error}") from None
        except BotoCoreError as error:
            raise StorageUnavailable(f"S3 {operation} on bucket {self.bucket!r} failed: {error}") from None


def _body_chunks(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(CHUNK_BYTES)
    finally:
        body.close()


def storage_from_settings(settings: "Settings") -> ObjectStorage:
    if settings.storage_backend == "s3":
        return S3Storage(
            settings.s3_bucket or "", prefix=settings.s3_prefix, endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=str(settings.s3_access_key_id) if settings.s3_access_key_id else None,
            secret_access_key=str(settings.s3_secret_access_key) if settings.s3_secret_access_key else None,
        )
    return LocalStorage(settings.storage_dir)
