"""`encours webhook add|list|remove` through the console script."""

from __future__ import annotations

from tests.encours.test_cli import Cli, ok, one_error, run, db_file_url, fresh_url  # noqa: F401 (fixtures)


def test_add_list_and_remove_an_endpoint(run: Cli) -> None:  # noqa: F811
    ok(run("company", "create", "ACME", "--name", "Acme SA", "--currency", "EUR"))
    assert "private or local address" in one_error(
        run("webhook", "add", "--company", "ACME", "--url", "http://127.0.0.1:9/hook"))
    allowed = {"ENCOURS_WEBHOOK_ALLOW_PRIVATE": "true"}
    added = ok(run("webhook", "add", "--company", "ACME", "--url", "http://127.0.0.1:9/hook",
                   "--events", "payment.succeeded,invoice.settled", env=allowed)).splitlines()
    assert added[0] == ("endpoint 1 of ACME: http://127.0.0.1:9/hook (invoice.settled,payment.succeeded); "
                        "its signing secret is shown once:")
    assert added[1].startswith("whsec_") and len(added) == 2
    assert "Unknown event type payment.lost" in one_error(
        run("webhook", "add", "--company", "ACME", "--url", "http://127.0.0.1:9/", "--events", "payment.lost",
            env=allowed))
    assert ok(run("webhook", "list")) == (
        "1\tACME\thttp://127.0.0.1:9/hook\tinvoice.settled,payment.succeeded\t0 queued, 0 failed\n")
    assert one_error(run("webhook", "list", "--company", "NOPE")) == "unknown company 'NOPE'"
    assert one_error(run("webhook", "remove", "2", "--company", "ACME")) == "Company ACME has no webhook endpoint 2."
    assert ok(run("webhook", "remove", "1", "--company", "ACME")) == "endpoint 1 of ACME removed (http://127.0.0.1:9/hook)\n"
    assert ok(run("webhook", "list")) == "no webhook endpoints\n"
