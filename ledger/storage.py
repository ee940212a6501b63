"""Files people upload, kept outside the web root and served only through permission checks.
Their bytes live in the configured object storage (kernel.storage): a local directory or a bucket."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from kernel.storage import LocalStorage, ObjectMissing, ObjectStorage

__all__ = ["FileStorage", "ObjectMissing", "StoredFile"]


@dataclass(frozen=True)
class StoredFile:
    key: str
    size: int
    sha256: str


class FileStorage:
    """Uploads under random keys of our own (never a name someone chose)."""

    def __init__(self, backend: ObjectStorage | str | Path) -> None:
        self.backend: ObjectStorage = LocalStorage(backend) if isinstance(backend, (str, Path)) else backend

    @staticmethod
    def _object(key: str) -> str:
        if len(key) != 32 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError("not a storage key")
        return f"{key[:2]}/{key}"

    def save(self, content: bytes) -> StoredFile:
        key = secrets.token_hex(16)
        self.backend.put(self._object(key), content)
        return StoredFile(key=key, size=len(content), sha256=hashlib.sha256(content).hexdigest())

    def read(self, key: str) -> bytes:
        return self.backend.get(self._object(key))

    def stream(self, key: str) -> Iterator[bytes]:
        """ObjectMissing (or ValueError for a malformed key) before the first chunk."""
        return self.backend.stream(self._object(key))

    def delete(self, key: str) -> None:
        self.backend.delete(self._object(key))
