"""Bank reconciliation at scale: one camt.053 of N credits (default 50,000) imported and matched
against the bench book (`generate.py`), as `encours import bank` does it, on a copy of the book so
each run starts alike. Prints one JSON document.

The entries, drawn with a fixed seed from BENCH-FR's open invoices:
  40 % name an invoice and pay exactly what it owes (matched automatically),
  10 % name an invoice and pay another amount (suggested),
  15 % carry no number, the payer's name and the amount of one of its invoices (suggested),
  15 % pay an amount with nothing else (suggested when one invoice has that amount),
  20 % are noise nobody owes (left unmatched);
plus 1,000 debits. Target (issue 14): import and match ≤ 30 s on SQLite.

    .venv/bin/python bench/reconciliation.py [--small] [--entries N] [--postgres URL | --postgres-throwaway]

The book is never changed: the run works on a copy (a file copy on SQLite, a database created
from the book's as a template on PostgreSQL), so each run starts alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench.generate import ensure_book  # noqa: E402
from kernel.clock import clock  # noqa: E402
from kernel.db import make_engine, make_sessionmaker, unit_of_work  # noqa: E402
from kernel.settings import load_settings  # noqa: E402
from ledger.models import BankAccount, BankEntry, Company, Customer, Invoice  # noqa: E402
from reconciliation.accounts import add_account  # noqa: E402
from reconciliation.imports import import_statement_file  # noqa: E402
from reconciliation.parsers import parse_statement_file  # noqa: E402

IBAN = "FR7630006000011234567890189"
SEED = 14


def _amount(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


def camt_entry(index: int, amount: int, name: str | None, text: str | None, side: str = "CRDT") -> str:
    party = f"<RltdPties><Dbtr><Nm>{escape(name)}</Nm></Dbtr></RltdPties>" if name else ""
    remittance = f"<RmtInf><Ustrd>{escape(text)}</Ustrd></RmtInf>" if text else ""
    return (f"<Ntry><NtryRef>N{index}</NtryRef><Amt Ccy=\"EUR\">{_amount(amount)}</Amt><CdtDbtInd>{side}</CdtDbtInd>"
            f"<Sts>BOOK</Sts><BookgDt><Dt>2026-11-25</Dt></BookgDt><ValDt><Dt>2026-11-25</Dt></ValDt>"
            f"<AcctSvcrRef>BENCH-{index:07d}</AcctSvcrRef>"
            f"<NtryDtls><TxDtls><Refs><AcctSvcrRef>BENCH-{index:07d}</AcctSvcrRef></Refs>{party}{remittance}"
            f"</TxDtls></NtryDtls></Ntry>\n")


def statement_file(invoices: list[tuple[str, int, str]], credits: int) -> tuple[bytes, dict[str, int]]:
    """A camt.053 of `credits` credit entries over (number, open amount, customer name), and 1,000 debits."""
    rng = random.Random(SEED)
    chosen = rng.sample(invoices, min(len(invoices), credits))
    kinds = {"number_exact": 0, "number_other_amount": 0, "name_and_amount": 0, "amount_only": 0, "noise": 0}
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02">'
             "<BkToCstmrStmt><GrpHdr><MsgId>BENCH</MsgId><CreDtTm>2026-11-25T18:00:00</CreDtTm></GrpHdr>"
             f"<Stmt><Id>BENCH-2026-11-25</Id><CreDtTm>2026-11-25T18:00:00</CreDtTm>"
             f"<Acct><Id><IBAN>{IBAN}</IBAN></Id><Ccy>EUR</Ccy></Acct>\n"]
    for index in range(credits):
        number, open_minor, name = chosen[index % len(chosen)]
        roll = rng.random()
        if roll < 0.40:
            kinds["number_exact"] += 1
            parts.append(camt_entry(index, open_minor, name.upper(), f"REGLEMENT FACTURE {number}"))
        elif roll < 0.50:
            kinds["number_other_amount"] += 1
            parts.append(camt_entry(index, max(1, open_minor - rng.randint(1, 5000)), name, f"Fact {number} acompte"))
        elif roll < 0.65:
            kinds["name_and_amount"] += 1
            parts.append(camt_entry(index, open_minor, name, "VIREMENT"))
        elif roll < 0.80:
            kinds["amount_only"] += 1
            parts.append(camt_entry(index, open_minor, None, None))
        else:
            kinds["noise"] += 1
            parts.append(camt_entry(index, rng.randint(1, 999_99) * 7 + 3, f"Inconnu {index}", f"divers {index}"))
    for index in range(credits, credits + 1000):
        parts.append(camt_entry(index, rng.randint(1_00, 5_000_00), "Fournisseur", "prelevement", side="DBIT"))
    parts.append("</Stmt></BkToCstmrStmt></Document>\n")
    return "".join(parts).encode(), kinds


def _backend(session: Any) -> int | None:
    """The PostgreSQL server process serving this session (None on SQLite, which runs in ours)."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _process_cpu(pid: int | None) -> float:
    """User + system CPU seconds of a process on this machine, from /proc."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def book_copy(url: str) -> Iterator[str]:
    """A throwaway copy of the book at `url`, deleted afterwards: its URL."""
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
            copy = Path(scratch) / "book.sqlite3"
            shutil.copyfile(path, copy)
            yield f"sqlite:///{copy}"
        return
    original = make_url(url)
    name = f"{original.database}_copy"
    admin = make_engine(original.set(database="postgres").render_as_string(hide_password=False))
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        connection.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{original.database}"')
    try:
        yield original.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def run(url: str, credits: int) -> dict[str, Any]:
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    with unit_of_work(sessions) as session:
        if session.scalar(select(BankAccount.id).where(BankAccount.iban == IBAN)) is None:
            add_account(session, "BENCH-FR", iban=IBAN)
        rows = session.execute(
            select(Invoice.number, Invoice.open_minor, Customer.name)
            .join(Customer, Customer.id == Invoice.customer_id)
            .join(Company, Company.id == Invoice.company_id)
            .where(Company.code == "BENCH-FR", Invoice.kind == "invoice", Invoice.open_minor > 0,
                   Invoice.status.in_(("open", "partially_paid")), Invoice.currency == "EUR")
            .order_by(Invoice.id)).all()
    data, kinds = statement_file([tuple(row) for row in rows], credits)  # type: ignore[misc]
    parse_started = time.perf_counter()
    parse_statement_file(data)
    parse_seconds = time.perf_counter() - parse_started
    settings = load_settings({"ENCOURS_SECRET_KEY": "bench-secret-0123456789abcdef", "ENCOURS_DATABASE_URL": url})
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    with unit_of_work(sessions) as session:
        backend = _backend(session)
        server_before = _process_cpu(backend)
        report = import_statement_file(session, data, "bench.xml", settings=settings)
    seconds = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    server_cpu = _process_cpu(backend) - server_before
    again_started = time.perf_counter()
    with unit_of_work(sessions) as session:
        again = import_statement_file(session, data, "bench.xml", settings=settings)
    again_seconds = time.perf_counter() - again_started
    with sessions() as session:
        entries = session.scalar(select(func.count()).select_from(BankEntry))
    engine.dispose()
    [summary] = report.statements
    return {
        "credits": credits, "file_mb": round(len(data) / 1048576, 1), "open_invoices_of_company": len(rows),
        "kinds": kinds, "parse_seconds": round(parse_seconds, 2),
        "import_and_match_seconds": round(seconds, 2),
        "import_and_match_cpu_seconds": round(cpu_after.ru_utime + cpu_after.ru_stime
                                              - cpu_before.ru_utime - cpu_before.ru_stime, 2),
        "entries_per_second": round((credits + 1000) / seconds),
        # PostgreSQL works in its own process: the CPU of the server backend that ran the import.
        "database_server_cpu_seconds": round(server_cpu, 2) if backend else None,
        "matched": summary.matched, "suggested": summary.suggested, "unmatched": summary.unmatched,
        "debits": summary.debits, "warnings": len(summary.warnings),
        "reload_seconds": round(again_seconds, 2), "reload_already_imported": again.statements[0].already_imported,
        "entries_in_database": entries, "target_seconds": 30,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="2,000 customers / 40,000 invoices")
    parser.add_argument("--entries", type=int, default=50_000)
    parser.add_argument("--postgres", metavar="URL", help="a PostgreSQL database holding (or to hold) the book")
    parser.add_argument("--postgres-throwaway", action="store_true",
                        help="start a throwaway PostgreSQL server (as the tests do) and build the book there")
    args = parser.parse_args(argv)
    customers, invoices = (2_000, 40_000) if args.small else (50_000, 1_000_000)
    clock.set(datetime(2026, 11, 25, 18, 0, tzinfo=timezone.utc))
    throwaway = None
    if args.postgres_throwaway:
        from tests.pgserver import PostgresServer

        throwaway = PostgresServer()
        args.postgres = throwaway.start("encours_bench")
    try:
        load_start = os.getloadavg()
        book = ensure_book(customers, invoices, postgres=args.postgres)
        result: dict[str, Any] = {"book": {"customers": customers, "invoices": invoices},
                                  "database": "postgresql" if args.postgres else "sqlite"}
        with book_copy(book["url"]) as url:
            result.update(run(url, args.entries))
        result["loadavg_at_start"], result["loadavg_at_end"] = load_start, os.getloadavg()
    finally:
        if throwaway is not None:
            throwaway.stop()
    result["date"] = date.today().isoformat()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
