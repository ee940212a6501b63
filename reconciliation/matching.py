"""Which open items a bank credit pays: a pure function over plain values, no database.

The rules, best evidence first (each proposal carries the sentence staff read):

1. An ISO 11649 RF creditor reference — structured, or typed in the free text with any spaces
   and case — that Encours gave a bank-transfer checkout of this company: the checkout's invoices.
2. Invoice numbers of this company written in the remittance text (separators and prefixes such
   as "Facture n°" or "FACT" do not matter).
3. The amount: equal to one open invoice, to several open invoices of one customer together, or
   to invoices net of the early-payment discount still valid on the entry's value date.
4. Who paid: the payer's IBAN already seen paying a customer, or a name close to a customer's.

Only a proposal with strong evidence and no rival is applied without a person (the company's
`auto_match_level`: "off", "reference" — an RF reference whose amount agrees —, or
"invoice_number" — that, or invoice numbers whose open amounts the entry pays exactly).
Everything else waits for staff as a suggestion, or stays unmatched.

Every proposal allocates at most the entry's amount (what no invoice takes becomes the
customer's unapplied credit) and only to invoices of the entry's company.
"""

from __future__ import annotations

import difflib
import enum
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from kernel.i18n import N_
from ledger.money import Money
from reconciliation.references import find_invoice_numbers, find_rf_references, normalize_invoice_number

AUTO_LEVELS = ("off", "reference", "invoice_number")
# How many open invoices of one customer are tried in combinations for an amount that pays several.
_SUBSET_LIMIT = 12
_NAME_THRESHOLD = 0.85


class Evidence(str, enum.Enum):
    rf_reference = "rf_reference"
    invoice_number = "invoice_number"
    amount = "amount"
    payer_iban = "payer_iban"
    payer_name = "payer_name"
    manual = "manual"
    reversal = "reversal"


@dataclass(frozen=True)
class EntryFacts:
    """A bank credit as matching reads it; `amount_minor` is positive."""

    key: int
    company_id: int
    amount_minor: int
    currency: str
    value_date: date | None
    payer_name: str | None = None
    payer_iban: str | None = None
    remittance_text: str | None = None
    structured_reference: str | None = None


@dataclass
class OpenInvoice:
    """An invoice still (partly) open. Mutable: `Book.settle` lowers `open_minor` as entries pay it."""

    id: int
    company_id: int
    customer_id: int
    number: str
    currency: str
    due_date: date
    total_minor: int
    open_minor: int
    discount_bps: int | None = None
    discount_until: date | None = None

    def discount_on(self, day: date | None) -> int:
        """The early-payment discount on paying the whole open amount on `day` (0 when none)."""
        if (not self.discount_bps or self.discount_until is None or day is None or day > self.discount_until
                or self.open_minor != self.total_minor):
            return 0
        return Money(self.open_minor, self.currency).percent_bps(self.discount_bps).minor


@dataclass(frozen=True)
class CheckoutFacts:
    id: int
    company_id: int
    customer_id: int
    reference: str
    currency: str
    amount_minor: int
    status: str
    invoice_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class CustomerFacts:
    id: int
    company_id: int
    name: str


@dataclass(frozen=True)
class ProposedLine:
    customer_id: int
    invoice_id: int | None  # None: the customer's unapplied credit
    amount_minor: int
    discount_minor: int = 0


@dataclass(frozen=True)
class Proposal:
    evidence: Evidence
    reason_message: str  # gettext id with %(name)s placeholders
    reason_values: dict[str, str]
    score: int
    lines: tuple[ProposedLine, ...]
    auto: bool = False
    checkout_id: int | None = None

    @property
    def reason(self) -> str:
        return self.reason_message % self.reason_values

    @property
    def allocated_minor(self) -> int:
        return sum(line.amount_minor for line in self.lines)


