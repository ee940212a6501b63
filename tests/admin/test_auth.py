from __future__ import annotations

from datetime import date, timedelta

from kernel.clock import clock
from admin import auth
from ledger.models import InvoiceKind
from tests import factories
from tests.admin.conftest import PASSWORD, make_user


def test_authenticate_success_and_fingerprint(session):
    user = make_user(session, "Boss@Example.com")
    outcome = auth.authenticate(session, " boss@example.COM ", PASSWORD, "1.1.1.1")
    assert outcome.ok and outcome.user.id == user.id
    data = auth.session_data(user)
    assert auth.current_user(session, data) is user
    assert len(data["pw"]) == 16 and user.password_hash not in data["pw"]


def test_wrong_password_unknown_email_and_inactive_all_fail_alike(session):
    user = make_user(session, "off@example.com")
    make_user(session, "on@example.com")
    user.active = False
    session.flush()
    assert auth.authenticate(session, "on@example.com", "wrong password!", "1.1.1.1") == auth.LoginOutcome()
    assert auth.authenticate(session, "nobody@example.com", PASSWORD, "1.1.1.1") == auth.LoginOutcome()
    assert auth.authenticate(session, "off@example.com", PASSWORD, "1.1.1.1") == auth.LoginOutcome()
    assert auth.authenticate(session, "on@example.com", "", "1.1.1.1") == auth.LoginOutcome()
    assert auth.current_user(session, {"user": user.id, "pw": auth.fingerprint(user)}) is None


def test_one_address_guessing_waits_but_the_user_elsewhere_signs_in(session):
    make_user(session, "a@example.com")
    for _ in range(auth.PAIR_FAILURE_LIMIT):
        assert not auth.authenticate(session, "a@example.com", "nope nope nope", "1.1.1.1").ok
    blocked = auth.authenticate(session, "a@example.com", PASSWORD, "1.1.1.1")
    assert blocked.blocked and 0 < blocked.retry_after <= auth.WINDOW_SECONDS + 1
    assert auth.authenticate(session, "a@example.com", PASSWORD, "2.2.2.2").ok  # never locked out
    clock.set(clock.now() + timedelta(seconds=auth.WINDOW_SECONDS))
    assert auth.authenticate(session, "a@example.com", PASSWORD, "1.1.1.1").ok


def test_past_the_account_ceiling_each_address_gets_one_guess_and_a_fresh_one_still_signs_in(session):
    make_user(session, "a@example.com")
    for n in range(auth.ACCOUNT_CEILING):  # a botnet, one guess per address
        assert not auth.authenticate(session, "a@example.com", "nope nope nope", f"10.0.0.{n}").ok
    assert not auth.authenticate(session, "a@example.com", "still guessing", "10.0.1.1").ok
    assert auth.authenticate(session, "a@example.com", "another guess", "10.0.1.1").blocked
    assert auth.authenticate(session, "a@example.com", PASSWORD, "10.0.0.1").blocked  # an address that failed
    assert auth.authenticate(session, "a@example.com", PASSWORD, "192.0.2.7").ok  # a fresh one


def test_repeated_failures_call_the_alert_once_per_window(session):
    user = make_user(session, "a@example.com")
    alerts: list[tuple[int, int]] = []
    for n in range(auth.ACCOUNT_CEILING + 3):
        auth.authenticate(session, "a@example.com", "nope nope nope", f"10.0.0.{n}",
                          on_repeated_failures=lambda u, count: alerts.append((u.id, count)))
    assert alerts == [(user.id, auth.ALERT_AT)]


def test_ip_throttle_counts_across_emails(session):
    make_user(session, "a@example.com")
    for n in range(auth.IP_FAILURE_LIMIT):
        auth.authenticate(session, f"guess{n}@example.com", "whatever123", "6.6.6.6")
    assert auth.authenticate(session, "a@example.com", PASSWORD, "6.6.6.6").blocked
    assert auth.authenticate(session, "a@example.com", PASSWORD, "7.7.7.7").ok


def test_change_password_rules(session):
    user = make_user(session, "a@example.com")
    old = auth.fingerprint(user)
    assert auth.change_password(session, user, "bad current", "x" * 12, "x" * 12) == ["The current password is wrong."]
    assert auth.change_password(session, user, PASSWORD, "short", "short") == [
        "The new password must have at least %(count)s characters."
    ]
    assert auth.change_password(session, user, PASSWORD, PASSWORD, PASSWORD) == [
        "The new password must differ from the current one."
    ]
    assert auth.change_password(session, user, PASSWORD, "a new secret!", "another one!") == [
        "The two new passwords do not match."
    ]
    assert auth.change_password(session, user, PASSWORD, "a new secret!", "a new secret!") == []
    assert auth.fingerprint(user) != old
    assert auth.current_user(session, {"user": user.id, "pw": old}) is None
    assert auth.authenticate(session, "a@example.com", "a new secret!", "1.1.1.1").ok


def test_summaries_are_sql_aggregates_scoped_to_the_user(session):
    a = factories.company(session, "A1", name="Alpha")
    b = factories.company(session, "B1", name="Beta")
    today = clock.today("Europe/Paris")
    ca = factories.customer(session, a)
    factories.customer(session, a)
    factories.invoice(session, ca, 100_00, due_date=today - timedelta(days=1))
    factories.invoice(session, ca, 50_00, due_date=today)  # due today: not overdue
    factories.invoice(session, ca, 70_00, open_minor=20_00, due_date=today - timedelta(days=40))
    factories.invoice(session, ca, 30_00, currency="USD", due_date=today + timedelta(days=5))
    factories.invoice(session, ca, 999_00, status="disputed", due_date=date(2026, 1, 1))
    factories.invoice(session, ca, 888_00, status="void", due_date=date(2026, 1, 1))
    factories.invoice(session, ca, 777_00, open_minor=0, status="paid")
    factories.invoice(session, ca, 10_00, kind=InvoiceKind.credit_note)
    cb = factories.customer(session, b)
    factories.invoice(session, cb, 12_34)

    manager = make_user(session, "m@example.com", "manager", ["A1"])
    [summary] = auth.company_summaries(session, manager)
    assert summary.company.code == "A1" and summary.customers == 2
    assert [(x.open.currency, x.open.minor, x.overdue.minor) for x in summary.balances] == [
        ("EUR", 170_00, 120_00),
        ("USD", 30_00, 0),
    ]
    admin = make_user(session, "boss@example.com")
    codes = [s.company.code for s in auth.company_summaries(session, admin)]
    assert "A1" in codes and "B1" in codes
