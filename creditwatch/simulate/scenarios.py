"""Scenario generators: small, seeded event streams that each show one risk story.

Why they exist: the random book (``book``) is good for volume and for
population statistics, but a capability of the risk engine (salary stopped,
loan money diverted, a default spreading to a guarantor, ...) is best tested
on a stream built to exhibit exactly that story, with the moment it happens
known in advance, next to control customers who look alike but must *not*
trigger. Each scenario is such a stream plus its ``truth``.

Conventions (consumers rely on them):

* Every customer is announced by ``customer.updated`` at ``start`` (segment,
  income, ``CNY``, ``Asia/Shanghai``, calendar ``CN``), so local dates are
  unambiguous; every ``occurred_at`` is rendered with ``+08:00``.
* Money is a string with two decimals; rates are strings with four decimals.
* Ids are deterministic: customers ``<prefix><TAG><nn>`` (e.g. ``S1-SSTOP01``),
  accounts ``A-<customer>``, loans ``L-<customer>-<n>``, events
  ``<prefix><tag>-<nnnnn>`` numbered in the order the generator created them.
  No personal data: ids only.
* Every instalment is announced by ``installment.due`` at local midnight five
  days before its ``due_date`` (the opening day of month, capped at 28);
  on-time repayments arrive 0-3 days before the due date, 09:00-16:00 local,
  and carry ``installment_no``.
* Loans other than credit cards are disbursed to the account as a
  ``transaction.posted`` credit from ``LND-OWN`` (``counterparty_type`` lender).
* The random draws come from ``random.Random`` seeded with the scenario name
  and the seed only, so the prefix and combination with other scenarios never
  change a scenario's shape; equal arguments give equal events.
* ``truth`` is plain JSON: ids, ISO dates and instants, money strings. Every
  truth has ``controls`` (customers that must not trigger) and ``roles``.

``build_scenarios`` merges several scenarios into one stream; background
activity (salaries, spending, instalments) of every scenario is stretched to
the latest scenario's horizon, so a control never looks "silent" only because
another scenario in the same stream runs longer.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

__all__ = [
    "CURRENCY",
    "SCENARIOS",
    "SCENARIO_START",
    "TIMEZONE",
    "Scenario",
    "build_scenario",
    "build_scenarios",
    "expand_names",
]

TIMEZONE = "Asia/Shanghai"
CURRENCY = "CNY"
SCENARIO_START = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=8)))
"""Default first instant of a scenario: local midnight of 2026-01-01 in Shanghai."""

_ZONE = ZoneInfo(TIMEZONE)
_NOTICE_DAYS = 5
_LENDER = "LND-OWN"
_CONSENT = {"sms": True, "phone": True, "email": True}
_CARD_MCC: tuple[tuple[str, int, int], ...] = (
    ("5411", 30, 500),  # grocery
    ("5812", 25, 350),  # restaurants
    ("4121", 15, 120),  # taxi
    ("5999", 20, 900),  # misc retail
    ("5541", 150, 500),  # fuel
    ("5912", 20, 300),  # pharmacy
)
_SME_MCC: tuple[tuple[str, int, int], ...] = (
    ("5111", 50, 1500),  # office supplies
    ("5541", 200, 800),  # fuel
    ("5812", 80, 900),  # business meals
)
_DIVERSION_KINDS = ("securities", "gambling", "crypto", "real_estate")
_DIVERSION_PREFIX = {"securities": "SEC", "gambling": "GMB", "crypto": "CRX", "real_estate": "RE"}


@dataclass(frozen=True)
class Scenario:
    """One scenario's input events (time-ordered, unique ids), its ground truth and roles."""

    name: str
    events: list[dict[str, Any]]
    truth: dict[str, Any]
    customers: dict[str, str]


# --------------------------------------------------------------------------- helpers


def _money(cents: int) -> str:
    """Cents to the wire form: a string with exactly two decimals."""
    return f"{cents // 100}.{cents % 100:02d}"


def _cents(text: str) -> int:
    """A money string (``"2000000.00"``) back to integer cents, exactly."""
    return int((Decimal(text) * 100).to_integral_value(rounding=ROUND_HALF_UP))


