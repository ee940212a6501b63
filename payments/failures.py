"""Why a payment did not go through, as a small catalog of codes the debtor's page can say in
the debtor's language. Providers' codes and texts are mapped here; their English text is never shown."""

from __future__ import annotations

from kernel.i18n import N_

GENERIC = "generic"

# code -> one sentence naming what happened and that nothing was charged.
MESSAGES: dict[str, str] = {
    "card_declined": N_("Your bank declined the card. Nothing was charged."),
    "insufficient_funds": N_("The card was declined for insufficient funds. Nothing was charged."),
    "expired_card": N_("The card has expired. Nothing was charged."),
    "incorrect_cvc": N_("The card's security code (CVC) is incorrect. Nothing was charged."),
    "incorrect_number": N_("The card number is incorrect. Nothing was charged."),
    "authentication_failed": N_("The card could not be verified with your bank (3-D Secure). Nothing was charged."),
    "processing_error": N_("The card could not be processed because of a technical error. Nothing was charged."),
    "bank_cancelled": N_("The transfer was cancelled at your bank. Nothing was charged."),
    "mandate_refused": N_("Your bank refused the direct-debit mandate. Nothing was charged."),
    "payment_failed": N_("The payment failed at your bank. Nothing was charged."),
    "debtor_cancelled": N_("You cancelled this payment. Nothing was charged."),
    "expired": N_("This payment expired: no transfer reached us in time. Nothing was charged."),
    "provider_unavailable": N_("The payment service did not answer. Nothing was charged."),
    GENERIC: N_("The payment did not go through. Nothing was charged."),
}

# Stripe's error and decline codes (https://docs.stripe.com/declines/codes) mapped to the catalog.
STRIPE_CODES = {
    "card_declined": "card_declined",
    "generic_decline": "card_declined",
    "do_not_honor": "card_declined",
    "lost_card": "card_declined",
    "stolen_card": "card_declined",
    "fraudulent": "card_declined",
    "pickup_card": "card_declined",
    "insufficient_funds": "insufficient_funds",
    "card_velocity_exceeded": "insufficient_funds",
    "expired_card": "expired_card",
    "incorrect_cvc": "incorrect_cvc",
    "invalid_cvc": "incorrect_cvc",
    "incorrect_number": "incorrect_number",
    "invalid_number": "incorrect_number",
    "authentication_required": "authentication_failed",
    "payment_intent_authentication_failure": "authentication_failed",
    "processing_error": "processing_error",
}
# Words of the providers' texts, for providers (and Stripe stand-ins) that send only a message.
_WORDS = (
    ("insufficient", "insufficient_funds"),
    ("expired", "expired_card"),
    ("security code", "incorrect_cvc"),
    ("cvc", "incorrect_cvc"),
    ("authenticat", "authentication_failed"),
    ("3d secure", "authentication_failed"),
    ("processing error", "processing_error"),
    ("mandate", "mandate_refused"),
    ("cancelled", "bank_cancelled"),
    ("canceled", "bank_cancelled"),
    ("declined", "card_declined"),
)


def classify(*signals: str | None) -> str:
    """The catalog code for a provider's decline code(s) or failure text; GENERIC when none is known."""
    for signal in signals:
        if signal and signal.strip().lower() in STRIPE_CODES:
            return STRIPE_CODES[signal.strip().lower()]
        if signal and signal.strip().lower() in MESSAGES:
            return signal.strip().lower()
    for signal in signals:
        text = (signal or "").lower()
        for words, code in _WORDS:
            if words in text:
                return code
    return GENERIC


def message(code: str | None) -> str:
    """The catalog's English msgid for `code` (translate it with kernel.i18n.gettext)."""
    return MESSAGES.get(code or GENERIC, MESSAGES[GENERIC])
