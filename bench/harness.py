"""What several benchmarks share (not a test): the staff accounts, collectors, API key and webhook
checkout they add to a book once, signing in to the back-office in-process, the timing loop
with its percentiles, and the markdown tables comparing two reports of a script. Public names: bench/customers_list.py, bench/my_day.py, bench/dashboard.py,
bench/api.py, bench/bank_queue.py, bench/run.py, bench/plans.py (its `--setup` adds them all) and
bench/sizes.py import them from here instead of from one another."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Collection, Iterable, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, insert, select, true, update  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from admin.customers_service import list_day, refresh_overdue  # noqa: E402
from admin.staff_accounts import create_user  # noqa: E402
from bench.generate import NOW, STATEMENT_CUSTOMER, TODAY  # noqa: E402
from kernel.db import make_engine, make_sessionmaker, unit_of_work  # noqa: E402
from kernel.user_error import UserError  # noqa: E402
from ledger.api_keys import create_key, key_hash  # noqa: E402
from ledger.models import ApiKey, Checkout, Company, Customer, CustomerNote, Invoice, User  # noqa: E402
from payments.checkout import create_checkout  # noqa: E402

if TYPE_CHECKING:
    from starlette.testclient import TestClient

# Back-office accounts of bench/customers_list.py (and bench/bank_queue.py, bench/plans.py).
PASSWORD = "bench-password-0123"
STAFF = (("bench-admin@encours.example", "admin", []), ("bench-manager@encours.example", "manager", ["BENCH-FR"]))
# The collectors of bench/my_day.py: each assigned a tenth of BENCH-FR's customers, tasks on every 25th.
COLLECTORS = 10
TASK_EVERY = 25
MANAGER = "bench-day-manager@encours.example"


def collector_email(n: int) -> str:
    return f"bench-collector-{n}@encours.example"

# The admin of bench/dashboard.py.
ADMIN_EMAIL = "bench-admin@example.com"
ADMIN_PASSWORD = "bench-admin-password"
# The book's API key (bench/api.py): made once, kept in the cached book (only its hash is stored, so
# the key itself is derived from a fixed text, as the bench's other secrets are).
BOOK_KEY = "enc_live_bench-book-key-0123456789abcdefghijklmnopqrs"
# The payment intent of the webhook scenario's checkout (bench/run.py).
WEBHOOK_INTENT = "pi_bench_webhook_intake"


# --- added to a book once -----------------------------------------------------------------


def ensure_staff(url: str) -> None:
    """The STAFF accounts, added to the book once."""
    engine = make_engine(url)
    try:
        with unit_of_work(make_sessionmaker(engine)) as session:
            for email, role, companies in STAFF:
                if session.scalar(select(User.id).where(User.email == email)) is None:
                    create_user(session, email=email, role=role, password=PASSWORD, company_codes=companies)
    finally:
        engine.dispose()


def ensure_world(url: str) -> dict[str, Any]:
    """Collectors, their customers, tasks and a manager, added to the book once."""
    engine = make_engine(url)
    try:
        with unit_of_work(make_sessionmaker(engine)) as session:
            company_id = session.scalar(select(Company.id).where(Company.code == "BENCH-FR"))
            for n in range(COLLECTORS):
                if session.scalar(select(User.id).where(User.email == collector_email(n))) is None:
                    create_user(session, email=collector_email(n), role="collector", password=PASSWORD,
                                company_codes=["BENCH-FR"])
            if session.scalar(select(User.id).where(User.email == MANAGER)) is None:
                create_user(session, email=MANAGER, role="manager", password=PASSWORD, company_codes=["BENCH-FR"])
            session.flush()
            ids = [session.scalar(select(User.id).where(User.email == collector_email(n))) for n in range(COLLECTORS)]
            customers = list(session.scalars(select(Customer.id).where(Customer.company_id == company_id)
                                             .order_by(Customer.id)))
            if not session.scalar(select(func.count()).select_from(Customer).where(Customer.collector_id == ids[0])):
                # Customer ids of the companies interleave: dealt out by rank within BENCH-FR.
                for n, user_id in enumerate(ids):
                    mine = customers[n::COLLECTORS]
                    for start in range(0, len(mine), 500):
                        session.execute(update(Customer).where(Customer.id.in_(mine[start:start + 500]))
                                        .values(collector_id=user_id))
            if not session.scalar(select(func.count()).select_from(CustomerNote)):
                notes = [{"customer_id": customer_id, "author_id": ids[0], "kind": "call",
                          "body": "Rappeler le service comptable", "created_at": NOW - timedelta(days=3),
                          "next_action_on": TODAY + timedelta(days=(i % 3) - 1)}
                         for i, customer_id in enumerate(customers[::TASK_EVERY])]
                session.execute(insert(CustomerNote), notes)
            mine = session.scalar(select(func.count()).select_from(Customer).where(Customer.collector_id == ids[0]))
            tasks = session.scalar(select(func.count()).select_from(CustomerNote).join(
                Customer, Customer.id == CustomerNote.customer_id).where(Customer.collector_id == ids[0],
                                                                       CustomerNote.done_at.is_(None)))
            return {"collector_id": ids[0], "company_id": company_id, "customers_of_collector": mine,
                    "open_tasks_of_collector": tasks}
    finally:
        engine.dispose()


def ensure_admin(url: str) -> None:
    """The dashboard's admin account, added to the book once."""
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            if session.scalar(select(User.id).where(User.email == ADMIN_EMAIL)) is None:
                create_user(session, email=ADMIN_EMAIL, role="admin", password=ADMIN_PASSWORD, company_codes=[])
                session.commit()
    finally:
        engine.dispose()


