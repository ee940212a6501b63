"""Statement files in, ``ParsedStatement`` values out: camt.052/053/054, MT940 or CSV.

``parse_statement_file`` is the only entry point the rest of Encours needs. It reads the whole
file or nothing: any problem raises ``StatementFileError`` with where it is.
"""

from __future__ import annotations

from reconciliation.entries import MAX_FILE_BYTES, ParsedEntry, ParsedStatement, StatementFileError
from reconciliation.parsers import camt, mt940
from reconciliation.parsers import csv as csv_format

__all__ = ["MAX_FILE_BYTES", "ParsedEntry", "ParsedStatement", "StatementFileError", "detect_format", "parse_statement_file"]


def detect_format(data: bytes) -> str:
    """``"camt"``, ``"mt940"`` or ``"csv"``, from the content (never from the file name)."""
    if camt.looks_like_xml(data):
        return "camt"
    head = data[:65536].decode("latin-1").replace("\r\n", "\n")
    if mt940.looks_like_mt940(head):
        return "mt940"
    return "csv"


def parse_statement_file(data: bytes, filename: str | None = None) -> list[ParsedStatement]:
    """Every statement in the file; raises ``StatementFileError`` and returns nothing partial.

    ``filename`` only makes messages clearer; the format is sniffed from the content: an XML
    namespace picks the camt variant, ``:20:`` with ``:60F:``/``:61:`` means MT940, anything
    else is read as CSV. Files over ``MAX_FILE_BYTES`` (50 MiB) are refused unread.
    """
    name = f"{filename}: " if filename else ""
    if len(data) > MAX_FILE_BYTES:
        raise StatementFileError(
            f"{name}the file is {len(data) / 1048576:.1f} MiB; statement files up to "
            f"{MAX_FILE_BYTES // 1048576} MiB are accepted (ask the bank for one file per day)",
            "",
        )
    if not data.strip():
        raise StatementFileError(f"{name}the file is empty", "line 1")
    kind = detect_format(data)
    try:
        if kind == "camt":
            return camt.parse(data)
        if kind == "mt940":
            return mt940.parse(data)
        return csv_format.parse(data)
    except StatementFileError as exc:
        if name:
            raise StatementFileError(name + exc.message, exc.location, exc.problems) from None
        raise
    except RecursionError:
        raise StatementFileError(f"{name}the file nests too deeply to be a bank statement", "") from None
