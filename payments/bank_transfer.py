"""Bank transfer by hand: the company's IBAN and an ISO 11649 reference unique to the checkout.

No provider is called. The checkout stays "open" until staff match the transfer on the bank
statement (`payments.settlement.record_bank_transfer`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ledger.banking import format_iban
from payments import rf
from payments.base import StartResult

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from kernel.settings import Settings
    from ledger.models import Checkout, Company


class BankTransferProvider:
    name = "bank_transfer"
    methods = ("bank_transfer",)

    def is_configured(self, settings: Settings) -> bool:
        return True  # nothing to configure: the IBAN is the company's

    def is_available(self, settings: Settings, company: Company, currency: str) -> bool:
        return bool(company.iban)

    def start(self, session: Session, checkout: Checkout, settings: Settings, base_url: str) -> StartResult:
        if checkout.reference is None:
            checkout.reference = rf.make_reference(checkout.id)
        checkout.provider = self.name
        session.flush()
        return StartResult(next_path=f"/portal/pay/{checkout.id}/transfer")


def pretty_iban(iban: str) -> str:
    return format_iban(iban)