@dataclass(frozen=True)
class Outcome:
    """The best proposal (None: nothing fits) and warnings about the entry."""

    proposal: Proposal | None
    warnings: tuple[str, ...] = ()


_NAME_NOISE = frozenset({"SA", "SAS", "SARL", "SASU", "EURL", "SCI", "SNC", "LTD", "LIMITED", "GMBH", "AG", "BV", "NV",
                         "INC", "LLC", "PLC", "ET", "CIE", "DE", "DU", "DES", "LA", "LE", "LES", "THE", "AND", "CO",
                         "STE", "SOCIETE", "STEDE"})
_WORD = re.compile(r"[A-Z0-9]+")


def name_tokens(name: str | None) -> tuple[str, ...]:
    """Upper-case ASCII words without legal forms and small words: "Boulangeries Martin SARL" →
    ("BOULANGERIES", "MARTIN")."""
    if not name:
        return ()
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().upper()
    return tuple(word for word in _WORD.findall(ascii_name) if word not in _NAME_NOISE and len(word) > 1)


def name_similarity(a: str | None, b: str | None) -> float:
    left, right = " ".join(sorted(name_tokens(a))), " ".join(sorted(name_tokens(b)))
    if not left or not right:
        return 0.0
    return difflib.SequenceMatcher(None, left, right).ratio()