def _month_day(d: date, months: int, day: int) -> date:
    """``day`` of the month ``months`` after ``d``'s; capped at 28 so every month has it."""
    total = d.year * 12 + (d.month - 1) + months
    return date(total // 12, total % 12 + 1, min(day, 28))


def _annuity(principal: int, rate_bp: int, term: int) -> int:
    """Monthly annuity payment in cents for a principal in cents and a rate in 1/10000."""
    r = Decimal(rate_bp) / 120_000
    if r == 0:
        payment = Decimal(principal) / term
    else:
        payment = Decimal(principal) * r / (1 - (1 + r) ** -term)
    return int(payment.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass(slots=True)
class _Loan:
    """A loan the generator opened, with the schedule it announces."""

    customer_id: str
    loan_id: str
    principal: int
    rate_bp: int
    term: int
    due_dates: list[date]
    payment: int
    opened: dict[str, Any]
    disbursement: dict[str, Any] | None

    def outstanding_after(self, paid: int) -> int:
        """Principal still owed (cents) after ``paid`` instalments of the annuity."""
        r = Decimal(self.rate_bp) / 120_000
        balance = Decimal(self.principal)
        for _ in range(paid):
            balance = balance + (balance * r).quantize(Decimal(1)) - self.payment
        return max(0, int(balance))


Pay = str | int | None
"""How an instalment gets paid: ``"on_time"``, days late (int), ``"miss"`` (failed
collections, no payment) or ``None`` (nothing at all)."""


class _Builder:
    """Collects one scenario's events; knows the zone, the ids and the everyday helpers."""

    def __init__(
        self,
        name: str,
        tag: str,
        seed: int,
        start: datetime,
        prefix: str | None,
        until: date | None,
    ) -> None:
        if start.tzinfo is None or start.utcoffset() is None:
            raise ValueError("start must be timezone-aware")
        self.name = name
        self.tag = tag
        self.prefix = prefix or ""
        self.rng = random.Random(f"creditwatch.scenario:{name}:{seed}")
        self.start = start.replace(microsecond=0)
        self.day0 = self.start.astimezone(_ZONE).date()
        self.until = until
        self.customers: dict[str, str] = {}
        self._rows: list[tuple[datetime, int, dict[str, Any]]] = []

    # ----------------------------------------------------------------- plumbing

    def horizon(self, needed: date) -> date:
        """The last local date of background activity: what the story needs, or more."""
        return max(needed, self.until) if self.until is not None else needed

    def at(self, d: date, hour: int, minute: int = 0) -> datetime:
        """Local wall-clock time on ``d`` in Shanghai."""
        return datetime.combine(d, time(hour, minute), _ZONE)

    def some_time(self, d: date, lo_hour: int, hi_hour: int) -> datetime:
        """A random whole second on local day ``d`` between two local hours."""
        seconds = self.rng.randint(lo_hour * 3600, hi_hour * 3600 - 1)
        return self.at(d, 0) + timedelta(seconds=seconds)

    def emit(self, customer_id: str, when: datetime, etype: str, **fields: Any) -> dict[str, Any]:
        """Record an event; its id is its creation number, so it is known at once."""
        if when < self.start:
            raise ValueError(f"{self.name}: event before the start ({when.isoformat()})")
        n = len(self._rows)
        event: dict[str, Any] = {
            "event_id": f"{self.prefix}{self.tag.lower()}-{n:05d}",
            "type": etype,
            "customer_id": customer_id,
            "occurred_at": when.astimezone(_ZONE).isoformat(),
        }
        event.update(fields)
        self._rows.append((when, n, event))
        return event

    def events_of(self, customer_id: str, *, before: datetime) -> list[dict[str, Any]]:
        """The events recorded so far for ``customer_id`` that happen before ``before``."""
        return [e for when, _, e in self._rows if e["customer_id"] == customer_id and when < before]

    def finish(self, truth: dict[str, Any]) -> Scenario:
        """Sort by instant (ties: creation order) and attach roles and controls."""
        events = [e for _, _, e in sorted(self._rows, key=lambda r: (r[0], r[1]))]
        truth.setdefault("controls", [c for c, r in self.customers.items() if "control" in r])
        truth["roles"] = dict(self.customers)
        return Scenario(self.name, events, truth, dict(self.customers))

    # ----------------------------------------------------------------- customers

    def customer(self, role: str, segment: str, income: int) -> str:
        """A new customer id with its profile at the start (zone, currency, consent)."""
        cid = f"{self.prefix}{self.tag}{len(self.customers) + 1:02d}"
        self.customers[cid] = role
        self.emit(
            cid,
            self.start,
            "customer.updated",
            segment=segment,
            monthly_income=_money(income),
            currency=CURRENCY,
            timezone=TIMEZONE,
            holiday_calendar="CN",
            contact_consent=dict(_CONSENT),
        )
        return cid

    def link(self, customer_id: str, related: str, relation: str) -> dict[str, Any]:
        """``customer.linked`` on ``customer_id``, a minute after the profiles."""
        return self.emit(
            customer_id,
            self.start + timedelta(minutes=1),
            "customer.linked",
            related_customer_id=related,
            relation=relation,
        )

    def txn(
        self,
        customer_id: str,
        when: datetime,
        cents: int,
        direction: str,
        channel: str,
        *,
        mcc: str | None = None,
        cp_id: str | None = None,
        cp_type: str | None = None,
    ) -> dict[str, Any]:
        """A posted account transaction (``balance_after`` is left out on purpose)."""
        fields: dict[str, Any] = {
            "account_id": f"A-{customer_id}",
            "amount": _money(cents),
            "currency": CURRENCY,
            "direction": direction,
            "channel": channel,
        }
        if mcc is not None:
            fields["merchant_category"] = mcc
        if cp_id is not None:
            fields["counterparty_id"] = cp_id
        if cp_type is not None:
            fields["counterparty_type"] = cp_type
        if channel in ("card", "atm"):
            fields["country"] = "CN"
        return self.emit(customer_id, when, "transaction.posted", **fields)

    # ----------------------------------------------------------------- everyday life

    def monthly_dates(
        self, day: int, *, count: int | None = None, until: date | None = None
    ) -> list[date]:
        """Nominal monthly dates on ``day``, the first strictly after the start day."""
        first = _month_day(self.day0, 0, day)
        m = 0 if first > self.day0 else 1
        out: list[date] = []
        while True:
            d = _month_day(self.day0, m, day)
            if (count is not None and len(out) >= count) or (until is not None and d > until):
                return out
            out.append(d)
            m += 1

    def credits(
        self,
        customer_id: str,
        cp_id: str,
        cp_type: str | None,
        nominal: Iterable[date],
        cents: int,
        *,
        vary: float = 0.02,
        jitter: bool = True,
    ) -> list[dict[str, Any]]:
        """Monthly transfer credits (salary, pension, contract fee) on or ±1 day of each date."""
        out = []
        for d in nominal:
            day = d + timedelta(days=self.rng.choice((-1, 0, 0, 1))) if jitter else d
            amount = round(cents * self.rng.uniform(1 - vary, 1 + vary)) if vary else cents
            out.append(
                self.txn(
                    customer_id,
                    self.some_time(day, 9, 11),
                    amount,
                    "credit",
                    "transfer",
                    cp_id=cp_id,
                    cp_type=cp_type,
                )
            )
        return out

    def card_spending(self, customer_id: str, until: date, *, per_day: float = 0.45) -> None:
        """Everyday card debits from the day after the start up to ``until``."""
        rng = self.rng
        d = self.day0 + timedelta(days=1)
        while d <= until:
            if rng.random() < per_day:
                mcc, lo, hi = rng.choice(_CARD_MCC)
                self.txn(
                    customer_id,
                    self.some_time(d, 8, 22),
                    rng.randint(lo * 100, hi * 100),
                    "debit",
                    "card",
                    mcc=mcc,
                )
            d += timedelta(days=1)

    def sme_activity(self, customer_id: str, until: date, revenue: int) -> None:
        """Business revenue from many one-off buyers (no cadence to learn) and card costs.

        Each buyer id is drawn afresh so no counterparty looks like a monthly
        income that could later "stop" and raise an alert on a control.
        """
        rng = self.rng
        d = self.day0 + timedelta(days=1)
        while d <= until:
            if rng.random() < 0.2:
                self.txn(
                    customer_id,
                    self.some_time(d, 9, 17),
                    round(revenue / 6 * rng.uniform(0.6, 1.4)),
                    "credit",
                    "transfer",
                    cp_id=f"BUY-{rng.randint(1, 999_999):06d}",
                    cp_type="other",
                )
            if rng.random() < 0.15:
                mcc, lo, hi = rng.choice(_SME_MCC)
                self.txn(
                    customer_id,
                    self.some_time(d, 8, 20),
                    rng.randint(lo * 100, hi * 100),
                    "debit",
                    "card",
                    mcc=mcc,
                )
            d += timedelta(days=1)

    def retail(self, role: str, until: date, *, salary: bool = True) -> tuple[str, str, int]:
        """A retail customer with card spending and (unless told) a salary to the horizon.

        Returns (customer id, employer id, usual salary in cents).
        """
        rng = self.rng
        income = rng.randint(80, 250) * 10_000  # 8,000.00 - 25,000.00 CNY
        cid = self.customer(role, "retail", income)
        employer = f"EMP-{rng.randint(1, 9999):04d}"
        if salary:
            payday = rng.choice((5, 10, 15, 20, 25))
            self.credits(cid, employer, "employer", self.monthly_dates(payday, until=until), income)
        self.card_spending(cid, until)
        return cid, employer, income

    def sme(self, role: str, until: date) -> str:
        """An SME customer with one-off buyer revenue and business card costs."""
        revenue = self.rng.randint(20, 80) * 1_000_000  # 200,000 - 800,000 CNY a month
        cid = self.customer(role, "sme", revenue)
        self.sme_activity(cid, until, revenue)
        return cid

    # ----------------------------------------------------------------- loans

    def loan(
        self,
        customer_id: str,
        number: int,
        open_day: date,
        until: date,
        *,
        product: str,
        principal: int,
        term: int,
        rate_bp: int,
        purpose: str | None = None,
        guarantors: Sequence[str] = (),
    ) -> _Loan:
        """Open a loan (and disburse it); instalments whose notice falls by ``until``."""
        rng = self.rng
        opened_at = self.some_time(open_day, 9, 12)
        fields: dict[str, Any] = {
            "loan_id": f"L-{customer_id}-{number}",
            "product": product,
            "principal": _money(principal),
            "currency": CURRENCY,
            "term_months": term,
            "annual_rate": f"{rate_bp // 10_000}.{rate_bp % 10_000:04d}",
        }
        if purpose is not None:
            fields["purpose"] = purpose
        if guarantors:
            fields["guarantor_ids"] = list(guarantors)
        opened = self.emit(customer_id, opened_at, "loan.opened", **fields)
        disbursement = None
        if product != "credit_card":
            disbursement = self.txn(
                customer_id,
                opened_at + timedelta(minutes=rng.randint(5, 40)),
                principal,
                "credit",
                "transfer",
                cp_id=_LENDER,
                cp_type="lender",
            )
        dates = []
        for k in range(1, term + 1):
            d = _month_day(open_day, k, open_day.day)
            if d - timedelta(days=_NOTICE_DAYS) > until:
                break
            dates.append(d)
        return _Loan(
            customer_id=customer_id,
            loan_id=fields["loan_id"],
            principal=principal,
            rate_bp=rate_bp,
            term=term,
            due_dates=dates,
            payment=_annuity(principal, rate_bp, term),
            opened=opened,
            disbursement=disbursement,
        )

    def instalment(
        self, loan: _Loan, k: int, pay: Pay, *, amount: int | None = None
    ) -> dict[str, Any] | None:
        """Announce instalment ``k`` and play out how it is paid; returns the repayment."""
        rng = self.rng
        due = loan.due_dates[k - 1]
        cents = loan.payment if amount is None else amount
        cid = loan.customer_id
        self.emit(
            cid,
            self.at(due - timedelta(days=_NOTICE_DAYS), 0),
            "installment.due",
            loan_id=loan.loan_id,
            installment_no=k,
            due_date=due.isoformat(),
            amount_due=_money(cents),
            currency=CURRENCY,
        )
        if pay is None:
            return None
        if pay == "miss" or isinstance(pay, int):
            when = self.some_time(due, 8, 10)
            attempts = rng.randint(1, 2) if pay == "miss" else 1
            for _ in range(attempts):
                self.emit(
                    cid,
                    when,
                    "repayment.failed",
                    loan_id=loan.loan_id,
                    amount=_money(cents),
                    currency=CURRENCY,
                    reason="insufficient_funds",
                )
                when += timedelta(days=rng.randint(3, 5))
            if pay == "miss":
                return None
            paid_at = self.some_time(due + timedelta(days=int(pay)), 9, 16)
        elif pay == "on_time":
            paid_at = self.some_time(due - timedelta(days=rng.choice((0, 0, 1, 2, 3))), 9, 16)
        else:
            raise ValueError(f"unknown payment behaviour {pay!r}")
        return self.emit(
            cid,
            paid_at,
            "repayment.received",
            loan_id=loan.loan_id,
            amount=_money(cents),
            currency=CURRENCY,
            installment_no=k,
        )

    def service(
        self, loan: _Loan, pay: Callable[[int], Pay] = lambda _k: "on_time"
    ) -> list[dict[str, Any] | None]:
        """Every announced instalment of ``loan``, paid as ``pay(k)`` says."""
        return [self.instalment(loan, k, pay(k)) for k in range(1, len(loan.due_dates) + 1)]

    def consumer_loan(self, customer_id: str, until: date) -> _Loan:
        """A small on-time consumer loan: retail subjects are borrowers too."""
        rng = self.rng
        loan = self.loan(
            customer_id,
            1,
            self.day0 + timedelta(days=rng.randint(2, 10)),
            until,
            product="consumer",
            principal=rng.randint(5, 15) * 1_000_000,
            term=24,
            rate_bp=rng.randint(600, 1200),
            purpose="consumer goods",
        )
        self.service(loan)
        return loan


# --------------------------------------------------------------------------- scenarios


def _income_stops(
    b: _Builder, *, employer: bool, paid_months: int, after_months: int
) -> dict[str, Any]:
    """Shared by ``salary_stop`` and ``learned_cadence_income``: N credits, then none."""
    if paid_months < 4:
        raise ValueError("paid_months must be >= 4: a cadence needs a few months to be learned")
    if after_months < 1:
        raise ValueError("after_months must be >= 1")
    rng = b.rng
    payday = rng.choice((5, 10, 15, 20, 25))
    nominal = b.monthly_dates(payday, count=paid_months + after_months)
    end = b.horizon(nominal[-1] + timedelta(days=10))
    if employer:
        variants: list[tuple[str, str | None, str, float]] = [("subject", "employer", "EMP", 0.02)]
    else:  # a pension (same amount) and a contract fee without any counterparty_type
        variants = [("subject", "other", "PEN", 0.0), ("subject", None, "CTR", 0.03)]
    cases = []
    for role, cp_type, cp_prefix, vary in variants:
        cid = b.customer(role, "retail", rng.randint(80, 250) * 10_000)
        cp_id = f"{cp_prefix}-{rng.randint(1, 9999):04d}"
        amount = rng.randint(60, 200) * 10_000
        paid = b.credits(cid, cp_id, cp_type, nominal[:paid_months], amount, vary=vary)
        b.card_spending(cid, end)
        b.consumer_loan(cid, end)
        missing = nominal[paid_months]
        cases.append(
            {
                "customer_id": cid,
                "counterparty_id": cp_id,
                "counterparty_type": cp_type,
                "credits_paid": paid_months,
                "usual_amount": _money(amount),
                "last_credit_event_id": paid[-1]["event_id"],
                "expected_date": missing.isoformat(),
                "expected_at": b.at(missing, 10).isoformat(),
            }
        )
    # Controls: the same income keeps coming to the horizon ...
    cp_type = "employer" if employer else "other"
    cid = b.customer("control", "retail", rng.randint(80, 250) * 10_000)
    b.credits(
        cid,
        f"{'EMP' if employer else 'PEN'}-{rng.randint(1, 9999):04d}",
        cp_type,
        b.monthly_dates(payday, until=end),
        rng.randint(60, 200) * 10_000,
    )
    b.card_spending(cid, end)
    b.consumer_loan(cid, end)
    if not employer:
        # ... or credits arrive at random from ever different people: nothing to learn.
        cid = b.customer("control_irregular", "retail", rng.randint(80, 250) * 10_000)
        b.credits(cid, "EMP-0000", "employer", b.monthly_dates(payday, until=end), 1_200_000)
        d = b.day0 + timedelta(days=rng.randint(1, 9))
        while d <= end:
            b.txn(
                cid,
                b.some_time(d, 10, 21),
                rng.randint(200, 5_000) * 100,
                "credit",
                "transfer",
                cp_id=f"P2P-{rng.randint(1, 999_999):06d}",
                cp_type="other",
            )
            d += timedelta(days=rng.randint(4, 45))
        b.card_spending(cid, end)
    truth = {k: v for k, v in cases[0].items() if k != "customer_id"}
    truth = {"subject": cases[0]["customer_id"], **truth}
    if len(cases) > 1:
        truth["cases"] = cases
    return truth


def _salary_stop(b: _Builder, *, paid_months: int = 5, after_months: int = 2) -> dict[str, Any]:
    """Employer salary for ``paid_months`` months, then none while card spending goes on."""
    truth = _income_stops(b, employer=True, paid_months=paid_months, after_months=after_months)
    truth["employer_id"] = truth.pop("counterparty_id")
    truth["last_salary_event_id"] = truth.pop("last_credit_event_id")
    truth["salaries_paid"] = truth.pop("credits_paid")
    return truth


def _learned_cadence_income(
    b: _Builder, *, paid_months: int = 5, after_months: int = 2
) -> dict[str, Any]:
    """Monthly income without ``employer`` (pension: "other"; contract fee: no type), stopping."""
    return _income_stops(b, employer=False, paid_months=paid_months, after_months=after_months)


def _salary_cut(
    b: _Builder, *, paid_months: int = 5, cut_share: float = 0.45, after_months: int = 1
) -> dict[str, Any]:
    """Regular salary, then one arrives on its usual day at ``cut_share`` (<= 0.5) of usual."""
    if paid_months < 4:
        raise ValueError("paid_months must be >= 4")
    if not 0 < cut_share <= 0.5:
        raise ValueError("cut_share must be within (0, 0.5]")
    rng = b.rng
    payday = rng.choice((5, 10, 15, 20, 25))
    nominal = b.monthly_dates(payday, count=paid_months + 1 + after_months)
    end = b.horizon(nominal[-1] + timedelta(days=10))
    income = rng.randint(100, 250) * 10_000
    cid = b.customer("subject", "retail", income)
    employer = f"EMP-{rng.randint(1, 9999):04d}"
    usual = b.credits(cid, employer, "employer", nominal[:paid_months], income)
    lowest = min(_cents(e["amount"]) for e in usual)
    cut_cents = int(lowest * cut_share)
    cut = b.credits(
        cid, employer, "employer", [nominal[paid_months]], cut_cents, vary=0.0, jitter=False
    )[0]
    # The reduced pay goes on (a real pay cut, not a one-off deduction).
    # Stretched with the horizon, so a combined stream does not also show it stopping.
    later = [d for d in b.monthly_dates(nominal[0].day, until=end) if d > nominal[paid_months]]
    b.credits(cid, employer, "employer", later, cut_cents, vary=0.01)
    b.card_spending(cid, end)
    b.consumer_loan(cid, end)
    control, _, _ = b.retail("control", end)
    b.consumer_loan(control, end)
    mean = sum(_cents(e["amount"]) for e in usual) // len(usual)
    return {
        "subject": cid,
        "employer_id": employer,
        "cut_event_id": cut["event_id"],
        "cut_at": cut["occurred_at"],
        "cut_amount": cut["amount"],
        "usual_amount": _money(mean),
        "cut_share": f"{cut_cents / mean:.4f}",
        "salaries_before_cut": paid_months,
    }


def _fund_diversion(
    b: _Builder, *, share: float = 0.4, kinds: Sequence[str] = _DIVERSION_KINDS
) -> dict[str, Any]:
    """A loan disbursed, then >= ``share`` of it moved to risky counterparties in 3-10 days.

    One subject per counterparty type in ``kinds``; controls spend the loan on
    ordinary suppliers, one of them moving money to securities only 95-110
    days later (outside any sensible diversion window).
    """
    if not 0 < share < 0.85:
        raise ValueError("share must be within (0, 0.85)")
    unknown = set(kinds) - set(_DIVERSION_KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be among {_DIVERSION_KINDS}")
    rng = b.rng
    principal = 20_000_000  # 200,000.00 CNY
    end = b.horizon(b.day0 + timedelta(days=135))

    def borrower(role: str, i: int) -> tuple[str, _Loan]:
        sme = i % 2 == 0
        cid = b.sme(role, end) if sme else b.retail(role, end)[0]
        loan = b.loan(
            cid,
            1,
            b.day0 + timedelta(days=rng.randint(3, 12)),
            end,
            product="sme_working_capital" if sme else "consumer",
            principal=principal,
            term=24,
            rate_bp=rng.randint(450, 900),
            purpose="working capital" if sme else "consumer goods",
        )
        b.service(loan)
        return cid, loan

    cases = []
    for i, kind in enumerate(kinds):
        cid, loan = borrower("subject", i)
        assert loan.disbursement is not None
        paid_out = datetime.fromisoformat(loan.disbursement["occurred_at"])
        total = round(principal * rng.uniform(share + 0.05, 0.85))
        parts = rng.randint(1, 3)
        offsets = sorted(rng.sample(range(3 * 24, 10 * 24), parts))  # hours after disbursement
        events = []
        for n, hours in enumerate(offsets):
            amount = total // parts + (total % parts if n == parts - 1 else 0)
            events.append(
                b.txn(
                    cid,
                    paid_out + timedelta(hours=hours, minutes=rng.randint(0, 59)),
                    amount,
                    "debit",
                    "online" if kind in ("crypto", "gambling") else "transfer",
                    cp_id=f"{_DIVERSION_PREFIX[kind]}-{rng.randint(1, 9999):04d}",
                    cp_type=kind,
                )
            )
        running, crossing = 0, None
        for e in events:
            running += _cents(e["amount"])
            if crossing is None and running >= principal * share:
                crossing = e
        assert crossing is not None
        cases.append(
            {
                "customer_id": cid,
                "counterparty_type": kind,
                "loan_id": loan.loan_id,
                "principal": _money(principal),
                "loan_opened_event_id": loan.opened["event_id"],
                "disbursement_event_id": loan.disbursement["event_id"],
                "disbursed_at": loan.disbursement["occurred_at"],
                "diversion_event_ids": [e["event_id"] for e in events],
                "diverted_amount": _money(total),
                "diverted_share": f"{total / principal:.4f}",
                "crossing_event_id": crossing["event_id"],
                "crossing_at": crossing["occurred_at"],
            }
        )

    control_kinds = {}
    for i, late in enumerate((False, True)):
        cid, loan = borrower("control", i)
        assert loan.disbursement is not None
        paid_out = datetime.fromisoformat(loan.disbursement["occurred_at"])
        spent = round(principal * rng.uniform(0.6, 0.9))
        for _ in range(3):
            b.txn(
                cid,
                paid_out + timedelta(days=rng.randint(1, 10), hours=rng.randint(0, 8)),
                spent // 3,
                "debit",
                "transfer",
                cp_id=f"SUP-{rng.randint(1, 9999):04d}",
                cp_type="other",
            )
        if late:
            b.txn(
                cid,
                paid_out + timedelta(days=rng.randint(95, 110)),
                round(principal * 0.5),
                "debit",
                "transfer",
                cp_id=f"SEC-{rng.randint(1, 9999):04d}",
                cp_type="securities",
            )
        control_kinds[cid] = "securities_after_90_days" if late else "spent_on_other"
    first = cases[0]
    return {
        "subject": first["customer_id"],
        **{k: v for k, v in first.items() if k != "customer_id"},
        "threshold_share": f"{share:.2f}",
        "window_days": 10,
        "cases": cases,
        "control_kinds": control_kinds,
    }


def _guarantor_contagion(b: _Builder, *, default_after_days: int = 92) -> dict[str, Any]:
    """Borrower A defaults; guarantor B and group member C are exposed, household D is not."""
    if default_after_days < 91:
        raise ValueError("default_after_days must be >= 91 (default means 91+ days past due)")
    rng = b.rng
    open_day = b.day0 + timedelta(days=rng.randint(2, 6))
    first_miss = _month_day(open_day, 3, open_day.day)  # instalments 1-2 are paid
    default_day = first_miss + timedelta(days=default_after_days)
    end = b.horizon(default_day + timedelta(days=30))

    # The source's business dries up a few weeks before the first missed instalment.
    a = b.customer("source", "sme", rng.randint(20, 80) * 1_000_000)
    b.sme_activity(a, first_miss - timedelta(days=20), rng.randint(20, 80) * 1_000_000)
    guarantor, _, _ = b.retail("affected_guarantor", end)
    member = b.sme("affected_group_member", end)
    household, _, _ = b.retail("control_household", end)
    b.link(a, guarantor, "guarantor")
    b.link(a, member, "group_member")
    b.link(a, household, "household")

    loan = b.loan(
        a,
        1,
        open_day,
        end,
        product="sme_working_capital",
        principal=50_000_000,
        term=24,
        rate_bp=750,
        purpose="working capital",
        guarantors=[guarantor],
    )
    missed = 0

    def pay(k: int) -> Pay:
        nonlocal missed
        if k <= 2:
            return "on_time"
        missed += 1
        return "miss" if missed <= 3 else None

    b.service(loan, pay)
    assert loan.due_dates[2] == first_miss
    default = b.emit(
        a,
        b.some_time(default_day, 10, 12),
        "outcome.default",
        loan_id=loan.loan_id,
        reason="90_days_past_due",
    )
    # The healthy side: their own loans, paid on time.
    b.consumer_loan(guarantor, end)
    b.consumer_loan(household, end)
    own = b.loan(
        member,
        1,
        b.day0 + timedelta(days=rng.randint(2, 12)),
        end,
        product="sme_working_capital",
        principal=rng.randint(10, 40) * 1_000_000,
        term=24,
        rate_bp=rng.randint(450, 900),
        purpose="working capital",
    )
    b.service(own)
    return {
        "source": a,
        "affected": [guarantor, member],
        "default_at": default["occurred_at"],
        "default_event_id": default["event_id"],
        "loan_id": loan.loan_id,
        "first_missed_due_date": first_miss.isoformat(),
        "dpd_91_date": (first_miss + timedelta(days=91)).isoformat(),
        "relations": {guarantor: "guarantor", member: "group_member", household: "household"},
        "unaffected": [household],
        "controls": [household],
    }


def _large_exposure(
    b: _Builder, *, principal: str = "2000000.00", limit: str = "5000000.00"
) -> dict[str, Any]:
    """Three linked SMEs whose third loan takes the group's exposure over ``limit``.

    With three equal loans the limit must lie in [2, 3) loans' worth: three
    loans of 3,000,000.00 would cross a 5,000,000.00 limit at the *second*
    loan, so the default is 3 x 2,000,000.00. The check also
    holds for outstanding principal (the first loans amortise a little).
    """
    p, lim = _cents(principal), _cents(limit)
    rng = b.rng
    end = b.horizon(b.day0 + timedelta(days=130))
    group = [b.sme("group_member", end) for _ in range(3)]
    controls = [b.sme("control_group_member", end) for _ in range(3)]
    control_p = (lim // 3 // 100_000 - 1) * 100_000  # three of them stay below the limit
    for members in (group, controls):
        for x in members:
            for y in members:
                if x != y:
                    b.link(x, y, "group_member")
    loans: list[_Loan] = []
    for i, (cid, ctl) in enumerate(zip(group, controls, strict=True)):
        for who, amount, day in ((cid, p, 10 + 30 * i), (ctl, control_p, 12 + 30 * i)):
            loan = b.loan(
                who,
                1,
                b.day0 + timedelta(days=day),
                end,
                product="sme_working_capital",
                principal=amount,
                term=36,
                rate_bp=rng.randint(450, 650),
                purpose="working capital",
            )
            b.service(loan)
            if who == cid:
                loans.append(loan)
    before = loans[0].outstanding_after(2) + loans[1].outstanding_after(1)
    if not (2 * p <= lim and before + p > lim):
        raise ValueError("the limit must be crossed exactly by the third loan")
    third = loans[2].opened
    return {
        "group": group,
        "limit": _money(lim),
        "crossing_event_id": third["event_id"],
        "crossing_loan_id": third["loan_id"],
        "crossing_customer_id": third["customer_id"],
        "crossing_at": third["occurred_at"],
        "loan_opened_event_ids": [ln.opened["event_id"] for ln in loans],
        "group_principal_before": _money(2 * p),
        "group_principal_after": _money(3 * p),
        "group_outstanding_before": _money(before),
        "controls": controls,
        "control_group_principal": _money(3 * control_p),
    }


def _restructure_and_cure(b: _Builder, *, cure_instalments: int = 6) -> dict[str, Any]:
    """45 days past due, restructured, then ``cure_instalments`` paid on time (control: late).

    The arrears are settled by a payment right after the restructure (the
    overdue instalments are folded into the new terms), so days past due go
    back to zero and the on-time count starts from the first instalment of the
    new, lower schedule. The cure point is the due date of the N-th of them.
    """
    if cure_instalments < 1:
        raise ValueError("cure_instalments must be >= 1")
    rng = b.rng
    open_day = b.day0 + timedelta(days=rng.randint(2, 8))
    first_miss = _month_day(open_day, 3, open_day.day)
    last_no = 4 + cure_instalments + 1  # one more on-time instalment after the cure point
    end = b.horizon(_month_day(open_day, last_no, open_day.day) + timedelta(days=2))
    truth: dict[str, Any] = {}
    for role in ("subject", "control_keeps_paying_late"):
        cid, _, _ = b.retail(role, end)
        loan = b.loan(
            cid,
            1,
            open_day,
            end,
            product="consumer",
            principal=12_000_000,
            term=24,
            rate_bp=950,
            purpose="consumer goods",
        )
        new_amount = round(loan.payment * 0.7)
        for k in (1, 2):
            b.instalment(loan, k, "on_time")
        for k in (3, 4):
            b.instalment(loan, k, "miss")
        restructured_at = b.some_time(first_miss + timedelta(days=45), 10, 12)
        restructure = b.emit(
            cid, restructured_at, "loan.restructured", loan_id=loan.loan_id, reason="hardship"
        )
        b.emit(
            cid,
            restructured_at + timedelta(hours=rng.randint(1, 3)),
            "repayment.received",
            loan_id=loan.loan_id,
            amount=_money(2 * loan.payment),
            currency=CURRENCY,
        )
        repayments = []
        for k in range(5, len(loan.due_dates) + 1):
            pay: Pay = "on_time" if role == "subject" else rng.randint(8, 20)
            repayments.append(b.instalment(loan, k, pay, amount=new_amount))
        if role == "subject":
            cure_no = 4 + cure_instalments
            cure = repayments[cure_instalments - 1]
            assert cure is not None
            truth = {
                "subject": cid,
                "loan_id": loan.loan_id,
                "restructure_event_id": restructure["event_id"],
                "restructured_at": restructure["occurred_at"],
                "first_missed_due_date": first_miss.isoformat(),
                "dpd_at_restructure": 45,
                "cure_instalments": cure_instalments,
                "cure_instalment_no": cure_no,
                "cure_due_date": loan.due_dates[cure_no - 1].isoformat(),
                "cure_repayment_event_id": cure["event_id"],
                "on_time_repayment_event_ids": [
                    e["event_id"] for e in repayments[:cure_instalments] if e is not None
                ],
            }
        else:
            truth["control_restructure_event_id"] = restructure["event_id"]
    return truth


def _control(b: _Builder, *, retail: int = 2, sme: int = 1, months: int = 6) -> dict[str, Any]:
    """Healthy customers: salary, card spending and on-time repayments; nothing may fire."""
    end = b.horizon(_month_day(b.day0, months, b.day0.day))
    for _ in range(retail):
        cid, _, _ = b.retail("control", end)
        b.consumer_loan(cid, end)
    for _ in range(sme):
        cid = b.sme("control", end)
        loan = b.loan(
            cid,
            1,
            b.day0 + timedelta(days=b.rng.randint(2, 12)),
            end,
            product="sme_working_capital",
            principal=b.rng.randint(10, 40) * 1_000_000,
            term=24,
            rate_bp=b.rng.randint(450, 900),
            purpose="working capital",
        )
        b.service(loan)
    return {"expect": "no early warnings for any customer"}


_DRIFT_MCC: tuple[tuple[str, int, int], ...] = (
    ("5732", 80, 900),  # electronics
    ("5944", 80, 900),  # jewellery
    ("5691", 50, 600),  # clothing
    ("4722", 100, 900),  # travel agencies
)
_TAKEOVER_MCC = (
    "5045",
    "5816",
    "4829",
    "6051",
)  # computers, digital goods, money orders, quasi-cash


def _spending_drift(
    b: _Builder,
    *,
    steady_days: int = 75,
    drift_days: int = 56,
    after_days: int = 28,
    factor: float = 4.0,
    new_share: float = 0.8,
    controls: int = 6,
) -> dict[str, Any]:
    """A customer's card purchases creep up and move to new kinds of merchants over weeks.

    For ``steady_days`` the subject lives like everyone else (salary, daytime
    card purchases at the usual merchants, a small loan paid on time). Then,
    over ``drift_days``, every purchase is scaled by a level rising linearly
    from 1 to ``factor``, and the chance that it goes to a merchant category
    the customer never used (electronics, jewellery, clothing, travel) rises
    from 0 to ``new_share``; it stays there for ``after_days``. No purchase is
    out of the range of a retail customer's card spending, a week's spending
    stays well below a month's income, and everything is a daytime card
    purchase in CN: no rule has anything to cross. ``controls`` retail
    customers live the steady life to the horizon.
    """
    if steady_days < 30 or drift_days < 14 or after_days < 0:
        raise ValueError("steady_days >= 30, drift_days >= 14 and after_days >= 0 are needed")
    if not 1.0 < factor <= 6.0 or not 0.0 <= new_share <= 1.0:
        raise ValueError("factor must be within (1, 6] and new_share within [0, 1]")
    rng = b.rng
    drift_start = b.day0 + timedelta(days=steady_days)
    drift_full = drift_start + timedelta(days=drift_days)
    end = b.horizon(drift_full + timedelta(days=after_days))
    income = rng.randint(150, 250) * 10_000  # 15,000.00 - 25,000.00 CNY
    cid = b.customer("subject", "retail", income)
    payday = rng.choice((5, 10, 15, 20, 25))
    b.credits(
        cid,
        f"EMP-{rng.randint(1, 9999):04d}",
        "employer",
        b.monthly_dates(payday, until=end),
        income,
    )
    b.consumer_loan(cid, end)
    purchases: list[dict[str, Any]] = []
    d = b.day0 + timedelta(days=1)
    while d <= end:
        if rng.random() < 0.5:
            progress = min(max((d - drift_start).days / drift_days, 0.0), 1.0)
            if d >= drift_start and rng.random() < new_share * progress:
                mcc, lo, hi = rng.choice(_DRIFT_MCC)
            else:
                mcc, lo, hi = rng.choice(_CARD_MCC)
            level = 1.0 + (factor - 1.0) * progress
            cents = round(rng.randint(lo * 100, hi * 100) * level)
            event = b.txn(cid, b.some_time(d, 9, 21), cents, "debit", "card", mcc=mcc)
            purchases.append(event)
        d += timedelta(days=1)
    for _ in range(controls):
        control, _, _ = b.retail("control", end)
        b.consumer_loan(control, end)
    drifting = [e for e in purchases if _local_day(e) >= drift_start]
    usual = {m for m, _, _ in _CARD_MCC}
    return {
        "subject": cid,
        "drift_start_date": drift_start.isoformat(),
        "drift_start_at": b.at(drift_start, 0).isoformat(),
        "drift_full_date": drift_full.isoformat(),
        "drift_full_at": b.at(drift_full, 0).isoformat(),
        "first_drift_event_id": drifting[0]["event_id"],
        "drift_event_ids": [e["event_id"] for e in drifting],
        "factor": f"{factor:.2f}",
        "new_merchant_categories": sorted({e["merchant_category"] for e in drifting} - usual),
        "monthly_income": _money(income),
    }


def _account_takeover(
    b: _Builder,
    *,
    history_days: int = 75,
    purchases: int = 5,
    confirm_after_days: int = 4,
    controls: int = 6,
) -> dict[str, Any]:
    """Someone else spends from the account: ordinary amounts, at night, online, new merchants.

    The subject lives an ordinary retail life (salary, daytime card purchases
    in CN, a loan paid on time) for ``history_days``; then, over two nights,
    ``purchases`` online debits between 01:00 and 04:30 local time, each within
    10 % of one of the customer's own earlier purchases, at merchant categories
    the customer never used. The bank confirms them as fraud
    (``outcome.fraud_confirmed``, one per transaction) ``confirm_after_days``
    later; the customer's own life goes on. Nothing crosses a rule: no card
    abroad, no cash, nothing near a month's income. Controls: ``controls``
    ordinary retail customers and one who has always shopped online in the
    evening, whose online purchases are their habit, not a takeover.
    """
    if history_days < 45 or purchases < 1 or confirm_after_days < 1:
        raise ValueError("history_days >= 45, purchases >= 1 and confirm_after_days >= 1 needed")
    rng = b.rng
    takeover_day = b.day0 + timedelta(days=history_days)
    end = b.horizon(takeover_day + timedelta(days=45))
    cid, _, _ = b.retail("subject", end)
    b.consumer_loan(cid, end)
    own = [
        _cents(e["amount"])
        for e in b.events_of(cid, before=b.at(takeover_day, 0))
        if e["type"] == "transaction.posted" and e["direction"] == "debit"
    ]
    fraud: list[dict[str, Any]] = []
    for i in range(purchases):
        night = takeover_day + timedelta(days=i * 2 // purchases)
        when = b.at(night, 1) + timedelta(seconds=rng.randint(0, int(3.5 * 3600)))
        cents = round(rng.choice(own) * rng.uniform(0.9, 1.1))  # one of the customer's own
        fraud.append(b.txn(cid, when, cents, "debit", "online", mcc=rng.choice(_TAKEOVER_MCC)))
    fraud.sort(key=lambda e: datetime.fromisoformat(e["occurred_at"]))
    confirm_day = _local_day(fraud[-1]) + timedelta(days=confirm_after_days)
    confirmations = [
        b.emit(
            cid,
            b.some_time(confirm_day, 10, 16),
            "outcome.fraud_confirmed",
            transaction_event_id=e["event_id"],
        )
        for e in fraud
    ]
    for _ in range(controls):
        control, _, _ = b.retail("control", end)
        b.consumer_loan(control, end)
    shopper, _, _ = b.retail("control_online_shopper", end)
    b.consumer_loan(shopper, end)
    d = b.day0 + timedelta(days=1)
    while d <= end:
        if rng.random() < 0.25:
            mcc, lo, hi = rng.choice(_CARD_MCC)
            b.txn(
                shopper,
                b.some_time(d, 18, 22),
                rng.randint(lo * 100, hi * 100),
                "debit",
                "online",
                mcc=mcc,
            )
        d += timedelta(days=1)
    first = min(confirmations, key=lambda e: datetime.fromisoformat(e["occurred_at"]))
    return {
        "subject": cid,
        "takeover_date": takeover_day.isoformat(),
        "takeover_at": fraud[0]["occurred_at"],
        "first_fraud_event_id": fraud[0]["event_id"],
        "fraud_event_ids": [e["event_id"] for e in fraud],
        "confirmation_event_ids": [e["event_id"] for e in confirmations],
        "confirmed_at": first["occurred_at"],
        "channel": "online",
        "local_hours": [1, 5],
    }


def _local_day(event: dict[str, Any]) -> date:
    return datetime.fromisoformat(event["occurred_at"]).astimezone(_ZONE).date()


# --------------------------------------------------------------------------- public API

_Body = Callable[..., dict[str, Any]]
_BODIES: dict[str, tuple[str, _Body]] = {
    "salary_stop": ("SSTOP", _salary_stop),
    "salary_cut": ("SCUT", _salary_cut),
    "learned_cadence_income": ("LCAD", _learned_cadence_income),
    "fund_diversion": ("FDIV", _fund_diversion),
    "guarantor_contagion": ("GCON", _guarantor_contagion),
    "large_exposure": ("LEXP", _large_exposure),
    "restructure_and_cure": ("RCURE", _restructure_and_cure),
    "control": ("CTRL", _control),
    "spending_drift": ("SDRIFT", _spending_drift),
    "account_takeover": ("ATO", _account_takeover),
}


def _factory(name: str) -> Callable[..., Scenario]:
    tag, body = _BODIES[name]

    def build(
        *,
        seed: int = 1,
        start: datetime = SCENARIO_START,
        prefix: str | None = None,
        until: date | None = None,
        **params: Any,
    ) -> Scenario:
        b = _Builder(name, tag, seed, start, prefix, until)
        return b.finish(body(b, **params))

    build.__name__ = f"build_{name}"
    build.__doc__ = body.__doc__
    return build


SCENARIOS: dict[str, Callable[..., Scenario]] = {name: _factory(name) for name in _BODIES}
"""Scenario name -> builder taking ``seed``, ``start``, ``prefix``, ``until`` and parameters."""


def build_scenario(
    name: str,
    *,
    seed: int = 1,
    start: datetime = SCENARIO_START,
    prefix: str | None = None,
    until: date | None = None,
    **params: Any,
) -> Scenario:
    """One scenario by name; ``params`` tune it (e.g. ``cure_instalments=4``).

    ``prefix`` is put in front of every customer and event id so that the
    same scenario can appear twice in one stream; ``until`` stretches the
    background activity to at least that local date.
    """
    try:
        factory = SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})") from None
    return factory(seed=seed, start=start, prefix=prefix, until=until, **params)


def expand_names(names: Iterable[str]) -> list[str]:
    """Scenario names with ``all`` expanded, duplicates dropped, order kept."""
    out: list[str] = []
    for name in names:
        for n in SCENARIOS if name == "all" else (name,):
            if n not in out:
                out.append(n)
    return out


def _last_day(scenario: Scenario) -> date:
    return datetime.fromisoformat(scenario.events[-1]["occurred_at"]).astimezone(_ZONE).date()


def build_scenarios(
    names: Iterable[str],
    seed: int = 1,
    *,
    start: datetime = SCENARIO_START,
    prefix: str | None = None,
) -> Scenario:
    """Several scenarios as one time-ordered stream; truth keyed by scenario name.

    Built twice when there is more than one: first to learn the latest
    horizon, then with every scenario's everyday activity stretched to it.
    Ties on the instant keep the order of ``names``.
    """
    wanted = expand_names(names)
    if not wanted:
        raise ValueError("no scenario named")
    built = [build_scenario(n, seed=seed, start=start, prefix=prefix) for n in wanted]
    if len(built) > 1:
        until = max(_last_day(s) for s in built)
        built = [
            build_scenario(n, seed=seed, start=start, prefix=prefix, until=until) for n in wanted
        ]
    customers: dict[str, str] = {}
    for s in built:
        clash = customers.keys() & s.customers.keys()
        if clash:
            raise ValueError(f"customer ids clash between scenarios: {sorted(clash)[:3]}")
        customers.update(s.customers)
    tagged = [
        (datetime.fromisoformat(e["occurred_at"]), i, e)
        for i, s in enumerate(built)
        for e in s.events
    ]
    tagged.sort(key=lambda t: (t[0], t[1]))
    events = [e for _, _, e in tagged]
    if len({e["event_id"] for e in events}) != len(events):
        raise ValueError("event ids clash between scenarios")
    return Scenario(
        name="+".join(wanted),
        events=events,
        truth={s.name: s.truth for s in built},
        customers=customers,
    )
