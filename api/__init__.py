"""The ERP\x27s JSON API (/api/v1): keys, customers, invoices, payments, events, open items."""