def start_the_day(url: str) -> None:
    """What `encours worker` does once a day: the overdue sort keys counted as of the book's today
    (the customers list and the dashboard's top overdue read them)."""
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            refresh_overdue(session, list_day(session))
            session.commit()
    finally:
        engine.dispose()


def ensure_book_key(url: str) -> None:
    """The API key BOOK_KEY, added to the book once."""
    engine = make_engine(url)
    try:
        with unit_of_work(make_sessionmaker(engine)) as session:
            if session.scalar(select(ApiKey.id).where(ApiKey.key_hash == key_hash(BOOK_KEY))) is None:
                row, _ = create_key(session, "BENCH-FR", "bench-book")
                row.key_hash = key_hash(BOOK_KEY)
    finally:
        engine.dispose()


def webhook_checkout(url: str, intent: str = WEBHOOK_INTENT) -> tuple[int, int, str]:
    """A card checkout of one open invoice of a customer other than BENCH-200, made once in the
    book for the PaymentIntent `intent`: (checkout id, amount, currency). Its events go through the
    whole intake, handler included."""
    engine = make_engine(url)
    try:
        with unit_of_work(make_sessionmaker(engine)) as session:
            checkout = session.scalar(select(Checkout).where(Checkout.provider_ref == intent))
            if checkout is None:
                # The first open invoice with something left to charge once its customer's credit
                # notes are deducted.
                for invoice in session.scalars(
                    select(Invoice).join(Customer).where(Customer.ref != STATEMENT_CUSTOMER, Invoice.status == "open",
                                                         Invoice.kind == "invoice").order_by(Invoice.id).limit(200)
                ):
                    customer = session.get_one(Customer, invoice.customer_id)
                    try:
                        checkout = create_checkout(session, customer=customer, contact=customer.primary_contact,
                                                   selection={invoice.id: None}, method="card",
                                                   today=date(2026, 11, 25))
                    except UserError:
                        continue
                    if checkout.provider_ref is None:  # not the live checkout of another bench intent, given back
                        break
                else:
                    raise RuntimeError("no open invoice left to charge in the book")
                checkout.provider, checkout.provider_ref = "stripe", intent
                session.flush()
            return checkout.id, checkout.amount_minor, checkout.currency
    finally:
        engine.dispose()


def success_checkouts(url: str, prefix: str, count: int) -> list[tuple[tuple[int, int, str], str]]:
    """`count` new card checkouts, each of one open invoice no checkout has named yet (customers
    other than BENCH-200), made through `create_checkout` as the portal makes them, each with a
    PaymentIntent id of its own (`<prefix><n>`): ((checkout id, amount, currency), intent) for
    `succeeded_event`. Each run makes new ones, so the book grows by `count` checkouts, and their
    successes by as many payments, allocations and receipt emails."""
    from ledger.models import CheckoutLine

    engine = make_engine(url)
    made: list[tuple[tuple[int, int, str], str]] = []
    try:
        with unit_of_work(make_sessionmaker(engine)) as session:
            named = select(CheckoutLine.invoice_id).where(CheckoutLine.invoice_id == Invoice.id).exists()
            # Read in pages below the last one read: each run leaves the newest invoices it could not
            # charge (a customer whose credit covers them: "nothing to charge") behind, so a fixed window
            # of the newest ones ran dry after a few runs.
            below: int | None = None
            while len(made) < count:
                page = session.scalars(
                    select(Invoice).join(Customer).where(Customer.ref != STATEMENT_CUSTOMER, Invoice.status == "open",
                                                         Invoice.kind == "invoice", ~named,
                                                         Invoice.id < below if below is not None else true())
                    .order_by(Invoice.id.desc()).limit(count * 3 + 100)).all()
                if not page:
                    break
                below = page[-1].id
                made += _checkouts_of(session, page, prefix, count - len(made), len(made))
        return made
    finally:
        engine.dispose()


def _checkouts_of(session: Any, candidates: list[Invoice], prefix: str, count: int,
                  first: int) -> list[tuple[tuple[int, int, str], str]]:
    made: list[tuple[tuple[int, int, str], str]] = []
    for invoice in candidates:
        if len(made) == count:
            break
        customer = session.get_one(Customer, invoice.customer_id)
        try:
            checkout = create_checkout(session, customer=customer, contact=customer.primary_contact,
                                       selection={invoice.id: None}, method="card", today=date(2026, 11, 25))
        except UserError:
            continue
        if checkout.provider_ref is not None:  # the live checkout of another intent, given back
            continue
        intent = f"{prefix}{first + len(made)}"
        checkout.provider, checkout.provider_ref = "stripe", intent
        session.flush()
        made.append(((checkout.id, checkout.amount_minor, checkout.currency), intent))
    return made


