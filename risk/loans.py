"""Per-loan servicing arithmetic: instalments, payment allocation, days past due.

The rules are the lender's, not the payer's: a repayment pays the oldest
instalment that is not fully paid first, whatever instalment number the payer
wrote on it, because that is what stops the oldest arrears from ageing. Money
that arrives before an instalment is announced is held as a credit and
applied as soon as the instalment appears.

Days past due (DPD) is the number of days from the due date of the oldest
instalment not fully paid to the as-of date; an instalment is past due from
the day after its due date, and DPD is 0 when nothing is past due.

>>> from datetime import date
>>> loan = Loan(loan_id="L1", currency="CNY")
>>> loan.add_installment(1, date(2026, 1, 10), Decimal("100.00"))
>>> loan.add_installment(2, date(2026, 2, 10), Decimal("100.00"))
>>> loan.dpd(date(2026, 2, 20))
41
>>> loan.pay(Decimal("150.00"))
>>> loan.dpd(date(2026, 2, 20)), loan.overdue_amount(date(2026, 2, 20))
(10, Decimal('50.00'))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

ZERO = Decimal("0")

# Fully paid instalments are folded into counters and a one-letter-per-instalment
# punctuality history: they can no longer change DPD, and keeping them would
# let state grow without bound over a 30-year mortgage.
HISTORY_LENGTH = 12
MIGRATIONS_KEPT = 4


@dataclass(slots=True)
class Installment:
    """One scheduled instalment and how much of it has been paid."""

    no: int
    due_date: date
    amount_due: Decimal
    paid: Decimal = ZERO

    @property
    def remaining(self) -> Decimal:
        return max(self.amount_due - self.paid, ZERO)

    @property
    def settled(self) -> bool:
        return self.paid >= self.amount_due


@dataclass(slots=True)
class Loan:
    """The servicing state of one loan, enough to know DPD and class at any date."""

    loan_id: str
    currency: str
    principal: Decimal = ZERO
    product: str | None = None
    status: str = "open"  # open | closed | written_off
    opened_at: datetime | None = None
    installments: list[Installment] = field(default_factory=list)
    credit: Decimal = ZERO
    total_repaid: Decimal = ZERO
    settled_count: int = 0  # fully paid instalments folded away
    restructured: bool = False
    failed_streak: int = 0
    failed_streak_started: str | None = None
    failed_alerted: bool = False
    loan_class: str = "normal"
    dpd_seen: int = 0
    episode: str | None = None  # due date of the instalment that opened the arrears
    alerted_dpd: int = 0
    stage_dpd: int = 0
    open_alerts: int = 0
    annual_rate: Decimal = ZERO
    outstanding: Decimal = ZERO  # principal still owed, amortised as instalments settle
    history: str = ""  # last instalments settled: O on time, L late (newest last)
    partial_payments: int = 0
    failed_at: list[int] = field(default_factory=list)  # Unix times, last 30 days
    last_delinquent: str | None = None  # ISO date arrears last ended (or began, if open)
    cure_streak: int = 0  # on-time instalments in a row since a restructure
    diverted: Decimal = ZERO  # principal moved to risky counterparties after opening
    diversion_alerted: bool = False
    migrations: list[list[str]] = field(default_factory=list)  # [at, from, to, reason]

    # -- schedule and payments -------------------------------------------------

    def add_installment(
        self, no: int, due_date: date, amount_due: Decimal, *, on: date | None = None
    ) -> None:
        """Record an announced instalment (a re-announcement replaces the terms)."""
        for inst in self.installments:
            if inst.no == no:
                inst.due_date = due_date
                inst.amount_due = amount_due
                break
        else:
            self.installments.append(Installment(no, due_date, amount_due))
        self.installments.sort(key=lambda i: (i.due_date, i.no))
        # Re-allocate what was paid towards the open instalments, oldest first: an
        # instalment announced late (or out of order) must not leave money sitting
        # on a younger one while the older ages. Settled instalments are folded
        # away already, so only open ones are re-balanced.
        pool = self.credit + sum((i.paid for i in self.installments), start=ZERO)
        self.credit = ZERO
        for inst in self.installments:
            inst.paid = ZERO
        if pool > ZERO:
            self._allocate(pool, on or due_date)
        self._fold_settled()

    def pay(self, amount: Decimal, on: date | None = None) -> None:
        """Apply a repayment to the oldest instalments not yet fully paid.

        ``on`` is the local date of the payment; an instalment it settles
        counts as on time when that is no later than its due date.
        """
        self.total_repaid += amount
        first_open = next((i for i in self.installments if not i.settled), None)
        self._allocate(amount, on)
        if (
            first_open is not None
            and not first_open.settled
            and on is not None
            and first_open.due_date <= on
        ):
            self.partial_payments += 1
        self._fold_settled()

    def _allocate(self, amount: Decimal, on: date | None) -> None:
        for inst in self.installments:
            if amount <= ZERO:
                break
            take = min(inst.remaining, amount)
            if take > ZERO:
                inst.paid += take
                amount -= take
                if inst.settled:
                    self._settled(inst, on)
        if amount > ZERO:
            self.credit += amount

    def _settled(self, inst: Installment, on: date | None) -> None:
        """An instalment is fully paid: amortise the principal, record punctuality."""
        interest = (self.outstanding * self.annual_rate / 12).quantize(Decimal("0.01"))
        self.outstanding = max(self.outstanding - max(inst.amount_due - interest, ZERO), ZERO)
        on_time = on is None or on <= inst.due_date
        self.history = (self.history + ("O" if on_time else "L"))[-HISTORY_LENGTH:]
        if self.restructured:
            self.cure_streak = self.cure_streak + 1 if on_time else 0

    def _fold_settled(self) -> None:
        first_open = next((i for i, x in enumerate(self.installments) if not x.settled), None)
        limit = len(self.installments) if first_open is None else first_open
        if limit:
            self.settled_count += limit
            del self.installments[:limit]

    def record_failure(self, at: int) -> None:
        """A failed collection at Unix time ``at``; only the last 30 days are kept."""
        self.failed_at = [*[t for t in self.failed_at if t > at - 30 * 86400][-9:], at]

    def failed_within(self, days: int, now: int) -> int:
        return sum(1 for t in self.failed_at if now - days * 86400 < t <= now)

    def on_time_ratio(self, as_of: date) -> float | None:
        """Share of the last instalments paid on time; unpaid past-due ones count as late."""
        overdue = sum(1 for i in self.installments if not i.settled and i.due_date < as_of)
        total = len(self.history) + overdue
        if total == 0:
            return None
        return self.history.count("O") / total

    def migrate(self, at: str, old: str, new: str, reason: str) -> None:
        """Record a class migration with its reason (the last few are kept)."""
        self.migrations = [*self.migrations, [at, old, new, reason]][-MIGRATIONS_KEPT:]

    # -- arrears ---------------------------------------------------------------

    def oldest_unpaid(self, as_of: date) -> Installment | None:
        """The oldest instalment past due (due before ``as_of``) and not fully paid."""
        for inst in self.installments:
            if not inst.settled:
                return inst if inst.due_date < as_of else None
        return None

    def dpd(self, as_of: date) -> int:
        """Days past due as of ``as_of``; 0 for closed loans and loans with no arrears."""
        if self.status == "closed":
            return 0
        inst = self.oldest_unpaid(as_of)
        return (as_of - inst.due_date).days if inst else 0

    def overdue_amount(self, as_of: date) -> Decimal:
        """What is past due and unpaid as of ``as_of``."""
        if self.status == "closed":
            return ZERO
        return sum((i.remaining for i in self.installments if i.due_date < as_of), start=ZERO)

    @property
    def outstanding_principal(self) -> Decimal:
        """Exposure still carried by the loan.

        The principal amortised by each settled instalment (the interest part
        of an instalment is the outstanding principal times the monthly rate);
        closed and written-off loans carry none.
        """
        if self.status != "open":
            return ZERO
        return self.outstanding

    # -- persistence -----------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.loan_id,
            "cur": self.currency,
            "pr": str(self.principal),
            "prod": self.product,
            "st": self.status,
            "op": self.opened_at.isoformat() if self.opened_at else None,
            "inst": [
                [i.no, i.due_date.isoformat(), str(i.amount_due), str(i.paid)]
                for i in self.installments
            ],
            "cr": str(self.credit),
            "rep": str(self.total_repaid),
            "sc": self.settled_count,
            "rs": self.restructured,
            "fs": self.failed_streak,
            "fss": self.failed_streak_started,
            "fa": self.failed_alerted,
            "cls": self.loan_class,
            "dpd": self.dpd_seen,
            "ep": self.episode,
            "ad": self.alerted_dpd,
            "sd": self.stage_dpd,
            "oa": self.open_alerts,
            "rate": str(self.annual_rate),
            "out": str(self.outstanding),
            "h": self.history,
            "pp": self.partial_payments,
            "fat": self.failed_at,
            "ld": self.last_delinquent,
            "cs": self.cure_streak,
            "dv": str(self.diverted),
            "dva": self.diversion_alerted,
            "mig": self.migrations,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Loan:
        return cls(
            loan_id=d["id"],
            currency=d["cur"],
            principal=Decimal(d["pr"]),
            product=d["prod"],
            status=d["st"],
            opened_at=datetime.fromisoformat(d["op"]) if d["op"] else None,
            installments=[
                Installment(no, date.fromisoformat(due), Decimal(amt), Decimal(paid))
                for no, due, amt, paid in d["inst"]
            ],
            credit=Decimal(d["cr"]),
            total_repaid=Decimal(d["rep"]),
            settled_count=d["sc"],
            restructured=d["rs"],
            failed_streak=d["fs"],
            failed_streak_started=d["fss"],
            failed_alerted=d["fa"],
            loan_class=d["cls"],
            dpd_seen=d["dpd"],
            episode=d["ep"],
            alerted_dpd=d["ad"],
            stage_dpd=d["sd"],
            open_alerts=d["oa"],
            annual_rate=Decimal(d["rate"]),
            outstanding=Decimal(d["out"]),
            history=d["h"],
            partial_payments=d["pp"],
            failed_at=d["fat"],
            last_delinquent=d["ld"],
            cure_streak=d["cs"],
            diverted=Decimal(d["dv"]),
            diversion_alerted=d["dva"],
            migrations=d["mig"],
        )
