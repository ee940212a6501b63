"""Bank reconciliation: statement files parsed into plain entries, then matched to open items."""