@dataclass
class Book:
    """A company's open items, indexed for matching: every look-up is a dict, never a scan."""

    invoices: dict[int, OpenInvoice] = field(default_factory=dict)
    customers: dict[int, CustomerFacts] = field(default_factory=dict)
    checkouts_by_reference: dict[str, CheckoutFacts] = field(default_factory=dict)
    # RF references Encours gave checkouts of other companies: never matched here.
    foreign_references: set[str] = field(default_factory=set)
    payer_ibans: dict[tuple[int, str], set[int]] = field(default_factory=dict)  # (company, IBAN) → customers
    _by_number: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    _by_core: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    _by_amount: dict[tuple[int, str, int], set[int]] = field(default_factory=lambda: defaultdict(set))
    _by_net_amount: dict[tuple[int, str, int], set[int]] = field(default_factory=lambda: defaultdict(set))
    _by_customer: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))
    _by_name_token: dict[tuple[int, str], set[int]] = field(default_factory=lambda: defaultdict(set))

    @classmethod
    def of(cls, invoices: Iterable[OpenInvoice], customers: Iterable[CustomerFacts] = (),
           checkouts: Iterable[CheckoutFacts] = (), payer_ibans: Iterable[tuple[int, str, int]] = (),
           foreign_references: Iterable[str] = ()) -> Book:
        book = cls()
        for invoice in invoices:
            book.add_invoice(invoice)
        for customer in customers:
            book.customers[customer.id] = customer
            for token in set(name_tokens(customer.name)):
                book._by_name_token[(customer.company_id, token)].add(customer.id)
        for checkout in checkouts:
            book.checkouts_by_reference[checkout.reference] = checkout
        for company_id, iban, customer_id in payer_ibans:
            book.payer_ibans.setdefault((company_id, iban), set()).add(customer_id)
        book.foreign_references.update(foreign_references)
        return book

    def add_invoice(self, invoice: OpenInvoice) -> None:
        self.invoices[invoice.id] = invoice
        number = normalize_invoice_number(invoice.number)
        self._by_number[number].append(invoice.id)
        core = number.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
        if len(core) >= 4 and core != number:
            self._by_core[core].append(invoice.id)
        self._by_customer[invoice.customer_id].add(invoice.id)
        self._index_amounts(invoice)

    def _index_amounts(self, invoice: OpenInvoice) -> None:
        if invoice.open_minor > 0:
            self._by_amount[(invoice.company_id, invoice.currency, invoice.open_minor)].add(invoice.id)
            if invoice.discount_bps and invoice.discount_until and invoice.open_minor == invoice.total_minor:
                net = invoice.open_minor - Money(invoice.open_minor, invoice.currency).percent_bps(
                    invoice.discount_bps).minor
                self._by_net_amount[(invoice.company_id, invoice.currency, net)].add(invoice.id)

    def _unindex_amounts(self, invoice: OpenInvoice) -> None:
        self._by_amount.get((invoice.company_id, invoice.currency, invoice.open_minor), set()).discard(invoice.id)
        if invoice.discount_bps:
            net = invoice.open_minor - Money(invoice.open_minor, invoice.currency).percent_bps(
                invoice.discount_bps).minor
            self._by_net_amount.get((invoice.company_id, invoice.currency, net), set()).discard(invoice.id)

    def settle(self, invoice_id: int, settled_minor: int) -> None:
        """An entry paid (amount + discount) of this invoice: later entries see what is left."""
        invoice = self.invoices.get(invoice_id)
        if invoice is None:
            return
        self._unindex_amounts(invoice)
        invoice.open_minor = max(0, invoice.open_minor - settled_minor)
        self._index_amounts(invoice)

    def reopen(self, invoice_id: int, open_minor: int) -> None:
        invoice = self.invoices.get(invoice_id)
        if invoice is not None:
            self._unindex_amounts(invoice)
            invoice.open_minor = open_minor
            self._index_amounts(invoice)

    # --- look-ups ---

    def open_of_customer(self, customer_id: int, currency: str) -> list[OpenInvoice]:
        found = [self.invoices[i] for i in self._by_customer.get(customer_id, ())]
        return sorted((i for i in found if i.open_minor > 0 and i.currency == currency),
                      key=lambda i: (i.due_date, i.id))

    def invoices_named_in(self, text: str | None, company_id: int) -> list[OpenInvoice]:
        """This company's invoices whose numbers the text mentions (paid ones too)."""
        if not text:
            return []
        words = re.findall(r"[A-Za-z0-9]+", text.upper())
        candidates: set[int] = set()
        for start in range(len(words)):
            joined = ""
            for end in range(start, min(start + 6, len(words))):
                joined += words[end]
                for index in (self._by_number, self._by_core):
                    for invoice_id in index.get(joined, ()):
                        if self.invoices[invoice_id].company_id == company_id:
                            candidates.add(invoice_id)
        if not candidates:
            return []
        # Every invoice sharing a found core is among the candidates, so find_invoice_numbers's
        # "one owner per core" rule holds for the whole book, not only for the candidates.
        numbers = {normalize_invoice_number(self.invoices[i].number): i for i in candidates}
        found = find_invoice_numbers(text, numbers)
        return sorted((self.invoices[numbers[n]] for n in found), key=lambda i: (i.due_date, i.id))

    def with_amount(self, company_id: int, currency: str, amount: int) -> list[OpenInvoice]:
        return [self.invoices[i] for i in sorted(self._by_amount.get((company_id, currency, amount), ()))]

    def with_net_amount(self, company_id: int, currency: str, amount: int, day: date | None) -> list[OpenInvoice]:
        found = [self.invoices[i] for i in sorted(self._by_net_amount.get((company_id, currency, amount), ()))]
        return [i for i in found if i.discount_on(day) and i.open_minor - i.discount_on(day) == amount]

    def customers_paying_from(self, company_id: int, iban: str | None) -> set[int]:
        if not iban:
            return set()
        return set(self.payer_ibans.get((company_id, iban), set()))

    def customers_named(self, company_id: int, name: str | None) -> list[tuple[int, float]]:
        """Customers whose name is close to `name`, best first, with the similarity."""
        tokens = set(name_tokens(name))
        candidates: set[int] = set()
        for token in tokens:
            ids = self._by_name_token.get((company_id, token), set())
            if len(ids) <= 200:  # a common word names no one in particular
                candidates |= ids
        scored = [(cid, name_similarity(name, self.customers[cid].name)) for cid in candidates]
        return sorted((pair for pair in scored if pair[1] >= _NAME_THRESHOLD), key=lambda p: (-p[1], p[0]))


