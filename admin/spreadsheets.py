"""Lists as files people open in a spreadsheet: CSV and Excel (xlsx), written as rows come.

Cells are typed: amounts are `Money` (written as a decimal number in the currency's precision;
the list carries the currency in a column of its own), days are `date`, moments are naive
`datetime`s already in the reader's time zone, counts are `int`. Any text that a spreadsheet
would read as a formula (starting with =, +, -, @, a tab or a carriage return) is written with a
leading apostrophe in both formats, so an invoice number or a customer name typed by someone
else never runs as a formula on the reader's machine.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Iterable, Iterator

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from ledger.money import Money, decimals

FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")
CHUNK = 64 * 1024
FORMATS = {"csv": "text/csv; charset=utf-8",
           "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


def neutralised(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_LEADS) else text


def amount(money: Money) -> Decimal:
    """The amount as a decimal with exactly the currency's number of decimals (0.00, never 0E-2)."""
    places = decimals(money.currency)
    return Decimal(money.minor).scaleb(-places).quantize(Decimal(1).scaleb(-places))


def _plain(value: Any) -> Any:
    """A cell's value as both formats hold it."""
    if value is None:
        return None
    if isinstance(value, Money):
        return amount(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, Decimal, date)):  # datetime is a date
        return value
    return neutralised(str(value))


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def csv_chunks(header: list[str], rows: Iterable[list[Any]], batch: int = 500) -> Iterator[bytes]:
    """UTF-8 with a byte-order mark (so Excel reads accents right), a header row, then the rows,
    `batch` rows per chunk."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([neutralised(title) for title in header])
    yield ("\ufeff" + buffer.getvalue()).encode("utf-8")
    buffer.seek(0)
    buffer.truncate()
    pending = 0
    for row in rows:
        writer.writerow([_csv_text(_plain(value)) for value in row])
        pending += 1
        if pending >= batch:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    if pending:
        yield buffer.getvalue().encode("utf-8")


def _xlsx_cell(sheet: WriteOnlyWorksheet, value: Any) -> Any:
    plain = _plain(value)
    if isinstance(value, Money):
        cell = WriteOnlyCell(sheet, value=plain)
        places = decimals(value.currency)
        cell.number_format = "#,##0" + ("." + "0" * places if places else "")
        return cell
    if isinstance(plain, datetime):
        cell = WriteOnlyCell(sheet, value=plain)
        cell.number_format = "yyyy-mm-dd hh:mm:ss"
        return cell
    if isinstance(plain, date):
        cell = WriteOnlyCell(sheet, value=plain)
        cell.number_format = "yyyy-mm-dd"
        return cell
    return plain


def xlsx_chunks(title: str, header: list[str], rows: Iterable[list[Any]]) -> Iterator[bytes]:
    """An xlsx workbook of one sheet, built in openpyxl's write-only mode (rows go to a temporary
    file as they come, never all held in memory), then read back in chunks."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title=title[:31])
    sheet.append([neutralised(t) for t in header])
    for row in rows:
        sheet.append([_xlsx_cell(sheet, value) for value in row])
    handle, path = tempfile.mkstemp(suffix=".xlsx")
    os.close(handle)
    try:
        workbook.save(path)
        with open(path, "rb") as saved:
            while chunk := saved.read(CHUNK):
                yield chunk
    finally:
        os.unlink(path)