def _intent_event(event_id: str, kind: str, checkout: tuple[int, int, str], intent: str,
                  **fields: Any) -> bytes:
    """A Stripe event about the PaymentIntent `intent` of a bench checkout, as localstripe sends one."""
    checkout_id, amount, currency = checkout
    return json.dumps({
        "id": event_id, "object": "event", "api_version": "2026-10-28.endive", "created": int(time.time()),
        "type": kind, "livemode": False, "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "data": {"object": {
            "id": intent, "object": "payment_intent", "amount": amount, "currency": currency.lower(),
            "metadata": {"checkout_id": str(checkout_id)}, **fields,
        }},
    }, separators=(",", ":")).encode()


def succeeded_event(checkout: tuple[int, int, str], event_id: str, intent: str) -> bytes:
    """`payment_intent.succeeded` for a checkout of `success_checkouts`: the whole amount received."""
    return _intent_event(event_id, "payment_intent.succeeded", checkout, intent, amount_received=checkout[1],
                         status="succeeded", payment_method={"id": "pm_bench", "object": "payment_method",
                                                             "card": {"brand": "visa", "last4": "4242"}})


def declined_event(checkout: tuple[int, int, str], event_id: str, message: str = "Your card was declined.",
                   intent: str = WEBHOOK_INTENT) -> bytes:
    """`payment_intent.payment_failed` for a bench checkout (of `intent`): applied for real (the
    payment's latest decline reason, `message`), without settling invoices, so runs can repeat on
    one book."""
    return _intent_event(event_id, "payment_intent.payment_failed", checkout, intent,
                         status="requires_payment_method",
                         last_payment_error={"code": "card_declined", "message": message})


# --- running and timing ---------------------------------------------------------------------


def signed_in(app: Any, email: str) -> TestClient:
    """A client of `app` signed in to the back-office as `email` (one of the accounts above)."""
    # Imported here: the scripts that only compare reports (bench/sizes.py) need no test client.
    from starlette.testclient import TestClient

    client = TestClient(app, base_url="http://testserver")
    client.__enter__()
    page = client.get("/admin/login")
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    response = client.post("/admin/login", data={"csrf_token": token, "email": email, "password": PASSWORD},
                           follow_redirects=False)
    if response.status_code != 303:
        raise SystemExit(f"cannot sign in as {email}: {response.status_code}")
    return client


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def time_runs(run: Callable[[], Any], repeat: int, warmups: int = 3) -> dict[str, float]:
    """`run` `warmups` times, then `repeat` times timed: median, p95 and max of the wall time and
    the median and p95 of this process's CPU time (all threads: the test client's and the app's),
    far less sensitive than the wall time to other work on a shared machine."""
    for _ in range(warmups):
        run()
    wall, cpu = [], []
    for _ in range(repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        run()
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - cpu_started) * 1000)
    return {"runs": repeat, "median_ms": round(statistics.median(wall), 1), "p95_ms": round(percentile(wall, 0.95), 1),
            "max_ms": round(max(wall), 1), "cpu_median_ms": round(statistics.median(cpu), 1),
            "cpu_p95_ms": round(percentile(cpu, 0.95), 1)}


# --- comparing two reports ------------------------------------------------------------------


def reports_parser(description: str | None, compare_help: str) -> argparse.ArgumentParser:
    """The arguments of a script that reports on a PostgreSQL book (`--postgres URL`) or compares two
    of its reports (`--compare SMALL.json LARGE.json`)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", metavar="URL")
    parser.add_argument("--compare", nargs=2, metavar=("SMALL.json", "LARGE.json"), help=compare_help)
    return parser


def compared(parser: argparse.ArgumentParser, args: argparse.Namespace,
             compare: Callable[[dict[str, Any], dict[str, Any]], str]) -> bool:
    """With `--compare`, the two reports read and their comparison printed: True, nothing else to do.
    Without it a book is needed: `--postgres` missing stops the script with a usage line."""
    if args.compare:
        small, large = (json.loads(Path(name).read_text()) for name in args.compare)
        print(compare(small, large))
        return True
    if not args.postgres:
        parser.error("--postgres URL or --compare SMALL.json LARGE.json")
    return False


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]], *, left: Collection[int] = (0,)) -> str:
    """A markdown table: the header, its alignment row (the columns numbered in `left` to the left,
    the others, figures, to the right), then each row of cells already written; an empty cell stays
    empty (`| |`)."""

    def line(cells: Sequence[str]) -> str:
        return "|" + "".join(f" {cell} |" if cell else " |" for cell in cells)

    alignment = ["---" if n in left else "---:" for n in range(len(header))]
    return "\n".join([line(header), line(alignment), *(line(row) for row in rows)])
