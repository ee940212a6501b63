"""Local stand-ins of the payment providers: what `encours demo` runs when no provider key is set,
and what the tests talk to through the providers' real SDKs.

Installed with the `demo` extra (localstripe, GPL, comes only with it and with `test`). Each
stand-in the demo runs is a process of its own (`python -m sandbox.<module>`) that prints one JSON
line, the settings pointing the app at it, and exits with its parent (`parent_watch`):
- `sandbox.stripe_server`: localstripe plus a bridge playing Stripe.js's part (card);
- `sandbox.gocardless_server`: our GoCardless API stand-in (instant transfer, direct debit).
It imports no Encours package: it speaks the providers' wire formats over HTTP, nothing else.
"""
