"""What debtor and staff pages share at the web edge: a posted form read before the database
is touched, and the rejection that rolls a unit of work back."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from kernel.files import MAX_UPLOAD_BYTES, Upload

def raw_header(scope: Scope, name: bytes) -> str | None:
    """The first value of header `name` (lower case) read in place from the ASGI scope, for the
    middleware every request passes (`Headers(scope=scope)` copies the whole list each time)."""
    for key, value in scope["headers"]:
        if key == name:
            found: bytes = value
            return found.decode("latin-1")
    return None


FORM_LIMITS = {"max_files": 20, "max_fields": 200}


@dataclass
class Posted:
    """What a form carried, read before the database is touched."""

    form: FormData
    uploads: list[Upload] = field(default_factory=list)

    def text(self, name: str, limit: int = 10_000) -> str:
        value = self.form.get(name)
        return value[:limit] if isinstance(value, str) else ""

    def ids(self, name: str) -> list[int]:
        return posted_ids([v for v in self.form.getlist(name) if isinstance(v, str)])


def posted_ids(values: list[str]) -> list[int]:
    """Database ids from form values, in order, each once; anything else is left out."""
    found = []
    for value in values:
        if value.strip().isdigit() and len(value.strip()) < 12:
            found.append(int(value))
    return list(dict.fromkeys(found))


async def read_posted(request: Request, field_name: str = "files") -> Posted:
    form = await request.form(**FORM_LIMITS)
    uploads = []
    for value in form.getlist(field_name):
        if isinstance(value, UploadFile):
            # One byte more than allowed is enough to say "too large" without holding more.
            content = await value.read(MAX_UPLOAD_BYTES + 1)
            uploads.append(Upload(value.filename or "", content))
    return Posted(form=form, uploads=uploads)


class Rejected(Exception):
    """Raised by a POST handler to roll its unit of work back and answer `response` instead."""

    def __init__(self, response: Response) -> None:
        self.response = response
