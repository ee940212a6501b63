"""Table and index sizes of a PostgreSQL book, and rows per table (not a test).

    .venv/bin/python bench/sizes.py --postgres URL > sizes.json
    .venv/bin/python bench/sizes.py --compare sizes-1m.json sizes-5m.json   # markdown, for CAPACITY.md

Per table: rows (an exact count), heap (`pg_relation_size`), indexes (`pg_indexes_size`), total with
TOAST (`pg_total_relation_size`); per index its own size. bench/capacity.py divides them by the book's
invoices or customers to extrapolate (bench/CAPACITY.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import compared, markdown_table, reports_parser  # noqa: E402
from kernel.db import make_engine  # noqa: E402


def sizes(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            tables = connection.exec_driver_sql(
                "SELECT c.relname, pg_relation_size(c.oid), pg_indexes_size(c.oid), pg_total_relation_size(c.oid) "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY pg_total_relation_size(c.oid) DESC"
            ).all()
            indexes = connection.exec_driver_sql(
                "SELECT t.relname, i.relname, pg_relation_size(i.oid) FROM pg_index x "
                "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
                "JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = 'public' "
                "ORDER BY pg_relation_size(i.oid) DESC").all()
            report: dict[str, Any] = {"database_bytes": connection.exec_driver_sql(
                "SELECT pg_database_size(current_database())").scalar_one(), "tables": {}}
            for name, heap, index_bytes, total in tables:
                rows = connection.exec_driver_sql(f'SELECT count(*) FROM "{name}"').scalar_one()
                report["tables"][name] = {"rows": rows, "heap_bytes": heap, "index_bytes": index_bytes,
                                          "total_bytes": total, "indexes": {}}
            for table, index, size in indexes:
                report["tables"][table]["indexes"][index] = size
            return report
    finally:
        engine.dispose()


# What the hot paths read (bench/CAPACITY.md, "Database"): the per-customer tables and running totals whole;
# the invoices' heap whole too (a customer's open invoices are spread over the pages of the table: at ~60 rows
# a page and 16 % of them open, nearly every page holds one) and the indexes that find open items.
HOT_TABLES = ("customers", "contacts", "customer_balances", "open_items_by_due", "invoices_issued_by_day",
              "payment_days", "companies", "throttles")
HOT_INVOICE_INDEXES = ("pk_invoices", "ix_invoices_customer_open", "ix_invoices_open_by_customer",
                       "ix_invoices_open_items", "ix_invoices_open_per_customer")


def working_set(report: dict[str, Any]) -> int:
    tables = report["tables"]
    invoices = tables["invoices"]
    return (sum(tables[name]["total_bytes"] for name in HOT_TABLES if name in tables) + invoices["heap_bytes"]
            + sum(invoices["indexes"].get(name, 0) for name in HOT_INVOICE_INDEXES))


def compare(small: dict[str, Any], large: dict[str, Any], target_invoices: int, minimum: int = 8 << 20) -> str:
    """A markdown table: each table of the larger book (over `minimum` bytes) at both sizes, the ratio of
    the two (linear growth gives the ratio of the books' invoices) and the total extrapolated linearly
    from the larger book to `target_invoices`."""
    invoices_small, invoices_large = small["tables"]["invoices"]["rows"], large["tables"]["invoices"]["rows"]
    factor = target_invoices / invoices_large
    mib = 2**20
    rows = []
    for name, table in large["tables"].items():
        if table["total_bytes"] < minimum:
            continue
        before = small["tables"].get(name, {"rows": 0, "total_bytes": 0})
        ratio = table["total_bytes"] / before["total_bytes"] if before["total_bytes"] else float("nan")
        rows.append([f"`{name}`", f"{before['rows']:,}", f"{before['total_bytes'] / mib:,.0f}", f"{table['rows']:,}",
                     f"{table['heap_bytes'] / mib:,.0f}", f"{table['index_bytes'] / mib:,.0f}",
                     f"{table['total_bytes'] / mib:,.0f}", f"{ratio:.2f}", f"{table['total_bytes'] / invoices_large:,.0f}",
                     f"{table['total_bytes'] * factor / 2**30:,.1f}"])
    for label, at_small, at_large in (("**database**", small["database_bytes"], large["database_bytes"]),
                                      ("**working set** (see below)", working_set(small), working_set(large))):
        rows.append([label, "", f"{at_small / mib:,.0f}", "", "", "", f"{at_large / mib:,.0f}",
                     f"{at_large / at_small:.2f}", f"{at_large / invoices_large:,.0f}",
                     f"{at_large * factor / 2**30:,.1f}"])
    return markdown_table(["table", f"rows at {invoices_small:,} inv.", "total MiB", f"rows at {invoices_large:,} inv.",
                           "heap MiB", "index MiB", "total MiB", "ratio", "bytes per invoice",
                           f"at {target_invoices:,} invoices, GiB"], rows)


def main(argv: list[str] | None = None) -> None:
    parser = reports_parser(__doc__, "two reports of this script: a markdown table of both, the ratio, the extrapolation")
    parser.add_argument("--target-invoices", type=int, default=100_000_000)
    args = parser.parse_args(argv)
    if compared(parser, args, lambda small, large: compare(small, large, args.target_invoices)):
        return
    report = sizes(args.postgres)
    for name, table in report["tables"].items():
        if table["total_bytes"] > 1 << 20:
            print(f"{name:<28} {table['rows']:>11,} rows  heap {table['heap_bytes'] / 2**20:8.1f} MiB  "
                  f"indexes {table['index_bytes'] / 2**20:8.1f} MiB  total {table['total_bytes'] / 2**20:8.1f} MiB",
                  file=sys.stderr)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