def allocate_lines(entry: EntryFacts, invoices: list[OpenInvoice], use_discount: bool,
                   credit_customer: int | None) -> tuple[ProposedLine, ...]:
    """The entry's money over `invoices` in order, each up to its open amount (with the discount
    valid on the value date when `use_discount`); the rest to `credit_customer`'s credit."""
    budget = entry.amount_minor
    lines: list[ProposedLine] = []
    for invoice in invoices:
        if budget <= 0:
            break
        if invoice.company_id != entry.company_id or invoice.currency != entry.currency or invoice.open_minor <= 0:
            continue
        discount = invoice.discount_on(entry.value_date) if use_discount else 0
        need = invoice.open_minor - discount
        if discount and budget >= need:
            lines.append(ProposedLine(invoice.customer_id, invoice.id, need, discount))
            budget -= need
            continue
        paid = min(budget, invoice.open_minor)
        lines.append(ProposedLine(invoice.customer_id, invoice.id, paid))
        budget -= paid
    if budget > 0:
        owner = credit_customer if credit_customer is not None else (lines[0].customer_id if lines else None)
        if owner is None:
            return ()
        lines.append(ProposedLine(owner, None, budget))
    return tuple(lines)


def _money(minor: int, currency: str) -> str:
    return str(Money(minor, currency))


