"""Bank transfer by hand: the company's IBAN and an ISO 11649 reference unique to the checkout.

No provider is called. The checkout stays "open" until staff match the transfer on the bank
statement (`payments.settlement.record_bank_transfer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from ledger.banking import format_iban
from payments import rf
from payments.base import NotOurs, PaymentUpdate, ProviderEvent, StandIn, StartResult

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from kernel.settings import Settings
    from ledger.models import Checkout, Company


@dataclass(frozen=True)
class BankDetails:
    iban: str
    bic: str | None


def account_for(company: Company, currency: str) -> BankDetails | None:
    """The company's account that receives transfers in `currency`, or None: a transfer in a
    currency the company has no account for is not offered.

    Its active bank account in that currency (`encours company account add`, the settings page)
    comes first, the oldest if several; else the IBAN of its settings, held in its base currency."""
    from sqlalchemy import select
    from sqlalchemy.orm import object_session

    from ledger.models import BankAccount

    currency = currency.upper()
    session = object_session(company)
    if session is not None and company.id is not None:
        account = session.scalars(
            select(BankAccount)
            .where(BankAccount.company_id == company.id, BankAccount.currency == currency, BankAccount.active.is_(True))
            .order_by(BankAccount.id)
            .limit(1)
        ).first()
        if account is not None:
            return BankDetails(iban=account.iban, bic=account.bic)
    if not company.iban or currency != company.base_currency.upper():
        return None
    return BankDetails(iban=company.iban, bic=company.bic)


class BankTransferProvider:
    name = "bank_transfer"
    methods: tuple[str, ...] = ("bank_transfer",)
    bad_signature_status: int | None = None  # no webhooks: the bank statement is the evidence
    stand_in: StandIn | None = None

    def check_settings(self, settings: Settings) -> None:
        pass

    def is_configured(self, settings: Settings) -> bool:
        return True  # nothing to configure: the IBAN is the company's

    def is_sandbox(self, settings: Settings) -> bool:
        return False

    def content_security_policy(self, settings: Settings) -> dict[str, list[str]]:
        return {}

    def is_available(self, settings: Settings, company: Company, currency: str, method: str = "bank_transfer") -> bool:
        return account_for(company, currency) is not None

    def verify(self, settings: Settings, headers: Mapping[str, str], body: bytes) -> list[ProviderEvent]:
        raise LookupError("bank transfers have no webhooks")

    def calls_out(self, event: ProviderEvent) -> bool:
        return False

    def fetch(self, settings: Settings, session: Session, event: ProviderEvent) -> Any:
        return None

    def apply(self, session: Session, settings: Settings, event: ProviderEvent, fetched: Any) -> str:
        raise NotOurs("bank transfers are matched on the bank statement, never by an event")

    def triage_update(self, event: ProviderEvent) -> tuple[PaymentUpdate, bool] | None:
        return None

    def start(self, session: Session, checkout: Checkout, settings: Settings, base_url: str) -> StartResult:
        if checkout.reference is None:
            checkout.reference = rf.make_reference(checkout.id)
        checkout.provider = self.name
        session.flush()
        return StartResult(next_path=f"/portal/pay/{checkout.id}/transfer")


def pretty_iban(iban: str) -> str:
    return format_iban(iban)
