"""ISO 20022 camt.052 (report), camt.053 (statement) and camt.054 (notification), 001.02 onwards.

Read as OCA's ``account_statement_import_camt`` does: the namespace comes from the document,
batch entries are unfolded into their transaction details, and the result is plain
``ParsedStatement`` values. Element names that changed between versions are looked up in
both spellings (``Sts`` vs ``Sts/Cd``, ``Dbtr/Nm`` vs ``Dbtr/Pty/Nm``, ``BIC`` vs ``BICFI``).
"""

from __future__ import annotations

import re
from datetime import date, datetime

from lxml import etree

from kernel.i18n import N_
from kernel.user_error import UserError
from ledger.money import Money
from reconciliation.entries import (
    CreditDebit,
    EntryStatus,
    ParsedEntry,
    ParsedStatement,
    at_element,
    money_from_text,
)
from reconciliation.references import first_rf_reference

NAMESPACE = re.compile(r"^urn:iso:std:iso:20022:tech:xsd:camt\.(05[234])\.001\.(\d{2})$")
SUPPORTED_VERSIONS = range(2, 14)  # 001.02 … 001.13; 001.01 predates SEPA and nobody sends it

# message → (document element, statement element)
_CONTAINERS = {
    "052": ("BkToCstmrAcctRpt", "Rpt"),
    "053": ("BkToCstmrStmt", "Stmt"),
    "054": ("BkToCstmrDbtCdtNtfctn", "Ntfctn"),
}
_OPENING = ("OPBD", "PRCD")
_CLOSING = ("CLBD",)
_NOT_PROVIDED = {"NOTPROVIDED", "NOT PROVIDED", "NONREF"}


def _parser() -> etree.XMLParser:
    # No entity expansion, no DTD, no network, no oversize text nodes: bank files never need them.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, dtd_validation=False)


def looks_like_xml(data: bytes) -> bool:
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"<")


def _refuse_doctype(data: bytes) -> None:
    # A DOCTYPE can only come before the root element; bank files never carry one, and it is
    # the door to external entities and entity-expansion bombs.
    root = re.search(rb"<[A-Za-z_]", data)
    prolog = data[: root.start()] if root else data
    if b"<!DOCTYPE" in prolog.upper() or b"<!ENTITY" in prolog.upper():
        raise UserError(N_("XML with a DOCTYPE (DTD or entity declarations) is refused: bank statements never carry "
                           "one")).at(line=1)


def parse(data: bytes) -> list[ParsedStatement]:
    _refuse_doctype(data)
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if exc.lineno else 1
        raise UserError(N_("the file is not well-formed XML: %(detail)s"), detail=exc.msg).at(line=line) from None
    tree = root.getroottree()
    if tree.docinfo.doctype:
        raise UserError(N_("XML with a DOCTYPE is refused: bank statements never carry one")).at(line=1)
    ns = etree.QName(root).namespace or ""
    match = NAMESPACE.match(ns)
    if match is None:
        raise at_element(UserError(N_("expected an ISO 20022 camt.052, camt.053 or camt.054 document (namespace "
                                      "urn:iso:std:iso:20022:tech:xsd:camt.05x.001.NN), got namespace %(namespace)s"),
                                   namespace=repr(ns or "none")), f"/{etree.QName(root).localname}")
    message, version = match.group(1), int(match.group(2))
    if version not in SUPPORTED_VERSIONS:
        raise at_element(UserError(N_("%(version)s is not supported; expected versions 001.02 to 001.13"),
                                   version=f"camt.{message}.001.{version:02d}"), "/Document")
    return _Reader(ns, f"camt.{message}.001.{version:02d}", message).read(root)


_OWN_MAP = {"Ntry", "TxDtls", "Stmt", "Rpt", "Ntfctn"}


class _Node:
    """An element and the descendants found under each relative path (see ``_Reader.node``)."""

    __slots__ = ("el", "paths")

    def __init__(self, el: etree._Element, paths: dict[str, list[etree._Element]]) -> None:
        self.el = el
        self.paths = paths