def match_entry(entry: EntryFacts, book: Book, auto_level: str = "invoice_number") -> Outcome:
    """The best proposal for one credit entry; see the module docstring for the rules."""
    if entry.amount_minor <= 0:
        return Outcome(None)
    warnings: list[str] = []
    references = []
    if entry.structured_reference:
        references.extend(find_rf_references(entry.structured_reference))
    references.extend(ref for ref in find_rf_references(entry.remittance_text) if ref not in references)

    # 1. RF references of our checkouts.
    for reference in references:
        checkout = book.checkouts_by_reference.get(reference)
        if checkout is None or checkout.company_id != entry.company_id:
            if reference in book.foreign_references or checkout is not None:
                warnings.append(f"the reference {reference} belongs to another company: not matched to it")
            continue
        if checkout.currency != entry.currency:
            warnings.append(f"the reference {reference} is of a {checkout.currency} checkout, the entry is in "
                            f"{entry.currency}")
            continue
        agrees = checkout.amount_minor == entry.amount_minor
        invoices = [book.invoices[i] for i in checkout.invoice_ids if i in book.invoices]
        lines = allocate_lines(entry, invoices, use_discount=True, credit_customer=checkout.customer_id)
        if agrees:
            message = N_("The reference %(reference)s is the one Encours gave checkout %(checkout)s; "
                         "the amount agrees.")
        else:
            message = N_("The reference %(reference)s is the one Encours gave checkout %(checkout)s, but the "
                         "checkout was for %(expected)s.")
        return Outcome(Proposal(
            evidence=Evidence.rf_reference, reason_message=message,
            reason_values={"reference": reference, "checkout": str(checkout.id),
                           "expected": _money(checkout.amount_minor, checkout.currency)},
            score=100 if agrees else 85, lines=lines or (ProposedLine(checkout.customer_id, None, entry.amount_minor),),
            auto=agrees and checkout.status in ("open", "processing") and auto_level in ("reference", "invoice_number"),
            checkout_id=checkout.id,
        ), tuple(warnings))

    # 2. Invoice numbers in the text.
    named = book.invoices_named_in(entry.remittance_text, entry.company_id)
    named_open = [i for i in named if i.open_minor > 0 and i.currency == entry.currency]
    if named_open:
        customers = {i.customer_id for i in named_open}
        numbers = ", ".join(i.number for i in named_open)
        open_sum = sum(i.open_minor for i in named_open)
        net_sum = sum(i.open_minor - i.discount_on(entry.value_date) for i in named_open)
        one_customer = len(customers) == 1
        credit_to = named_open[0].customer_id
        if entry.amount_minor == open_sum:
            return Outcome(Proposal(
                Evidence.invoice_number, N_("The text names %(numbers)s and the amount is exactly what is open."),
                {"numbers": numbers}, 95, allocate_lines(entry, named_open, False, credit_to),
                auto=one_customer and auto_level == "invoice_number"), tuple(warnings))
        if entry.amount_minor == net_sum and net_sum != open_sum:
            return Outcome(Proposal(
                Evidence.invoice_number,
                N_("The text names %(numbers)s and the amount is what is open less the early-payment discount "
                   "valid on %(day)s."),
                {"numbers": numbers, "day": str(entry.value_date)}, 92,
                allocate_lines(entry, named_open, True, credit_to),
                auto=one_customer and auto_level == "invoice_number"), tuple(warnings))
        return Outcome(Proposal(
            Evidence.invoice_number,
            N_("The text names %(numbers)s, but the amount differs from the %(open)s open."),
            {"numbers": numbers, "open": _money(open_sum, entry.currency)}, 70 if one_customer else 55,
            allocate_lines(entry, named_open, True, credit_to)), tuple(warnings))

    # 3 and 4. Who paid, then the amount.
    payers = book.customers_paying_from(entry.company_id, entry.payer_iban)
    payer_evidence = Evidence.payer_iban
    payer_similarity = 1.0
    if not payers:
        named_customers = book.customers_named(entry.company_id, entry.payer_name)
        if named_customers:
            best = named_customers[0][1]
            payers = {cid for cid, score in named_customers if score == best}
            payer_evidence, payer_similarity = Evidence.payer_name, best
    if len(payers) == 1:
        customer_id = next(iter(payers))
        proposal = _amount_of_customer(entry, book, customer_id, payer_evidence, payer_similarity)
        if proposal is not None:
            return Outcome(proposal, tuple(warnings))

    same_amount = book.with_amount(entry.company_id, entry.currency, entry.amount_minor)
    if len(same_amount) == 1:
        invoice = same_amount[0]
        return Outcome(Proposal(
            Evidence.amount, N_("The amount is exactly what is open on %(number)s, the only open invoice of that "
                                "amount."),
            {"number": invoice.number}, 50, allocate_lines(entry, [invoice], False, invoice.customer_id)),
            tuple(warnings))
    discounted = book.with_net_amount(entry.company_id, entry.currency, entry.amount_minor, entry.value_date)
    if len(discounted) == 1:
        invoice = discounted[0]
        return Outcome(Proposal(
            Evidence.amount, N_("The amount is what is open on %(number)s less its early-payment discount, valid "
                                "on %(day)s."),
            {"number": invoice.number, "day": str(entry.value_date)}, 45,
            allocate_lines(entry, [invoice], True, invoice.customer_id)), tuple(warnings))
    return Outcome(None, tuple(warnings))


_PAYER_REASONS = {
    # (evidence, what the amount fits) → the sentence staff read
    (Evidence.payer_iban, "one"): N_("The payer's account %(iban)s has paid %(customer)s before, and the amount "
                                     "is what is open on %(number)s."),
    (Evidence.payer_iban, "discount"): N_("The payer's account %(iban)s has paid %(customer)s before, and the "
                                          "amount is what is open on %(number)s less its early-payment discount."),
    (Evidence.payer_iban, "several"): N_("The payer's account %(iban)s has paid %(customer)s before, and the "
                                         "amount is what is open on %(numbers)s together."),
    (Evidence.payer_iban, "none"): N_("The payer's account %(iban)s has paid %(customer)s before, but the amount "
                                      "fits none of its open invoices."),
    (Evidence.payer_name, "one"): N_("The payer's name %(payer)s is close to %(customer)s, and the amount is what "
                                     "is open on %(number)s."),
    (Evidence.payer_name, "discount"): N_("The payer's name %(payer)s is close to %(customer)s, and the amount is "
                                          "what is open on %(number)s less its early-payment discount."),
    (Evidence.payer_name, "several"): N_("The payer's name %(payer)s is close to %(customer)s, and the amount is "
                                         "what is open on %(numbers)s together."),
    (Evidence.payer_name, "none"): N_("The payer's name %(payer)s is close to %(customer)s, but the amount fits "
                                      "none of its open invoices."),
}


