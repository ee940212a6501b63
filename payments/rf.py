"""ISO 11649 structured creditor references: "RF", two check digits, up to 21 alphanumerics."""

from __future__ import annotations

import re

PREFIX = "RF"
MAX_BODY = 21
_BODY = re.compile(r"^[A-Z0-9]{1,21}$")


def _numeric(text: str) -> int:
    """Letters become numbers (A=10 … Z=35), as in IBANs."""
    return int("".join(str(int(ch, 36)) for ch in text))


def normalize(reference: str) -> str:
    """Upper case, spaces removed: the electronic form."""
    return "".join(reference.split()).upper()


def check_digits(body: str) -> str:
    body = normalize(body)
    if not _BODY.match(body):
        raise ValueError(f"an RF reference body is 1 to {MAX_BODY} letters or digits, got {body!r}")
    return f"{98 - _numeric(body + PREFIX + '00') % 97:02d}"


def make(body: str) -> str:
    body = normalize(body)
    return f"{PREFIX}{check_digits(body)}{body}"


def make_reference(checkout_id: int) -> str:
    """The reference of one checkout: unique because checkout ids are."""
    if checkout_id <= 0:
        raise ValueError("a checkout id is positive")
    return make(f"{checkout_id:08d}")


def is_valid(reference: str) -> bool:
    ref = normalize(reference)
    if len(ref) < 5 or not ref.startswith(PREFIX) or not ref[2:4].isdigit() or not _BODY.match(ref[4:]):
        return False
    return _numeric(ref[4:] + ref[:4]) % 97 == 1


def pretty(reference: str) -> str:
    """The paper form, in groups of four: RF18 5390 0754 7034."""
    ref = normalize(reference)
    return " ".join(ref[i : i + 4] for i in range(0, len(ref), 4))
