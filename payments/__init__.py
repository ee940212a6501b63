"""Paying from the portal: providers behind one protocol, checkouts, webhook intake, settlement."""
