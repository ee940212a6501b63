"""SWIFT MT940 customer statements, as banks really send them.

Written here rather than on the ``mt-940`` package: that package stops on files banks do
send (a wrapped ``:28C:``, a customer reference longer than 16 characters), keeps only the
last statement's balances when a file holds several, and runs the German ``?31`` IBAN into
the ``?32`` name. The format is small enough to read carefully ourselves.

Handled: several statements per file; with or without SWIFT blocks ``{1:…}{2:…}{4:…-}``;
wrapped lines; zero-padded amounts (``000000004433,52``, ``9,``); ``:61:`` with or without
its entry date; reversal marks ``RC``/``RD``; the currency from ``:60F:``/``:60M:``; and
``:86:`` in three styles — German ``?20…?32`` subfields, Dutch/French ``/EREF/…/REMI/…``
keys, and free text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from stdnum import iban as stdnum_iban

from ledger.money import CurrencyError, Money, check_currency
from kernel.i18n import N_
from kernel.user_error import UserError
from reconciliation.entries import CreditDebit, ParsedEntry, ParsedStatement, to_minor
from reconciliation.references import first_rf_reference

_TAG = re.compile(r"^:(\d{2}[A-Z]?):")
_BLOCK4 = re.compile(r"\{4:\s*\n(.*?)\n-\}", re.S)
_TERMINATOR = re.compile(r"^-(\}.*|[A-Z]{0,3})?\s*$")
_BALANCE = re.compile(r"^(?P<mark>[CD])(?P<date>\d{6})(?P<ccy>[A-Z]{3})(?P<amount>\d[\d,]*)$")
_LINE61 = re.compile(
    r"^(?P<vdate>\d{6})(?P<edate>\d{4})?(?P<mark>R?[CD])(?P<funds>[A-Z])?(?P<amount>\d[\d,]*)"
    r"(?P<type>[A-Z][A-Z0-9]{3})(?P<custref>(?:(?!//)[^\n])*)(?://(?P<bankref>[^\n]*))?(?:\n(?P<extra>.*))?$",
    re.S,
)
_WRAP_WIDTH = 65  # SWIFT lines are 65 characters; a full line was wrapped, a short one ended
_NO_REFERENCE = {"NONREF", "EREF", "PREF", "KREF", "MARF", "NOTPROVIDED", ""}
_IBAN_START = re.compile(r"^([A-Z]{2}\d{2}[A-Z0-9]{10,30})\b")


def looks_like_mt940(text: str) -> bool:
    return bool(re.search(r"^:20:", text, re.M)) and bool(re.search(r"^:6[01][FM]?:", text, re.M))


@dataclass
class _Field:
    tag: str
    lines: list[str]
    line_no: int

    @property
    def value(self) -> str:
        return "\n".join(self.lines)


@dataclass
class _Draft:
    line_no: int
    fields: list[_Field] = field(default_factory=list)


def parse(data: bytes) -> list[ParsedStatement]:
    text = _decode(data).replace("\r\n", "\n").replace("\r", "\n")
    drafts = _split(text)
    if not drafts:
        raise UserError(N_("expected an MT940 statement starting with :20:")).at(line=1)
    return [_statement(d) for d in drafts]


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # SWIFT's character set is a subset; older exports are Latin-1


def _split(text: str) -> list[_Draft]:
    """The statements of the file, each a list of tag fields with their continuation lines."""
    lines = text.split("\n")
    # Line numbers of SWIFT-framed files are kept by blanking the framing, not cutting it out.
    if "{4:" in text:
        keep = [False] * len(lines)
        offset = 0
        starts = []
        for i, line in enumerate(lines):
            starts.append(offset)
            offset += len(line) + 1
        for block in _BLOCK4.finditer(text):
            first = text.count("\n", 0, block.start(1))
            last = text.count("\n", 0, block.end(1))
            for i in range(first, last + 1):
                keep[i] = True
        lines = [line if keep[i] else "" for i, line in enumerate(lines)]

    drafts: list[_Draft] = []
    current: _Draft | None = None
    inside = False
    for i, line in enumerate(lines):
        tag = _TAG.match(line)
        if tag:
            if tag.group(1) == "20":
                current = _Draft(line_no=i + 1)
                drafts.append(current)
            if current is None:
                raise UserError(N_("expected :20: to start a statement, found :%(tag)s:"),
                                tag=tag.group(1)).at(line=i + 1)
            current.fields.append(_Field(tag.group(1), [line[tag.end() :]], i + 1))
            inside = True
        elif _TERMINATOR.match(line) and _ends_message(lines, i):
            inside = False
        elif inside and current is not None and current.fields:
            current.fields[-1].lines.append(line)
        # Anything else sits outside a message: headers such as "ABNANL2A" / "940" / ":940:".
    return drafts


def _ends_message(lines: list[str], i: int) -> bool:
    """A "-" line ends a message only if the next tag is a new statement; ING wraps "-" into :86:."""
    for line in lines[i + 1 :]:
        tag = _TAG.match(line)
        if tag:
            return tag.group(1) == "20"
    return True


def _statement(draft: _Draft) -> ParsedStatement:
    warnings: list[str] = []
    values: dict[str, _Field] = {}
    entries: list[ParsedEntry] = []
    pending: tuple[_Field, dict[str, object]] | None = None
    currency: str | None = None
    opening = closing = None
    opening_date = closing_date = None

    def flush(details: _Field | None) -> None:
        nonlocal pending
        if pending is not None:
            entries.append(_entry(pending[0], pending[1], details))
            pending = None

    for f in draft.fields:
        if f.tag in ("60F", "60M"):
            opening, opening_date = _balance(f)
            currency = opening.currency
        elif f.tag in ("62F", "62M"):
            flush(None)
            closing, closing_date = _balance(f)
            currency = currency or closing.currency
        elif f.tag == "61":
            flush(None)
            if currency is None:
                raise UserError(N_("expected the opening balance :60F: before the first :61:")).at(line=f.line_no)
            pending = (f, _line61(f, currency))
        elif f.tag == "86":
            if pending is not None:
                flush(f)
            # An :86: after the closing balance is about the statement, not an entry.
        else:
            values.setdefault(f.tag, f)

    flush(None)
    account_field = values.get("25")
    account = _one_line(account_field.value) if account_field else None
    if account and currency and account.upper().endswith(currency) and len(account) > 3:
        account = account[: -len(currency)].rstrip()  # "NL34RABO0142623393 EUR": the currency is not the account
    account_iban = _account_iban(account)
    if opening is not None and closing is not None and opening.currency == closing.currency:
        moved = sum(e.amount.minor for e in entries if e.currency == opening.currency)
        if opening.minor + moved != closing.minor:
            warnings.append(
                f"line {draft.line_no}: balances do not add up: opening {opening.to_decimal()} + entries "
                f"{Money(moved, opening.currency).to_decimal()} ≠ closing {closing.to_decimal()} {closing.currency}"
            )
    if closing is None:
        warnings.append(f"line {draft.line_no}: the statement has no closing balance (:62F:)")
    reference = _one_line(values["20"].value) if "20" in values else None
    number_field = values.get("28C") or values.get("28")
    number = _one_line(number_field.value).replace(" ", "") if number_field else None
    return ParsedStatement(
        format="mt940",
        statement_id="/".join(p for p in (reference, number) if p) or None,
        account_iban=account_iban,
        account_id=account,
        account_currency=currency,
        from_date=opening_date,
        to_date=closing_date,
        opening_balance=opening,
        closing_balance=closing,
        entries=tuple(entries),
        warnings=tuple(warnings),
    )


def _one_line(value: str) -> str:
    return "".join(part.strip() for part in value.split("\n"))


def _account_iban(account: str | None) -> str | None:
    if not account:
        return None
    compact = account.replace(" ", "").upper()
    # ":25:NL77INGB0574908765EUR" and ":25:NL34RABO0142623393 EUR" carry the currency after the IBAN.
    for candidate in (compact, compact[:-3]):
        if len(candidate) >= 15 and stdnum_iban.is_valid(candidate):
            return candidate
    return None


def _date(text: str, line_no: int) -> date:
    year, month, day = int(text[:2]), int(text[2:4]), int(text[4:6])
    try:
        return date(2000 + year if year < 80 else 1900 + year, month, day)
    except ValueError:
        raise UserError(N_("expected a date YYMMDD, got %(value)s"), value=repr(text)).at(line=line_no) from None


def _amount(text: str, currency: str, line_no: int) -> int:
    # MT940 amounts: digits, one comma as the decimal mark, maybe no decimals ("9,"), maybe zero-padded.
    if text.count(",") != 1:
        raise UserError(N_("expected an amount with a decimal comma such as 1405,31, got %(value)s"),
                        value=repr(text)).at(line=line_no)
    whole, fraction = text.split(",")
    try:
        return to_minor(Decimal(f"{whole or '0'}.{fraction or '0'}"), currency)
    except UserError as exc:
        raise exc.at(line=line_no) from None


def _balance(f: _Field) -> tuple[Money, date]:
    raw = _one_line(f.value)
    m = _BALANCE.match(raw)
    if m is None:
        raise UserError(N_("expected a balance such as C140219EUR662,23 in :%(tag)s:, got %(value)s"), tag=f.tag,
                        value=repr(raw)).at(line=f.line_no)
    try:
        currency = check_currency(m.group("ccy"))
    except CurrencyError:
        raise UserError(N_("unknown currency %(value)s in :%(tag)s:"), value=repr(m.group("ccy")),
                        tag=f.tag).at(line=f.line_no) from None
    minor = _amount(m.group("amount"), currency, f.line_no)
    return Money(-minor if m.group("mark") == "D" else minor, currency), _date(m.group("date"), f.line_no)


def _line61(f: _Field, currency: str) -> dict[str, object]:
    raw = "\n".join(line.rstrip() for line in f.lines).strip("\n")
    m = _LINE61.match(raw)
    if m is None:
        raise UserError(N_("expected a statement line :61: such as 1402200220C1,56NTRFNONREF//bankref, got %(value)s"),
                        value=repr(raw.split("\n")[0])).at(line=f.line_no)
    value_date = _date(m.group("vdate"), f.line_no)
    booking = None
    if m.group("edate"):
        month, day = int(m.group("edate")[:2]), int(m.group("edate")[2:])
        year = value_date.year
        # The entry date has no year: it is the value date's, except across New Year.
        if month == 12 and value_date.month == 1:
            year -= 1
        elif month == 1 and value_date.month == 12:
            year += 1
        try:
            booking = date(year, month, day)
        except ValueError:
            raise UserError(N_("expected an entry date MMDD, got %(value)s"),
                            value=repr(m.group("edate"))).at(line=f.line_no) from None
    mark = m.group("mark")
    minor = _amount(m.group("amount"), currency, f.line_no)
    # C credit, D debit; RC reverses a credit (money out), RD reverses a debit (money in).
    negative = mark in ("D", "RC")
    return {
        "amount": Money(-minor if negative else minor, currency),
        "negative": negative,
        "reversal": mark.startswith("R"),
        "value_date": value_date,
        "booking_date": booking,
        "type": m.group("type"),
        "custref": (m.group("custref") or "").strip(),
        "bankref": (m.group("bankref") or "").strip() or None,
        "extra": " ".join((m.group("extra") or "").split()) or None,
    }


def _entry(f61: _Field, line: dict[str, object], details: _Field | None) -> ParsedEntry:
    amount: Money = line["amount"]  # type: ignore[assignment]
    info = _details(details) if details is not None else {}
    custref = str(line["custref"])
    end_to_end = info.get("end_to_end")
    if end_to_end is None and custref.upper() not in _NO_REFERENCE and not _IBAN_START.match(custref):
        end_to_end = custref
    name = info.get("name")
    iban = info.get("iban")
    if iban is None and _IBAN_START.match(custref) and stdnum_iban.is_valid(custref):
        iban = custref  # SNS-style: the counterparty's IBAN as the customer reference
        name = name or line["extra"]  # type: ignore[assignment]
    extra = line["extra"]
    if iban is None and isinstance(extra, str) and _IBAN_START.match(extra) and stdnum_iban.is_valid(extra.split()[0]):
        iban = extra.split()[0]  # Rabobank-style: the counterparty account as supplementary details
    text = info.get("text")
    ref = info.get("reference")
    ref_type = info.get("reference_type")
    if ref is None and (found := first_rf_reference(text)):
        ref, ref_type = found, "SCOR"
    return ParsedEntry(
        amount=amount,
        credit_debit=CreditDebit.DEBIT if line["negative"] else CreditDebit.CREDIT,
        value_date=line["value_date"],  # type: ignore[arg-type]
        booking_date=line["booking_date"],  # type: ignore[arg-type]
        reversal=bool(line["reversal"]),
        counterparty_name=name,
        counterparty_iban=iban,
        counterparty_bic=info.get("bic"),
        remittance_text=text,
        structured_reference=ref,
        structured_reference_type=ref_type,
        end_to_end_id=end_to_end,
        bank_reference=line["bankref"],  # type: ignore[arg-type]
        entry_reference=line["bankref"],  # type: ignore[arg-type]
        bank_transaction_code=str(line["type"]) + (f" {info['gvc']}" if info.get("gvc") else ""),
        location=f"line {f61.line_no}",
    )


# -- :86: --------------------------------------------------------------------------------------

_GERMAN = re.compile(r"^\d{3}([?>])\d\d")
_SEPA_KEYS = re.compile(r"(EREF|KREF|MREF|CRED|DEBT|SVWZ|ABWA|ABWE|IBAN|BIC|COAM|OAMT)\+")
_SLASH_KEYS = (
    "EREF|CNTP|REMI|NAME|ORDP|BENM|ADDR|IBAN|BIC|ISDT|MARF|CSID|RTRN|PREF|TRCD|PURP|ULTC|ULTD|ULTB|"
    "SVCL|EXCH|OCMT|CHGS|INFO|ID|CDTRREF|CDTRREFTP|BUSP|TRTP|ACCW|RTYP|KREF"
)
_SLASH = re.compile(r"/(" + _SLASH_KEYS + r")/")


def _details(f: _Field) -> dict[str, str | None]:
    lines = [line.rstrip() for line in f.lines]
    first = lines[0].lstrip() if lines else ""
    if _GERMAN.match(first):
        return _german("".join(lines), _GERMAN.match(first).group(1))  # type: ignore[union-attr]
    joined = "".join(lines)
    if first.startswith("/") and _SLASH.search(joined):
        return _slashed(joined)
    return _free(f.lines)


def _german(value: str, sep: str) -> dict[str, str | None]:
    """DFÜ-Abkommen subfields: ?00 posting text, ?20-?29 and ?60-?63 purpose, ?30 BIC, ?31 IBAN, ?32-?33 name."""
    parts = re.split(re.escape(sep) + r"(\d\d)", value)
    sub: dict[int, str] = {}
    for key, text in zip(parts[1::2], parts[2::2]):
        sub[int(key)] = sub.get(int(key), "") + text
    purpose = "".join(sub.get(k, "") for k in list(range(20, 30)) + list(range(60, 64)))
    fields: dict[str, str] = {}
    pieces = _SEPA_KEYS.split(purpose)
    if len(pieces) > 1:
        for key, text in zip(pieces[1::2], pieces[2::2]):
            fields.setdefault(key, text.strip())
    text = fields.get("SVWZ") or purpose.strip()
    iban = (sub.get(31) or "").replace(" ", "").upper()
    bic = (sub.get(30) or "").strip().upper()
    end_to_end = fields.get("EREF")
    return {
        "name": " ".join((sub.get(32, "") + sub.get(33, "")).split()) or None,
        "iban": iban if iban and stdnum_iban.is_valid(iban) else None,
        "bic": bic if re.fullmatch(r"[A-Z]{6}[A-Z0-9]{2}([A-Z0-9]{3})?", bic) else None,
        "text": " ".join((text or "").split()) or " ".join((sub.get(0) or "").split()) or None,
        "end_to_end": end_to_end if end_to_end and end_to_end.upper() not in _NO_REFERENCE else None,
        "gvc": value[:3],
    }


def _slashed(value: str) -> dict[str, str | None]:
    """Keyed details: ``/EREF/…//CNTP/IBAN/BIC/NAME/CITY//REMI/USTD//text/`` (ING, ABN AMRO, Rabobank, French banks)."""
    marks = list(_SLASH.finditer(value))
    keyed: dict[str, str] = {}
    for n, m in enumerate(marks):
        end = marks[n + 1].start() if n + 1 < len(marks) else len(value)
        keyed.setdefault(m.group(1), value[m.end() : end])
    out: dict[str, str | None] = {"name": None, "iban": None, "bic": None, "text": None, "end_to_end": None}
    if "CNTP" in keyed:
        parts = keyed["CNTP"].split("/")
        parts += [""] * (4 - len(parts))
        out["iban"] = parts[0].replace(" ", "").upper() or None
        out["bic"] = parts[1].strip() or None
        out["name"] = parts[2].strip() or None
    if "NAME" in keyed:
        out["name"] = out["name"] or keyed["NAME"].strip("/ ") or None
    if "IBAN" in keyed and not out["iban"]:
        out["iban"] = keyed["IBAN"].strip("/ ").replace(" ", "").upper() or None
    if out["iban"] and not stdnum_iban.is_valid(out["iban"]):
        out["iban"] = None
    if "EREF" in keyed:
        eref = keyed["EREF"].strip("/ ")
        out["end_to_end"] = eref if eref.upper() not in _NO_REFERENCE else None
    remi = keyed.get("REMI", "")
    if remi.startswith("STRD/"):
        # /REMI/STRD/CUR/reference/ (or ISO/ for an RF reference)
        kind, _, ref = remi[5:].partition("/")
        out["reference"] = "".join(ref.strip("/").split()) or None
        out["reference_type"] = "SCOR" if kind == "ISO" or (out["reference"] or "").upper().startswith("RF") else kind
        if out["reference"] and out["reference_type"] == "SCOR":
            out["reference"] = out["reference"].upper()
    elif remi:
        if remi.startswith("USTD//"):
            remi = remi[6:]
        out["text"] = " ".join(remi.rstrip("/").split()) or None
    return out


def _free(lines: list[str]) -> dict[str, str | None]:
    pieces: list[str] = []
    for n, line in enumerate(lines):
        pieces.append(line.strip() if n == 0 else line.rstrip())
        if n + 1 < len(lines):
            pieces.append("" if len(line) >= _WRAP_WIDTH and line.strip() else " ")
    text = " ".join("".join(pieces).split())
    out: dict[str, str | None] = {"text": text or None}
    head = _IBAN_START.match(lines[0].strip()) if lines else None
    if head and stdnum_iban.is_valid(head.group(1)):
        # "NL49RABO0166416932 gerrits glas en schilderwerk": IBAN then name on the first line.
        out["iban"] = head.group(1)
        out["name"] = lines[0].strip()[head.end() :].strip() or None
    return out
