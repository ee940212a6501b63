"""Builds camt.052/053/054 documents the way banks write them, per version, for the tests.

Used once to write ``files/generated/*.xml`` (run this module) and by the property tests.
Element spellings follow the schemas: ``BIC`` until 001.02 and ``BICFI`` after, the party
wrapped in ``Pty`` from 001.08, ``Sts`` a code from 001.08, ``AmtDtls/TxAmt`` in 001.02 and
``TxDtls/Amt`` after, ``Chrgs`` repeated in 001.02 and ``Chrgs/Rcrd`` after.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape


@dataclass
class Tx:
    amount: str  # "120.00"
    name: str | None = None
    iban: str | None = None
    bic: str | None = None
    ustrd: tuple[str, ...] = ()
    scor: str | None = None
    end_to_end: str | None = None
    ref: str | None = None


@dataclass
class Ntry:
    amount: str
    side: str = "CRDT"
    txs: tuple[Tx, ...] = ()
    status: str | None = "BOOK"
    booking: str | None = "2026-03-02"
    value: str | None = "2026-03-02"
    booking_as_datetime: bool = False
    reversal: bool = False
    ref: str | None = None
    charges: str | None = None
    info: str | None = None
    code: tuple[str, str, str] | None = ("PMNT", "RCDT", "ESCT")


@dataclass
class Stmt:
    id: str
    iban: str
    currency: str
    entries: tuple[Ntry, ...]
    opening: str | None = None
    closing: str | None = None
    closing_code: str = "CLBD"


@dataclass
class Doc:
    message: str  # "053"
    version: int
    statements: tuple[Stmt, ...] = field(default=())


_CONTAINER = {"052": ("BkToCstmrAcctRpt", "Rpt"), "053": ("BkToCstmrStmt", "Stmt"), "054": ("BkToCstmrDbtCdtNtfctn", "Ntfctn")}


def _e(tag: str, text: str | None) -> str:
    return "" if text is None else f"<{tag}>{escape(text)}</{tag}>"


def _balance(code: str, amount: str, ccy: str) -> str:
    side = "DBIT" if amount.startswith("-") else "CRDT"
    return (
        f"<Bal><Tp><CdOrPrtry><Cd>{code}</Cd></CdOrPrtry></Tp><Amt Ccy=\"{ccy}\">{amount.lstrip('-')}</Amt>"
        f"<CdtDbtInd>{side}</CdtDbtInd><Dt><Dt>2026-03-02</Dt></Dt></Bal>"
    )


def _party(version: int, role: str, name: str | None) -> str:
    if name is None:
        return ""
    inner = f"<Nm>{escape(name)}</Nm><PstlAdr><Ctry>FR</Ctry></PstlAdr>"
    return f"<{role}><Pty>{inner}</Pty></{role}>" if version >= 8 else f"<{role}>{inner}</{role}>"


def _tx(version: int, ccy: str, n: Ntry, t: Tx) -> str:
    credit = (n.side == "CRDT") != n.reversal
    role = "Dbtr" if credit else "Cdtr"
    refs = _e("AcctSvcrRef", t.ref) + _e("EndToEndId", t.end_to_end or "NOTPROVIDED")
    if version <= 2:
        amount = f"<AmtDtls><TxAmt><Amt Ccy=\"{ccy}\">{t.amount}</Amt></TxAmt></AmtDtls>"
    else:
        amount = f"<Amt Ccy=\"{ccy}\">{t.amount}</Amt><CdtDbtInd>{n.side}</CdtDbtInd>"
    parties = _party(version, role, t.name)
    if t.iban:
        parties += f"<{role}Acct><Id><IBAN>{t.iban}</IBAN></Id></{role}Acct>"
    agents = ""
    if t.bic:
        bic = "BIC" if version <= 2 else "BICFI"
        agents = f"<RltdAgts><{role}Agt><FinInstnId><{bic}>{t.bic}</{bic}></FinInstnId></{role}Agt></RltdAgts>"
    rmt = "".join(_e("Ustrd", u) for u in t.ustrd)
    if t.scor:
        rmt += (
            "<Strd><CdtrRefInf><Tp><CdOrPrtry><Cd>SCOR</Cd></CdOrPrtry><Issr>ISO</Issr></Tp>"
            f"<Ref>{t.scor}</Ref></CdtrRefInf></Strd>"
        )
    return (
        f"<TxDtls><Refs>{refs}</Refs>{amount}"
        + (f"<RltdPties>{parties}</RltdPties>" if parties else "")
        + agents
        + (f"<RmtInf>{rmt}</RmtInf>" if rmt else "")
        + "</TxDtls>"
    )


def _entry(version: int, ccy: str, n: Ntry) -> str:
    out = [_e("NtryRef", n.ref), f"<Amt Ccy=\"{ccy}\">{n.amount}</Amt>", f"<CdtDbtInd>{n.side}</CdtDbtInd>"]
    if n.reversal:
        out.append("<RvslInd>true</RvslInd>")
    if n.status:
        out.append(f"<Sts><Cd>{n.status}</Cd></Sts>" if version >= 8 else f"<Sts>{n.status}</Sts>")
    if n.booking:
        out.append(f"<BookgDt><DtTm>{n.booking}T09:30:00+01:00</DtTm></BookgDt>" if n.booking_as_datetime else f"<BookgDt><Dt>{n.booking}</Dt></BookgDt>")
    if n.value:
        out.append(f"<ValDt><Dt>{n.value}</Dt></ValDt>")
    out.append(_e("AcctSvcrRef", n.ref and f"SVC-{n.ref}"))
    if n.code:
        out.append(
            f"<BkTxCd><Domn><Cd>{n.code[0]}</Cd><Fmly><Cd>{n.code[1]}</Cd><SubFmlyCd>{n.code[2]}</SubFmlyCd></Fmly></Domn></BkTxCd>"
        )
    if n.charges:
        if version <= 2:
            out.append(f"<Chrgs><Amt Ccy=\"{ccy}\">{n.charges}</Amt></Chrgs>")
        else:
            out.append(
                f"<Chrgs><TtlChrgsAndTaxAmt Ccy=\"{ccy}\">{n.charges}</TtlChrgsAndTaxAmt>"
                f"<Rcrd><Amt Ccy=\"{ccy}\">{n.charges}</Amt><CdtDbtInd>DBIT</CdtDbtInd></Rcrd></Chrgs>"
            )
    if n.txs:
        batch = f"<Btch><NbOfTxs>{len(n.txs)}</NbOfTxs></Btch>" if len(n.txs) > 1 else ""
        out.append("<NtryDtls>" + batch + "".join(_tx(version, ccy, n, t) for t in n.txs) + "</NtryDtls>")
    out.append(_e("AddtlNtryInf", n.info))
    return "<Ntry>" + "".join(out) + "</Ntry>"


def build(doc: Doc) -> bytes:
    container, tag = _CONTAINER[doc.message]
    ns = f"urn:iso:std:iso:20022:tech:xsd:camt.{doc.message}.001.{doc.version:02d}"
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<Document xmlns="{ns}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n',
        f"<{container}><GrpHdr><MsgId>MSG-{doc.message}-{doc.version:02d}</MsgId><CreDtTm>2026-03-02T18:00:00</CreDtTm></GrpHdr>\n",
    ]
    for s in doc.statements:
        body = [
            f"<{tag}>",
            _e("Id", s.id),
            "<CreDtTm>2026-03-02T18:00:00</CreDtTm>",
            "<FrToDt><FrDtTm>2026-03-02T00:00:00</FrDtTm><ToDtTm>2026-03-02T23:59:59</ToDtTm></FrToDt>",
            f"<Acct><Id><IBAN>{s.iban}</IBAN></Id><Ccy>{s.currency}</Ccy></Acct>",
        ]
        if s.opening is not None:
            body.append(_balance("OPBD", s.opening, s.currency))
        if s.closing is not None:
            body.append(_balance(s.closing_code, s.closing, s.currency))
        body.extend("\n" + _entry(doc.version, s.currency, n) for n in s.entries)
        body.append(f"\n</{tag}>\n")
        parts.append("".join(body))
    parts.append(f"</{container}>\n</Document>\n")
    return "".join(parts).encode()


# The scenario every generated camt.053 file carries, whatever its version.
SCENARIO_053 = (
    Stmt(
        id="STMT-2026-03-02-1",
        iban="FR7630006000011234567890189",
        currency="EUR",
        opening="1000.00",
        closing="2380.10",
        entries=(
            Ntry(
                "1200.00",
                ref="E1",
                txs=(Tx("1200.00", "ACME SARL", "DE89370400440532013000", "COBADEFFXXX", scor="RF18539007547034", end_to_end="E2E-0001", ref="TX-1"),),
            ),
            Ntry(
                "300.00",
                ref="E2",
                charges="5.00",
                txs=(
                    Tx("120.00", "Boulangerie Martin", "FR1420041010050500013M02606", ustrd=("Facture F-2026-0468",)),
                    Tx("175.00", "Garage Petit", "BE71096123456769", ustrd=("Paiement facture", "F 2026 0470 merci")),
                ),
            ),
            Ntry(
                "49.90",
                side="DBIT",
                ref="E3",
                code=("PMNT", "ICDT", "ESCT"),
                txs=(Tx("49.90", "Fournisseur SA", "FR7630001007941234567890185", ustrd=("Abonnement mars",)),),
            ),
            Ntry(
                "80.00",
                side="DBIT",
                reversal=True,
                ref="E4",
                code=("PMNT", "RCDT", "RRTN"),
                txs=(Tx("80.00", "Martin Dupont", "FR7610107001011234567890129", ustrd=("Retour virement AC04",)),),
            ),
            Ntry("10.00", ref="E5", status=None, booking=None, info="VIR SEPA rf88 2026 0000 1234 5 remboursement", code=None),
            Ntry("500.00", ref="E6", status="PDNG", txs=(Tx("500.00", "Client En Attente"),)),
        ),
    ),
    Stmt(
        id="STMT-2026-03-02-2",
        iban="CH9300762011623852957",
        currency="CHF",
        opening="-100.00",
        closing="150.00",
        entries=(Ntry("250.00", ref="C1", booking_as_datetime=True, txs=(Tx("250.00", "Müller & Söhne AG", "CH5604835012345678009", ustrd=("Rechnung 2026-0471",)),)),),
    ),
)


def generated_files() -> dict[str, bytes]:
    files = {f"camt053.001.{v:02d}.xml": build(Doc("053", v, SCENARIO_053)) for v in (2, 4, 6, 8, 10)}
    files["camt052.001.08.xml"] = build(
        Doc(
            "052",
            8,
            (
                Stmt(
                    id="RPT-2026-03-02-1200",
                    iban="FR7630006000011234567890189",
                    currency="EUR",
                    opening="1000.00",
                    closing="1450.00",
                    closing_code="ITBD",
                    entries=(
                        Ntry("450.00", ref="R1", txs=(Tx("450.00", "ACME SARL", "DE89370400440532013000", scor="RF18539007547034"),)),
                        Ntry("99.00", ref="R2", status="PDNG", booking=None, txs=(Tx("99.00", "Client Matin", ustrd=("F-2026-0472",)),)),
                    ),
                ),
            ),
        )
    )
    files["camt054.001.08.xml"] = build(
        Doc(
            "054",
            8,
            (
                Stmt(
                    id="NTF-1",
                    iban="FR7630006000011234567890189",
                    currency="EUR",
                    entries=(Ntry("64.20", ref="N1", txs=(Tx("64.20", "SCI Les Tilleuls", "FR7630004000031234567890143", scor="RF18539007547034"),)),),
                ),
                Stmt(
                    id="NTF-2",
                    iban="FR7630006000011234567890189",
                    currency="EUR",
                    entries=(Ntry("15.00", side="DBIT", ref="N2", code=("ACMT", "MDOP", "CHRG"), txs=(Tx("15.00", ustrd=("Frais de tenue de compte",)),)),),
                ),
            ),
        )
    )
    return files


if __name__ == "__main__":
    target = Path(__file__).parent / "files" / "generated"
    target.mkdir(parents=True, exist_ok=True)
    for name, data in generated_files().items():
        (target / name).write_bytes(data)
        print(target / name)