class _Reader:
    def __init__(self, ns: str, format_name: str, message: str) -> None:
        self.ns = "{" + ns + "}"
        self.format = format_name
        self.container, self.statement_tag = _CONTAINERS[message]
        self.names: dict[object, tuple[str, bool]] = {}  # tag → (local name, walked into)

    # -- element helpers -------------------------------------------------------------------
    # ElementPath lookups cost more than the parse itself on big files, so each element that
    # is queried is walked once into {relative path: [elements]}; entries and transaction
    # details get their own maps, so a statement's map stops at its Ntry elements.

    def node(self, el: etree._Element) -> _Node:
        paths: dict[str, list[etree._Element]] = {}
        ns, cut, names = self.ns, len(self.ns), self.names
        # Breadth first, so the elements under one path stay in document order; a loop rather
        # than recursion, and each tag's local name worked out once per file.
        todo: list[tuple[etree._Element, str]] = [(el, "")]
        for parent, prefix in todo:
            for child in parent:
                tag = child.tag
                known = names.get(tag)
                if known is None:
                    if not isinstance(tag, str):
                        continue  # comments and processing instructions
                    local = tag[cut:] if tag.startswith(ns) else tag
                    known = names[tag] = (local, local not in _OWN_MAP)
                path = prefix + known[0]
                found = paths.get(path)
                if found is None:
                    paths[path] = [child]
                else:
                    found.append(child)
                if known[1] and len(child):
                    todo.append((child, path + "/"))
        return _Node(el, paths)

    def find(self, node: _Node | None, path: str) -> etree._Element | None:
        if node is None:
            return None
        found = node.paths.get(path)
        return found[0] if found else None

    def findall(self, node: _Node, path: str) -> list[etree._Element]:
        return node.paths.get(path, [])

    def text(self, node: _Node | None, path: str) -> str | None:
        found = self.find(node, path)
        if found is None or found.text is None:
            return None
        value = " ".join(found.text.split())
        return value or None

    # -- document --------------------------------------------------------------------------

    def read(self, root: etree._Element) -> list[ParsedStatement]:
        top = self.node(root)
        if self.find(top, self.container) is None:
            raise at_element(UserError(N_("expected a %(element)s element under Document"), element=self.container),
                             "/Document")
        group_created = self._datetime(self.find(top, f"{self.container}/GrpHdr/CreDtTm"), f"/Document/{self.container}/GrpHdr/CreDtTm")
        statements = self.findall(top, f"{self.container}/{self.statement_tag}")
        if not statements:
            raise at_element(UserError(N_("expected at least one %(element)s element"), element=self.statement_tag),
                             f"/Document/{self.container}")
        return [
            self._statement(self.node(stmt), f"/Document/{self.container}/{self.statement_tag}[{n}]", group_created)
            for n, stmt in enumerate(statements, 1)
        ]

    def _statement(self, stmt: _Node, path: str, group_created: datetime | None) -> ParsedStatement:
        warnings: list[str] = []
        if self.find(stmt, "Acct") is None:
            raise at_element(UserError(N_("expected the account (Acct) of the statement")), f"{path}/Acct")
        iban = self.text(stmt, "Acct/Id/IBAN")
        account_id = iban or self.text(stmt, "Acct/Id/Othr/Id")
        currency = self.text(stmt, "Acct/Ccy")
        opening = closing = None
        for n, bal_el in enumerate(self.findall(stmt, "Bal"), 1):
            bal = self.node(bal_el)
            code = self.text(bal, "Tp/CdOrPrtry/Cd")
            if code in _OPENING and opening is None:
                opening = self._amount(bal, f"{path}/Bal[{n}]")
            elif code in _CLOSING and closing is None:
                closing = self._amount(bal, f"{path}/Bal[{n}]")
        currency = currency or (opening.currency if opening else None) or (closing.currency if closing else None)

        entries: list[ParsedEntry] = []
        booked_total: dict[str, int] = {}
        for n, ntry in enumerate(self.findall(stmt, "Ntry"), 1):
            unfolded, entry_amount, status = self._entry(self.node(ntry), f"{path}/Ntry[{n}]", warnings)
            entries.extend(unfolded)
            if status in (None, EntryStatus.BOOKED):
                booked_total[entry_amount.currency] = booked_total.get(entry_amount.currency, 0) + entry_amount.minor
        if currency is None and entries:
            currency = entries[0].currency

        if opening is not None and closing is not None and opening.currency == closing.currency:
            moved = booked_total.get(opening.currency, 0)
            if opening.minor + moved != closing.minor:
                expected = Money(opening.minor + moved, opening.currency)
                warnings.append(
                    f"{path}: balances do not add up: opening {opening.to_decimal()} + booked entries "
                    f"{Money(moved, opening.currency).to_decimal()} = {expected.to_decimal()}, "
                    f"but the closing balance is {closing.to_decimal()} {closing.currency}"
                )

        created = self._datetime(self.find(stmt, "CreDtTm"), f"{path}/CreDtTm") or group_created
        from_dt = self._datetime(self.find(stmt, "FrToDt/FrDtTm"), f"{path}/FrToDt/FrDtTm")
        to_dt = self._datetime(self.find(stmt, "FrToDt/ToDtTm"), f"{path}/FrToDt/ToDtTm")
        return ParsedStatement(
            format=self.format,
            statement_id=self.text(stmt, "Id"),
            account_iban=iban,
            account_id=account_id,
            account_currency=currency,
            created_at=created,
            from_date=from_dt.date() if from_dt else None,
            to_date=to_dt.date() if to_dt else None,
            opening_balance=opening,
            closing_balance=closing,
            entries=tuple(entries),
            warnings=tuple(warnings),
        )

    # -- entries ---------------------------------------------------------------------------

    def _entry(
        self, ntry: _Node, path: str, warnings: list[str]
    ) -> tuple[list[ParsedEntry], Money, EntryStatus | None]:
        amount = self._amount(ntry, path)
        credit_debit = CreditDebit(self._indicator(ntry, path))
        reversal = (self.text(ntry, "RvslInd") or "").lower() in ("true", "1")
        status = self._status(ntry, path)
        booking = self._date_choice(ntry, "BookgDt", path)
        value = self._date_choice(ntry, "ValDt", path)
        entry_ref = self.text(ntry, "AcctSvcrRef") or self.text(ntry, "NtryRef")
        code = self._bank_code(ntry)
        charges = self._charges(ntry, path)
        entry_info = self.text(ntry, "AddtlNtryInf")

        details = [self.node(tx) for tx in self.findall(ntry, "NtryDtls/TxDtls")]
        base = dict(
            credit_debit=credit_debit,
            value_date=value,
            booking_date=booking,
            reversal=reversal,
            status=status,
            entry_reference=entry_ref,
            bank_transaction_code=code,
        )
        if not details:
            text = entry_info
            ref = first_rf_reference(text)
            return (
                [
                    ParsedEntry(
                        amount=amount,
                        bank_reference=entry_ref,
                        remittance_text=text,
                        structured_reference=ref,
                        structured_reference_type="SCOR" if ref else None,
                        charges=charges,
                        location=path,
                        **base,  # type: ignore[arg-type]
                    )
                ],
                amount,
                status,
            )

        tx_amounts: list[Money | None] = []
        for n, tx in enumerate(details, 1):
            tx_amounts.append(self._tx_amount(tx, f"{path}/NtryDtls/TxDtls[{n}]", amount.currency, credit_debit))
        unfold = len(details) == 1 or all(a is not None and a.currency == amount.currency for a in tx_amounts)
        if not unfold:
            warnings.append(
                f"{path}: the {len(details)} transaction details do not all carry an amount in "
                f"{amount.currency}; the entry is kept whole"
            )
            details = details[:1]
            tx_amounts = [amount]

        out: list[ParsedEntry] = []
        for n, (tx, tx_amount) in enumerate(zip(details, tx_amounts), 1):
            tx_path = f"{path}/NtryDtls/TxDtls[{n}]"
            if len(details) == 1 or tx_amount is None or tx_amount.currency != amount.currency:
                tx_amount = amount
            out.append(self._transaction(tx, tx_path, tx_amount, entry_info, charges if len(details) == 1 else None, len(details), base))
        if len(out) > 1:
            total = sum(e.amount.minor for e in out)
            if total != amount.minor:
                warnings.append(
                    f"{path}: the {len(out)} transaction details add up to "
                    f"{Money(total, amount.currency).to_decimal()} but the entry is "
                    f"{amount.to_decimal()} {amount.currency} (difference "
                    f"{Money(amount.minor - total, amount.currency).to_decimal()}, e.g. charges)"
                )
        return out, amount, status

    def _transaction(
        self,
        tx: _Node,
        path: str,
        amount: Money,
        entry_info: str | None,
        charges: Money | None,
        batch_size: int,
        base: dict[str, object],
    ) -> ParsedEntry:
        if amount.minor:
            side_of_amount = CreditDebit.CREDIT if amount.minor > 0 else CreditDebit.DEBIT
        else:
            side_of_amount = base["credit_debit"]  # type: ignore[assignment]
        credit = (side_of_amount is CreditDebit.CREDIT) != bool(base["reversal"])
        # The other party: who paid us on a credit, whom we paid on a debit; a reversal swaps them.
        side, other = ("Dbtr", "Cdtr") if credit else ("Cdtr", "Dbtr")
        name = self._party_name(tx, side) or self._party_name(tx, "Ultmt" + side)
        iban = self.text(tx, f"RltdPties/{side}Acct/Id/IBAN")
        bic = self.text(tx, f"RltdAgts/{side}Agt/FinInstnId/BICFI") or self.text(tx, f"RltdAgts/{side}Agt/FinInstnId/BIC")
        if name is None and iban is None:
            name = self._party_name(tx, other)
            iban = self.text(tx, f"RltdPties/{other}Acct/Id/IBAN")

        unstructured = [t for el in self.findall(tx, "RmtInf/Ustrd") if (t := " ".join((el.text or "").split()))]
        ref = ref_type = None
        for info_el in self.findall(tx, "RmtInf/Strd/CdtrRefInf"):
            info = self.node(info_el)
            if ref is None and (value := self.text(info, "Ref")):
                ref = value
                ref_type = self.text(info, "Tp/CdOrPrtry/Cd") or self.text(info, "Tp/CdOrPrtry/Prtry")
        for extra in self.findall(tx, "RmtInf/Strd/AddtlRmtInf"):
            if extra.text and extra.text.strip():
                unstructured.append(" ".join(extra.text.split()))
        text = " ".join(unstructured) or self.text(tx, "AddtlTxInf") or entry_info
        if ref is None and (found := first_rf_reference(text)):
            ref, ref_type = found, "SCOR"
        elif ref is not None and (ref_type == "SCOR" or ref.upper().replace(" ", "").startswith("RF")):
            ref = "".join(ref.split()).upper()

        end_to_end = self.text(tx, "Refs/EndToEndId")
        if end_to_end and end_to_end.upper() in _NOT_PROVIDED:
            end_to_end = None
        tx_code = self._bank_code(tx) or base["bank_transaction_code"]
        return ParsedEntry(
            amount=amount,
            credit_debit=side_of_amount,
            value_date=base["value_date"],  # type: ignore[arg-type]
            booking_date=base["booking_date"],  # type: ignore[arg-type]
            reversal=bool(base["reversal"]),
            status=base["status"],  # type: ignore[arg-type]
            counterparty_name=name,
            counterparty_iban=iban.replace(" ", "").upper() if iban else None,
            counterparty_bic=bic,
            remittance_text=text,
            structured_reference=ref,
            structured_reference_type=ref_type,
            end_to_end_id=end_to_end,
            bank_reference=self.text(tx, "Refs/AcctSvcrRef") or base["entry_reference"],  # type: ignore[arg-type]
            entry_reference=base["entry_reference"],  # type: ignore[arg-type]
            bank_transaction_code=tx_code,  # type: ignore[arg-type]
            charges=charges,
            batch_size=batch_size,
            location=path,
        )

    def _party_name(self, tx: _Node, role: str) -> str | None:
        # 001.08 onwards wraps the party in Pty (Dbtr/Pty/Nm); earlier versions do not.
        return self.text(tx, f"RltdPties/{role}/Pty/Nm") or self.text(tx, f"RltdPties/{role}/Nm")

    def _tx_amount(self, tx: _Node, path: str, currency: str, entry_side: CreditDebit) -> Money | None:
        for sub in ("Amt", "AmtDtls/TxAmt/Amt"):
            el = self.find(tx, sub)
            if el is not None:
                indicator = self.text(tx, "CdtDbtInd") or entry_side.value
                if indicator not in ("CRDT", "DBIT"):
                    raise at_element(UserError(N_("expected CdtDbtInd CRDT or DBIT, got %(value)s"),
                                               value=repr(indicator)), f"{path}/CdtDbtInd")
                return self._money(el, f"{path}/{sub}", negative=indicator == "DBIT")
        return None

    # -- values ----------------------------------------------------------------------------

    def _indicator(self, el: _Node, path: str) -> str:
        value = self.text(el, "CdtDbtInd")
        if value not in ("CRDT", "DBIT"):
            raise at_element(UserError(N_("expected CdtDbtInd CRDT or DBIT, got %(value)s"), value=repr(value)),
                             f"{path}/CdtDbtInd")
        return value

    def _amount(self, el: _Node, path: str) -> Money:
        amt = self.find(el, "Amt")
        if amt is None:
            raise at_element(UserError(N_("expected an amount (Amt)")), f"{path}/Amt")
        return self._money(amt, f"{path}/Amt", negative=self._indicator(el, path) == "DBIT")

    def _money(self, amt: etree._Element, path: str, negative: bool) -> Money:
        try:
            return money_from_text(amt.text, amt.get("Ccy"), negative=negative)
        except UserError as exc:
            raise at_element(exc, path) from None

    def _status(self, ntry: _Node, path: str) -> EntryStatus | None:
        # 001.02-001.07: <Sts>BOOK</Sts>; 001.08 onwards: <Sts><Cd>BOOK</Cd></Sts>.
        value = self.text(ntry, "Sts/Cd") or self.text(ntry, "Sts") or self.text(ntry, "Sts/Prtry")
        if value is None:
            return None
        try:
            return EntryStatus(value)
        except ValueError:
            if value in ("FUTR",):
                return EntryStatus.PENDING
            raise at_element(UserError(N_("expected an entry status BOOK, PDNG or INFO, got %(value)s"),
                                       value=repr(value)), f"{path}/Sts") from None

    def _bank_code(self, el: _Node) -> str | None:
        domain = self.text(el, "BkTxCd/Domn/Cd")
        if domain:
            parts = [domain, self.text(el, "BkTxCd/Domn/Fmly/Cd"), self.text(el, "BkTxCd/Domn/Fmly/SubFmlyCd")]
            return "/".join(p for p in parts if p)
        return self.text(el, "BkTxCd/Prtry/Cd")

    def _charges(self, ntry: _Node, path: str) -> Money | None:
        total = self.find(ntry, "Chrgs/TtlChrgsAndTaxAmt")
        if total is not None:
            return self._money(total, f"{path}/Chrgs/TtlChrgsAndTaxAmt", negative=False)
        # 001.02 repeats Chrgs with an Amt each; 001.04 onwards nests records in Chrgs/Rcrd.
        amounts = self.findall(ntry, "Chrgs/Amt") + self.findall(ntry, "Chrgs/Rcrd/Amt")
        if not amounts:
            return None
        moneys = [self._money(a, f"{path}/Chrgs", negative=False) for a in amounts]
        if len({m.currency for m in moneys}) != 1:
            return None
        return Money(sum(m.minor for m in moneys), moneys[0].currency)

    def _date_choice(self, node: _Node, name: str, entry_path: str) -> date | None:
        path = f"{entry_path}/{name}"
        dt = self.find(node, f"{name}/Dt")
        if dt is not None:
            try:
                return date.fromisoformat((dt.text or "").strip()[:10])
            except ValueError:
                raise at_element(UserError(N_("expected a date such as 2026-03-31, got %(value)s"),
                                           value=repr(dt.text)), f"{path}/Dt") from None
        stamp = self._datetime(self.find(node, f"{name}/DtTm"), f"{path}/DtTm")
        return stamp.date() if stamp else None

    def _datetime(self, el: etree._Element | None, path: str) -> datetime | None:
        if el is None or not (el.text or "").strip():
            return None
        raw = el.text.strip()  # type: ignore[union-attr]
        try:
            return datetime.fromisoformat(raw)
        except ValueError:
            raise at_element(UserError(N_("expected a date and time such as 2026-03-31T18:00:00, got %(value)s"),
                                       value=repr(raw)), path) from None
