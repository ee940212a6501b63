"""A file a person uploaded, as services see it: no web framework types."""

from __future__ import annotations

from dataclasses import dataclass

MAX_UPLOAD_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class Upload:
    filename: str
    content: bytes