def _amount_of_customer(entry: EntryFacts, book: Book, customer_id: int, evidence: Evidence,
                        similarity: float) -> Proposal | None:
    customer = book.customers.get(customer_id)
    who = customer.name if customer else str(customer_id)
    if evidence is Evidence.payer_iban:
        values = {"iban": entry.payer_iban or "", "customer": who}
        base = 80
    else:
        values = {"payer": entry.payer_name or "", "customer": who}
        base = 60 + int((similarity - _NAME_THRESHOLD) * 100)
    invoices = book.open_of_customer(customer_id, entry.currency)
    for invoice in invoices:
        if invoice.open_minor == entry.amount_minor:
            return Proposal(evidence, _PAYER_REASONS[(evidence, "one")], {**values, "number": invoice.number}, base,
                            allocate_lines(entry, [invoice], False, customer_id))
    for invoice in invoices:
        discount = invoice.discount_on(entry.value_date)
        if discount and invoice.open_minor - discount == entry.amount_minor:
            return Proposal(evidence, _PAYER_REASONS[(evidence, "discount")], {**values, "number": invoice.number},
                            base - 2, allocate_lines(entry, [invoice], True, customer_id))
    subset = _subset_paying(entry, invoices)
    if subset is not None:
        chosen, use_discount = subset
        return Proposal(evidence, _PAYER_REASONS[(evidence, "several")],
                        {**values, "numbers": ", ".join(i.number for i in chosen)}, base - 5,
                        allocate_lines(entry, chosen, use_discount, customer_id))
    # Known payer, no amount fits: oldest first, the rest as credit; a person decides.
    return Proposal(evidence, _PAYER_REASONS[(evidence, "none")], values, 30,
                    allocate_lines(entry, invoices, False, customer_id))


def _subset_paying(entry: EntryFacts, invoices: list[OpenInvoice]) -> tuple[list[OpenInvoice], bool] | None:
    """Several open invoices of one customer whose open amounts (or net of discounts) add up to the entry:
    all of them, the oldest ones first, or a combination of the oldest few."""
    if len(invoices) < 2:
        return None
    for use_discount in (False, True):
        def cost(invoice: OpenInvoice, discounted: bool = use_discount) -> int:
            return invoice.open_minor - (invoice.discount_on(entry.value_date) if discounted else 0)

        running = 0
        for count, invoice in enumerate(invoices, start=1):
            running += cost(invoice)
            if running == entry.amount_minor and count >= 2:
                return invoices[:count], use_discount
            if running > entry.amount_minor:
                break
        head = invoices[:_SUBSET_LIMIT]
        # Pairs and triples among the oldest: an exact sum found by dict, not by trying every set.
        by_cost: dict[int, list[int]] = defaultdict(list)
        for index, invoice in enumerate(head):
            by_cost[cost(invoice)].append(index)
        for i in range(len(head)):
            rest = entry.amount_minor - cost(head[i])
            for j in by_cost.get(rest, ()):
                if j > i:
                    return [head[i], head[j]], use_discount
        for i in range(len(head)):
            for j in range(i + 1, len(head)):
                rest = entry.amount_minor - cost(head[i]) - cost(head[j])
                for k in by_cost.get(rest, ()):
                    if k > j:
                        return [head[i], head[j], head[k]], use_discount
    return None
