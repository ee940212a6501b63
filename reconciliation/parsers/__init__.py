"""Statement files in, ``ParsedStatement`` values out: camt.052/053/054, MT940 or CSV.

``parse_statement_file`` is the only entry point the rest of Encours needs. It reads the whole
file or nothing: any problem raises ``UserError`` (or ``UserErrors``, one per bad line) saying
where it is: at its line (``.line``) or naming the XML element in the message.
"""

from __future__ import annotations

from kernel.i18n import N_
from kernel.user_error import UserError
from reconciliation.entries import MAX_FILE_BYTES, ParsedEntry, ParsedStatement
from reconciliation.parsers import camt, mt940
from reconciliation.parsers import csv as csv_format

__all__ = ["MAX_FILE_BYTES", "ParsedEntry", "ParsedStatement", "detect_format", "parse_statement_file"]


def detect_format(data: bytes) -> str:
    """``"camt"``, ``"mt940"`` or ``"csv"``, from the content (never from the file name)."""
    if camt.looks_like_xml(data):
        return "camt"
    head = data[:65536].decode("latin-1").replace("\r\n", "\n")
    if mt940.looks_like_mt940(head):
        return "mt940"
    return "csv"


def parse_statement_file(data: bytes) -> list[ParsedStatement]:
    """Every statement in the file; raises ``UserError``/``UserErrors`` and returns nothing partial.

    The format is sniffed from the content: an XML
    namespace picks the camt variant, ``:20:`` with ``:60F:``/``:61:`` means MT940, anything
    else is read as CSV. Files over ``MAX_FILE_BYTES`` (50 MiB) are refused unread.
    """
    if len(data) > MAX_FILE_BYTES:
        raise UserError(N_("the file is %(size)s MiB; statement files up to %(limit)s MiB are accepted (ask the bank "
                           "for one file per day)"), size=f"{len(data) / 1048576:.1f}",
                        limit=str(MAX_FILE_BYTES // 1048576))
    if not data.strip():
        raise UserError(N_("the file is empty")).at(line=1)
    kind = detect_format(data)
    try:
        if kind == "camt":
            return camt.parse(data)
        if kind == "mt940":
            return mt940.parse(data)
        return csv_format.parse(data)
    except RecursionError:
        raise UserError(N_("the file nests too deeply to be a bank statement")) from None
