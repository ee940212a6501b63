"""Bank identifiers: IBAN (ISO 13616) and BIC (ISO 9362), checked against schwifty's registry.

Every place an IBAN or a BIC enters Encours (company settings, bank accounts, the demo) goes
through `normalize_iban` / `normalize_bic`, so one set of rules decides what is accepted."""

from __future__ import annotations

import re
import warnings

from schwifty import BIC, IBAN, exceptions
from schwifty.registry import get_iban_spec

from kernel.i18n import N_
from kernel.user_error import UserError

# Overseas territories and Monaco bank under French BICs while their IBANs carry their own code.
_SHARES_FR_BICS = frozenset({"FR", "MC", "GP", "MQ", "RE", "GF", "YT", "PM", "BL", "MF", "NC", "PF", "WF"})
_SPACES = re.compile(r"[\s\u00a0\u202f-]+")
_ALPHANUMERIC = re.compile(r"^[A-Z0-9]*$")


class BankDetailsError(UserError):
    """A bad IBAN or BIC (callers catch it to say which account or field held it)."""


def _compact(text: str) -> str:
    """Spaces (also non-breaking ones) and dashes as people write IBANs, removed; upper case."""
    return _SPACES.sub("", text or "").upper()


def normalize_iban(text: str) -> str:
    """The electronic form of an IBAN (`FR7630006000011234567890189`), or BankDetailsError naming
    what is wrong: characters, country, length for that country, layout or check digits."""
    iban = _compact(text)
    if not iban:
        raise BankDetailsError(N_("Enter an IBAN."))
    if not _ALPHANUMERIC.match(iban):
        raise BankDetailsError(N_("%(value)s is not an IBAN: it may only hold letters and digits."),
                               value=iban)
    country = iban[:2]
    try:
        spec = get_iban_spec(country)
    except exceptions.InvalidCountryCode:
        spec = None
    if spec is None or spec.aspirational or not country.isalpha():
        raise BankDetailsError(N_("%(value)s is not an IBAN: %(country)s is not a country code that uses IBANs."),
                               value=iban, country=country)
    if len(iban) != spec.iban_length:
        raise BankDetailsError(
            N_("%(value)s has %(length)s characters; an IBAN from %(country)s has %(expected)s."),
            value=iban, length=len(iban), country=country, expected=spec.iban_length)
    try:
        with warnings.catch_warnings():
            # A country without a known national check: the ISO check digits still apply.
            warnings.simplefilter("ignore", exceptions.NationalChecksumNotVerified)
            IBAN(iban, validate_bban=True)
    except exceptions.InvalidStructure:
        raise BankDetailsError(N_("%(value)s does not have the layout of an IBAN from %(country)s."),
                               value=iban, country=country) from None
    except (exceptions.InvalidChecksumDigits, exceptions.InvalidBBANChecksum):
        raise BankDetailsError(N_("%(value)s is not a valid IBAN: its check digits do not match (a typo?)."),
                               value=iban) from None
    except exceptions.SchwiftyException:
        raise BankDetailsError(N_("%(value)s is not a valid IBAN."), value=iban) from None
    return iban


def normalize_bic(text: str, *, iban: str | None = None) -> str:
    """The electronic form of a BIC (8 or 11 characters), or BankDetailsError naming what is
    wrong. Given the account's (normalized) IBAN, the BIC must be of the same country."""
    bic = _compact(text)
    if not bic:
        raise BankDetailsError(N_("Enter a BIC."))
    if len(bic) not in (8, 11) or not _ALPHANUMERIC.match(bic):
        raise BankDetailsError(N_("%(value)s is not a BIC (8 or 11 letters and digits)."), value=bic)
    try:
        BIC(bic)
    except exceptions.InvalidCountryCode:
        raise BankDetailsError(N_("%(value)s is not a BIC: %(country)s is not a country code."),
                               value=bic, country=bic[4:6]) from None
    except exceptions.SchwiftyException:
        raise BankDetailsError(N_("%(value)s is not a BIC (8 or 11 letters and digits)."), value=bic) from None
    if iban and not _same_country(bic[4:6], iban[:2]):
        raise BankDetailsError(N_("The BIC's country %(bic)s differs from the IBAN's %(iban)s."),
                               bic=bic[4:6], iban=iban[:2])
    return bic


def _same_country(bic_country: str, iban_country: str) -> bool:
    return bic_country == iban_country or (bic_country in _SHARES_FR_BICS and iban_country in _SHARES_FR_BICS)


def format_iban(iban: str) -> str:
    """The printed form: groups of four (`FR76 3000 6000 …`), as on a bank's documents."""
    compact = _compact(iban)
    return " ".join(compact[i:i + 4] for i in range(0, len(compact), 4))
