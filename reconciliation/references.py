"""References found in remittance text: ISO 11649 RF creditor references and invoice numbers.

The RF check-digit arithmetic lives in ``payments.rf`` (it makes the references we hand out);
this module finds them in what payers actually type.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from payments.rf import is_valid as rf_is_valid
from payments.rf import normalize as rf_normalize

__all__ = [
    "find_invoice_numbers",
    "find_rf_references",
    "first_rf_reference",
    "normalize_invoice_number",
    "rf_is_valid",
    "rf_normalize",
]

# "RF", two check digits, then 1 to 21 letters or digits, spaces allowed anywhere after RF.
_RF_START = re.compile(r"(?<![A-Za-z0-9])[Rr]\s?[Ff]\s?(\d)\s?(\d)")
_RF_MAX_BODY = 21


def find_rf_references(text: str | None) -> list[str]:
    """Valid RF references in free text, normalized (``rf18 5390 0754 7034`` → ``RF18539007547034``).

    Payers space and case references freely, so the body may be broken by single spaces. Every
    candidate that ends where a word ends and whose check digits hold is kept, longest first: a
    spaced reference can read on into the next word and still check (1 chance in 97, e.g.
    ``RF22 BV merci``), and matching then tries each against the references we issued.
    """
    if not text:
        return []
    found: list[str] = []
    for start in _RF_START.finditer(text):
        head = "RF" + start.group(1) + start.group(2)
        body: list[str] = []
        ends: list[int] = []  # body lengths at which a word ends
        i = start.end()
        while i < len(text) and len(body) < _RF_MAX_BODY:
            ch = text[i]
            if ch.isascii() and ch.isalnum():
                body.append(ch.upper())
                i += 1
                nxt = text[i] if i < len(text) else " "
                if not (nxt.isascii() and nxt.isalnum()):
                    ends.append(len(body))
            elif ch in " \u00a0" and body and i + 1 < len(text) and text[i + 1].isascii() and text[i + 1].isalnum():
                i += 1
            elif ch in " \u00a0" and not body:
                i += 1
            else:
                break
        for length in reversed(ends):
            candidate = head + "".join(body[:length])
            if rf_is_valid(candidate) and candidate not in found:
                found.append(candidate)
    return found


def first_rf_reference(text: str | None) -> str | None:
    refs = find_rf_references(text)
    return refs[0] if refs else None


_NON_ALNUM = re.compile(r"[^A-Z0-9]")


def normalize_invoice_number(number: str) -> str:
    """Upper case, only letters and digits: ``F-2026-0468`` → ``F20260468``."""
    return _NON_ALNUM.sub("", number.upper())


def _stream(text: str) -> tuple[str, list[bool]]:
    """The text's ASCII letters and digits upper-cased, and where each word starts."""
    chars: list[str] = []
    starts: list[bool] = []
    new_word = True
    for ch in text:
        if ch.isascii() and ch.isalnum():
            chars.append(ch.upper())
            starts.append(new_word)
            new_word = False
        else:
            new_word = True
    starts.append(True)  # the end of the text ends a word
    return "".join(chars), starts


def _core(normalized: str) -> str:
    """The number without its letter prefix: ``F20260468`` → ``20260468``."""
    return normalized.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def find_invoice_numbers(text: str | None, known: Iterable[str]) -> set[str]:
    """Which of the ``known`` normalized invoice numbers the text mentions.

    Separators are free (``F 2026 0468``, ``F-2026-0468``, ``F2026/0468``) and the letter
    prefix may be another word for invoice (``FACT2026/0468``, ``Facture n° 2026-0468``) when
    only one known number has those digits. A match must end where a word ends and may not
    start after digits of the same word, so ``F-2026-046`` is not found in ``F-2026-0468``.
    """
    if not text:
        return set()
    stream, starts = _stream(text)
    numbers = {normalize_invoice_number(n) for n in known}
    numbers.discard("")
    by_core: dict[str, list[str]] = {}
    for number in numbers:
        core = _core(number)
        if len(core) >= 4 and core != number:
            by_core.setdefault(core, []).append(number)
    found: set[str] = set()
    for number in numbers:
        if _occurs(stream, starts, number, prefix_ok=False):
            found.add(number)
    for core, owners in by_core.items():
        if len(owners) == 1 and owners[0] not in found and _occurs(stream, starts, core, prefix_ok=True):
            found.add(owners[0])
    return found


def _occurs(stream: str, starts: list[bool], needle: str, prefix_ok: bool) -> bool:
    at = stream.find(needle)
    while at != -1:
        end = at + len(needle)
        if starts[end] and (starts[at] or (prefix_ok and _letters_since_word_start(stream, starts, at))):
            return True
        at = stream.find(needle, at + 1)
    return False


def _letters_since_word_start(stream: str, starts: list[bool], at: int) -> bool:
    i = at - 1
    while i >= 0:
        if not stream[i].isalpha():
            return False
        if starts[i]:
            return True
        i -= 1
    return True
