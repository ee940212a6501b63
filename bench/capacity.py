"""The capacity plan of bench/CAPACITY.md, computed from its table of inputs (not a test).

    .venv/bin/python bench/capacity.py            # prints the plan (markdown) from bench/CAPACITY.md's inputs
    .venv/bin/python bench/capacity.py --write    # and writes it back between the plan markers of CAPACITY.md

Every input is a row of the table between `<!-- inputs:begin -->` and `<!-- inputs:end -->` in
CAPACITY.md: `| name | value | unit | source |`. To refresh the plan after a new benchmark, change the
value and its source (with the date), and run this with `--write`. Nothing here is measured: it is
arithmetic on the inputs, so each derived figure is as good as the inputs it names.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

DOC = Path(__file__).resolve().parent / "CAPACITY.md"
INPUTS = re.compile(r"<!-- inputs:begin -->(.*?)<!-- inputs:end -->", re.S)
PLAN = re.compile(r"(<!-- plan:begin -->)(.*?)(<!-- plan:end -->)", re.S)
GIB = 2**30


def read_inputs(text: str) -> dict[str, float]:
    found = INPUTS.search(text)
    if found is None:
        raise SystemExit(f"no inputs table (<!-- inputs:begin --> ... <!-- inputs:end -->) in {DOC}")
    values = {}
    for line in found.group(1).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        name, value = cells[0].strip("`"), cells[1].replace(",", "").replace("\u202f", "")
        try:
            values[name] = float(value)
        except ValueError:
            raise SystemExit(f"input {name}: {cells[1]!r} is not a number") from None
    return values


def _n(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def plan(i: dict[str, float]) -> str:
    """The derived figures, as markdown: each line says what it is computed from."""
    lines: list[str] = []
    out = lines.append
    util = i["target_utilisation"]
    customers, invoices = i["customers"], i["invoices"]
    scale = invoices / i["book5m_invoices"]  # the target book in units of the measured 5M book

    # --- peak reminder day -----------------------------------------------------------------------
    messages = customers * i["reminders_per_customer"]
    opens = customers * i["opens_per_customer"]
    payments = customers * i["paying_share"]
    statement_views = opens * i["statement_views_per_open"] + payments  # the payer sees it again to pay
    webhooks = payments * i["webhooks_per_payment"]
    peak = i["peak_hour_share"]
    portal_app_s = (opens * i["link_first_open_app_ms"] + statement_views * i["statement_app_ms"]
                    + payments * i["checkout_app_ms"] + webhooks * i["webhook_app_ms"]) / 1000
    portal_db_s = (opens * i["link_first_open_db_ms"] + statement_views * i["statement_db_ms"]
                   + payments * i["checkout_db_ms"] + webhooks * i["webhook_db_ms"]) / 1000
    peak_rps = (opens + statement_views + payments + webhooks) * peak / 3600
    app_cores_portal = portal_app_s * peak / 3600 / util
    db_cores_portal = portal_db_s * peak / 3600 / util
    out("### Peak reminder day")
    out("")
    out(f"- {_n(messages)} reminders, {_n(opens)} first link opens, {_n(statement_views)} statement pages, "
        f"{_n(payments)} payments ({_n(webhooks)} provider events); the busiest hour carries "
        f"{peak:.0%} of the day: **{_n(peak_rps)} requests/s** at the peak.")
    out(f"- Portal and webhooks: {_n(portal_app_s / 3600, 1)} app core-hours and {_n(portal_db_s / 3600, 1)} "
        f"database core-hours in the day; in the peak hour at {util:.0%} utilisation **{_n(app_cores_portal, 1)} app "
        f"cores** and **{_n(db_cores_portal, 1)} database cores**.")
    statement_share = statement_views * i["statement_app_ms"] / 1000 / portal_app_s
    out(f"- The statement page is {statement_share:.0%} of that app CPU ({_n(i['statement_app_ms'], 1)} ms a page, "
        f"the app's CPU per page on PostgreSQL, from the inputs): the first per-request cost to make cheaper.")
    procs = math.ceil(app_cores_portal)
    out(f"- `encours serve`: one process per app core (a process uses one core: the GIL), so "
        f"**{procs} server processes**, e.g. {math.ceil(procs / i['app_cores_per_host'])} hosts of "
        f"{_n(i['app_cores_per_host'])} cores.")
    send_s = i["send_window_hours"] * 3600
    worker_cpu_s = messages * i["outbox_worker_ms"] / 1000
    worker_busy_s = messages * (i["outbox_worker_ms"] + i["smtp_wait_ms"]) / 1000
    workers = math.ceil(worker_busy_s / send_s / util)
    out(f"- Outbox: {_n(messages)} messages in {_n(i['send_window_hours'])} h = {_n(messages / send_s)} msg/s; "
        f"{_n(i['outbox_worker_ms'], 1)} ms of worker CPU + {_n(i['smtp_wait_ms'])} ms waiting on the SMTP relay "
        f"per message (synchronous): **{workers} `encours worker` processes** "
        f"({_n(worker_cpu_s / send_s / util, 1)} cores), database "
        f"{_n(messages * i['outbox_db_ms'] / 1000 / send_s / util, 1)} cores.")

    # --- nightly plan ----------------------------------------------------------------------------
    plan_app_s = customers * i["plan_app_ms_per_customer"] / 1000 + messages * i["queue_app_ms_per_message"] / 1000
    plan_db_s = customers * i["plan_db_ms_per_customer"] / 1000
    window = i["plan_window_hours"] * 3600
    plan_workers = math.ceil(plan_app_s / window / util)
    refresh_s = i["refresh_overdue_db_ms_5m"] / 1000 * scale
    out("")
    out("### Nightly plan")
    out("")
    out(f"- Reminder planning (candidates, decisions) and rendering + queueing of {_n(messages)} messages: "
        f"{_n(plan_app_s / 60)} app CPU-minutes, {_n(plan_db_s / 60)} database CPU-minutes; within "
        f"{_n(i['plan_window_hours'])} h: **{plan_workers} worker processes** planning companies in parallel "
        f"(a company's day is planned by the one worker that claims it first, `dunning.claims`: the others "
        f"skip it, so adding workers adds no planning CPU; the largest company, {_n(i['largest_company_customers'])} "
        f"customers, takes {_n(i['largest_company_customers'] * i['plan_app_ms_per_customer'] / 1000 / 60, 1)} "
        f"min to plan alone).")
    out(f"- `refresh_overdue` (one pass over every open invoice of every company, one transaction): "
        f"{_n(refresh_s)} s of database time, extrapolated linearly from {_n(i['refresh_overdue_db_ms_5m'])} ms "
        f"at 5M; it rewrites every overdue customer's balance row: up to {_n(customers)} row versions a night "
        f"to vacuum, all locked until it commits.")
    out(f"- Purge: updates link opens older than {_n(i['retain_link_opens_days'])} days, "
        f"email bodies older than {_n(i['retain_email_bodies_days'])} days, webhook bodies older than "
        f"{_n(i['retain_webhook_bodies_days'])} days; deletes sent emails and processed provider events after "
        f"400 days (ENCOURS_RETAIN_SENT_EMAILS_DAYS, ENCOURS_RETAIN_WEBHOOK_EVENTS_DAYS), 2,000 rows per "
        f"transaction; link opens, reminders and audit events stay for ever (see archiving).")

    # --- dashboard -------------------------------------------------------------------------------
    staff = i["companies"] * i["staff_per_company"]
    views = staff * i["dashboard_views_per_staff_peak_hour"]
    dash_app = views * i["dashboard_app_ms"] / 1000 / 3600 / util
    dash_db = views * i["dashboard_db_ms"] / 1000 / 3600 / util
    out("")
    out("### Dashboard and back office")
    out("")
    out(f"- {_n(staff)} staff, {_n(i['dashboard_views_per_staff_peak_hour'])} dashboard or list pages each in "
        f"the peak hour: {_n(views)} pages, **{_n(dash_app, 2)} app cores, {_n(dash_db, 2)} database cores**: "
        f"small beside the portal. Per page {_n(i['dashboard_app_ms'])} ms app + {_n(i['dashboard_db_ms'])} ms "
        f"database (an average company's dashboard: see the inputs).")

    # --- database --------------------------------------------------------------------------------
    data = i["book5m_bytes"] * scale
    years = i["history_years"]
    yearly_messages = customers * i["reminders_per_customer_year"]
    growth = (yearly_messages * i["bytes_per_message"] + yearly_messages * i["opens_per_customer"]
              * i["bytes_per_link_open"] + customers * i["paying_share"] * i["reminders_per_customer_year"]
              * i["webhooks_per_payment"] * i["bytes_per_webhook_event"])
    hot = i["book5m_hot_bytes"] * scale + i["hot_days"] / 365 * growth
    commits = (opens * 1 + webhooks * 2 + payments * 2) * peak / 3600 + messages / send_s
    connections = (procs + workers + plan_workers) * i["pool_per_process"]
    out("")
    out("### Database")
    out("")
    out(f"- Ledger data (invoices, payments, allocations, customers, contacts, their indexes and running "
        f"totals): {_n(data / GIB)} GiB for {_n(invoices)} invoices ({_n(i['book5m_bytes'] / i['book5m_invoices'])} "
        f"bytes per invoice, everything included, measured at 5M and linear from 1M).")
    out(f"- Per year of operation, the append-only tables (outbox with audit and reminder rows, link opens, "
        f"webhook events) add {_n(growth / GIB)} GiB ({_n(i['reminders_per_customer_year'])} reminders per "
        f"customer a year); after {_n(years)} years **{_n((data + growth * years) / GIB)} GiB** on disk before WAL "
        f"and backups; provision {_n((data + growth * years) * i['disk_headroom'] / GIB)} GiB "
        f"(×{i['disk_headroom']:.1f} for WAL, vacuum, index rebuilds).")
    out(f"- Working set (what the hot paths touch: customers, contacts, balances, open invoices and their "
        f"partial indexes, primary-key indexes, running totals, {_n(i['hot_days'])} days of outbox, opens and "
        f"events): **{_n(hot / GIB)} GiB**: shared_buffers of {_n(i['shared_buffers_share'] * 100)} % of RAM and "
        f"the rest in the OS cache gives **{_n(math.ceil(hot * i['ram_headroom'] / GIB / 16) * 16)} GiB of RAM** "
        f"(×{i['ram_headroom']:.1f}).")
    out(f"- Commits at the peak: {_n(commits)} per second (a first open, two per webhook event and per payment, "
        f"one per message sent); with group commit and a battery-backed or cloud volume, "
        f"**{_n(commits * i['iops_per_commit'])} write IOPS** plus checkpoints.")
    out(f"- Connections: {procs} servers + {workers} outbox workers + {plan_workers} planners × "
        f"{_n(i['pool_per_process'])} (SQLAlchemy's pool and the event loop's) = **{_n(connections)}**: behind PgBouncer in "
        f"transaction mode, {_n(math.ceil((db_cores_portal + 1) * 4))} server connections suffice (≈ 4 per "
        f"database core), `max_connections` 200.")
    cores = db_cores_portal + messages * i["outbox_db_ms"] / 1000 / send_s / util + dash_db
    out(f"- Database CPU at the peak hour (portal + outbox + back office): **{_n(cores, 1)} cores**; "
        f"provision {math.ceil(cores * 2)} (a replica for reads and failover doubles it).")
    ram = math.ceil(hot * i["ram_headroom"] / GIB / 16) * 16
    disk = (data + growth * years) * i["disk_headroom"] / GIB
    summary = [
        "| resource | peak reminder day | why |",
        "| --- | ---: | --- |",
        f"| app cores (`encours serve` processes) | {procs} | portal and webhooks in the peak hour |",
        f"| `encours worker` processes (outbox) | {workers} | {_n(messages)} messages in "
        f"{_n(i['send_window_hours'])} h, synchronous SMTP |",
        f"| `encours worker` processes (nightly planning) | {plan_workers} | within {_n(i['plan_window_hours'])} h |",
        f"| database cores | {math.ceil(cores)} busy, {math.ceil(cores * 2)} provisioned | peak hour |",
        f"| database RAM | {ram} GiB | working set {_n(hot / GIB)} GiB × {i['ram_headroom']:.1f} |",
        f"| database disk | {_n(disk)} GiB | ledger + {_n(years)} years of append-only rows, × "
        f"{i['disk_headroom']:.1f} |",
        f"| write IOPS | {_n(commits * i['iops_per_commit'])} | commits at the peak |",
        f"| connections | {_n(connections)} client, ~{_n(math.ceil((db_cores_portal + 1) * 4))} server | PgBouncer |",
    ]
    return "\n".join(summary) + "\n\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="write the plan into CAPACITY.md")
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    text = args.doc.read_text()
    result = plan(read_inputs(text))
    print(result)
    if args.write:
        if PLAN.search(text) is None:
            raise SystemExit(f"no plan markers (<!-- plan:begin --> ... <!-- plan:end -->) in {args.doc}")
        args.doc.write_text(PLAN.sub(lambda m: f"{m.group(1)}\n{result}{m.group(3)}", text))


if __name__ == "__main__":
    main()
