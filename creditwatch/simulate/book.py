"""A seeded, synthetic loan book written as SPEC input events.

Why it exists: the detectors, the replay and the benchmark need realistic
event streams whose outcome is known in advance (``book_truth``), and the
acceptance data must be reproducible to the byte, so every random draw comes
from ``random.Random`` instances derived from the seed: no global ``random``,
no ``uuid4``, no wall clock.

How it is built:

* A cheap *planning* pass (one ``Random(seed)``) decides, for every customer,
  the behaviour class (exact shares, largest-remainder rounding, shuffled),
  segment, region, income, number of loans, guarantors and customer links.
  It is all ``book_truth`` needs.
* Each customer is then a small discrete-event simulation with its own
  ``Random`` (seeded from the seed and the customer number, so a customer's
  events do not depend on anybody else's draws). Its actions sit in a heap
  keyed by time; an action only ever schedules into its own future, so a
  customer's events come out in time order while only a few days of pending
  actions are held (spending is scheduled one local week at a time).
* ``iter_book`` merges the customers' lazy streams with ``heapq.merge`` on
  (instant, customer number, per-customer sequence) and numbers the events
  as it goes, so ``event_id`` ("sim-7-0000123") is the position in the book.
  Memory grows with the number of customers (a few pending actions each),
  not with the number of events, which is what makes 20,000 customers work.

Conventions (documented because consumers rely on them):

* ``occurred_at`` is rendered in the customer's own zone offset
  (``local_time=True``, the default; ``+08:00`` for Asia/Shanghai), or in
  UTC (``+00:00``) when ``local_time=False``. Ordering is by the instant,
  not by the string.
* ``installment.due`` is emitted at local midnight ``notice_days`` (5) days
  before its ``due_date``; ``due_date`` is a date in the customer's calendar.
  Due dates fall on the opening day of month (capped at the 28th).
* On-time repayments arrive 0-3 days before or on the due date, between
  08:00 and 16:00 local time, so the local and the UTC date agree for all
  three zones used.
* Money is kept in integer cents internally (exact, fast) and rendered as a
  string with two decimals. Rates are strings with four decimals.
* Non-mortgage loans are disbursed to the customer's account (a
  ``transaction.posted`` credit from counterparty ``LND0000``, this lender,
  counterparty_type ``lender``); the money is then spent on the purpose
  (counterparty_type ``other``) or, for diverting customers, moved to
  securities / gambling / crypto / real_estate counterparties within days.
* A failing customer pays the first instalment(s), then 2-3 instalments fail
  (1-3 ``repayment.failed`` attempts each, days apart), then nothing comes.
  ``outcome.default`` follows 91-100 days after the first missed due date;
  for ``written_off`` customers ``loan.written_off`` (amount = outstanding
  principal after the last paid instalment) follows 140-160 days after the
  first miss. Both are pulled in to land just inside the horizon when the
  target falls after it, but never earlier than 91 (default) or 120
  (write-off) days after the miss; if even that does not fit the horizon,
  they are not emitted (``book_truth`` still says what the customer is).
  The first missed instalment is chosen so that, when the horizon allows,
  these outcomes fit.
* Spending stops being emitted when the account cannot pay it (a declined
  card is not a posted transaction), so ``balance_after`` is never negative.
  Repayments reduce the tracked balance although, per SPEC, they are not
  themselves account transactions.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

__all__ = [
    "BEHAVIOURS",
    "DEFAULT_START",
    "BookConfig",
    "book_truth",
    "dumps_event",
    "generate_book",
    "iter_book",
    "iter_jsonl",
    "write_jsonl",
]

BEHAVIOURS: tuple[str, ...] = (
    "on_time",
    "occasionally_late",
    "chronic_late",
    "failing_then_default",
    "written_off",
)
"""Ground-truth behaviour classes, in the order of the ``share_*`` fields."""

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)

_DAY = 86_400
_DAYS = tuple(timedelta(days=i) for i in range(8))
_HOUR = 3_600
_FAILING = frozenset({"failing_then_default", "written_off"})
_OWN_LENDER = "LND0000"


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class BookConfig:
    """Everything that shapes a synthetic book; equal configs give equal bytes.

    ``share_*`` are shares of customers per behaviour class and must sum to 1.
    Rates (``card_per_week`` ...) are means for an ordinary customer; risky
    classes scale some of them (more cash, more diversion) on purpose, since
    that is the signal the detectors are meant to find.
    """

    seed: int = 7
    customers: int = 200
    start: datetime = DEFAULT_START
    months: int = 6
    share_on_time: float = 0.70
    share_occasionally_late: float = 0.12
    share_chronic_late: float = 0.08
    share_failing_then_default: float = 0.06
    share_written_off: float = 0.04
    sme_share: float = 0.15
    second_loan_share: float = 0.25
    guarantor_share: float = 0.15
    household_share: float = 0.10
    sme_group_share: float = 0.40
    card_per_week: float = 3.0
    atm_per_month: float = 1.5
    online_per_month: float = 2.0
    diversion_share: float = 0.04
    multi_lender_share: float = 0.03
    prepay_share: float = 0.08
    notice_days: int = 5
    local_time: bool = True

    def __post_init__(self) -> None:
        if self.customers < 0:
            raise ValueError("customers must be >= 0")
        if self.months < 1:
            raise ValueError("months must be >= 1")
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            raise ValueError("start must be timezone-aware")
        if not 0 <= self.notice_days <= 27:
            raise ValueError("notice_days must be within 0..27")
        shares = self.behaviour_shares
        if any(s < 0 for s in shares.values()) or not math.isclose(
            sum(shares.values()), 1.0, abs_tol=1e-6
        ):
            raise ValueError("behaviour shares must be non-negative and sum to 1")
        for name in (
            "sme_share",
            "second_loan_share",
            "guarantor_share",
            "household_share",
            "sme_group_share",
            "diversion_share",
            "multi_lender_share",
            "prepay_share",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1")
        for name in ("card_per_week", "atm_per_month", "online_per_month"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    @property
    def behaviour_shares(self) -> dict[str, float]:
        """Share of customers per behaviour class, in ``BEHAVIOURS`` order."""
        return {
            "on_time": self.share_on_time,
            "occasionally_late": self.share_occasionally_late,
            "chronic_late": self.share_chronic_late,
            "failing_then_default": self.share_failing_then_default,
            "written_off": self.share_written_off,
        }

    @property
    def end(self) -> datetime:
        """First instant after the horizon: ``start`` plus ``months`` calendar months."""
        return _add_months_dt(self.start, self.months)


# --------------------------------------------------------------------------- helpers


def _add_months(d: date, months: int, day: int | None = None) -> date:
    """Calendar month arithmetic; the day is capped at 28 so every month has it."""
    total = d.year * 12 + (d.month - 1) + months
    return date(total // 12, total % 12 + 1, min(day if day is not None else d.day, 28))


def _add_months_dt(dt: datetime, months: int) -> datetime:
    total = dt.year * 12 + (dt.month - 1) + months
    year, month = total // 12, total % 12 + 1
    days_in_month = (date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)).day
    return dt.replace(year=year, month=month, day=min(dt.day, days_in_month))


@functools.lru_cache(maxsize=1 << 16)
def _midnight_ts(zone_name: str, d: date) -> int:
    """Local midnight of ``d`` as a UNIX instant; cached because every customer asks daily."""
    return int(datetime(d.year, d.month, d.day, tzinfo=ZoneInfo(zone_name)).timestamp())


def _money(cents: int) -> str:
    """Cents to the wire form: a string with exactly two decimals."""
    return f"{cents // 100}.{cents % 100:02d}"


def _poisson(rng: random.Random, lam: float) -> int:
    """Knuth's method: exact and cheap for the small daily means used here."""
    if lam <= 0:
        return 0
    limit = math.exp(-lam)
    k = 0
    p = rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _largest_remainder(shares: dict[str, float], n: int) -> dict[str, int]:
    """Whole customer counts whose shares are as close as possible to the targets."""
    raw = {k: v * n for k, v in shares.items()}
    counts = {k: int(v) for k, v in raw.items()}
    left = n - sum(counts.values())
    by_fraction = sorted(raw, key=lambda k: (-(raw[k] - counts[k]), BEHAVIOURS.index(k)))
    for k in by_fraction[:left]:
        counts[k] += 1
    return counts


@dataclass(frozen=True, slots=True)
class _Region:
    timezone: str
    currency: str
    country: str
    calendar: str
    scale: float  # currency units per CNY, for sizing amounts
    weight: float


_REGIONS: tuple[_Region, ...] = (
    _Region("Asia/Shanghai", "CNY", "CN", "CN", 1.0, 0.86),
    _Region("Europe/London", "GBP", "GB", "GB", 0.11, 0.07),
    _Region("America/New_York", "USD", "US", "US", 0.14, 0.07),
)
_REGION_WEIGHTS = [r.weight for r in _REGIONS]
_FOREIGN = ("JP", "TH", "SG", "KR", "FR", "IT", "US", "GB", "AU")

# MCC, (low, high) in CNY, weight
_CARD_MCC: tuple[tuple[str, float, float], ...] = (
    ("5411", 30, 500),  # grocery
    ("5812", 25, 350),  # restaurants
    ("5814", 15, 80),  # fast food
    ("4121", 15, 120),  # taxi
    ("5999", 20, 1200),  # misc retail
    ("5541", 150, 500),  # fuel
    ("5311", 100, 2500),  # department stores
    ("5912", 20, 300),  # pharmacy
    ("5732", 300, 8000),  # electronics
)
_CARD_WEIGHTS = (30, 25, 15, 12, 10, 8, 5, 4, 1)
_SME_CARD_MCC: tuple[tuple[str, float, float], ...] = (
    ("5541", 200, 800),
    ("5111", 50, 1500),  # stationery / office
    ("5812", 80, 900),
    ("4121", 20, 200),
)
_SME_CARD_WEIGHTS = (30, 25, 30, 15)
_ONLINE_MCC: tuple[tuple[str, float, float], ...] = (
    ("5964", 20, 1500),  # direct marketing / e-commerce
    ("5999", 20, 800),
    ("4899", 15, 120),  # streaming / cable
)
_ONLINE_WEIGHTS = (60, 30, 10)


@dataclass(frozen=True, slots=True)
class _Sampler:
    """A weighted MCC table prepared once: ``random.choices`` per draw is too slow here."""

    mccs: tuple[str, ...]
    log_ranges: tuple[tuple[float, float], ...]  # (log low, log high - log low)
    cumulative: tuple[float, ...]  # cumulative weights normalised to 1

    @classmethod
    def of(cls, table: tuple[tuple[str, float, float], ...], weights: tuple[int, ...]) -> _Sampler:
        total = sum(weights)
        return cls(
            mccs=tuple(mcc for mcc, _, _ in table),
            log_ranges=tuple((math.log(lo), math.log(hi) - math.log(lo)) for _, lo, hi in table),
            cumulative=tuple(itertools.accumulate(w / total for w in weights)),
        )

    def draw(self, rng: random.Random) -> tuple[str, float]:
        """An MCC and a log-uniform CNY amount within its range."""
        i = min(bisect.bisect(self.cumulative, rng.random()), len(self.mccs) - 1)
        base, span = self.log_ranges[i]
        return self.mccs[i], math.exp(base + span * rng.random())


_CARD = _Sampler.of(_CARD_MCC, _CARD_WEIGHTS)
_SME_CARD = _Sampler.of(_SME_CARD_MCC, _SME_CARD_WEIGHTS)
_ONLINE = _Sampler.of(_ONLINE_MCC, _ONLINE_WEIGHTS)

# product: (weight for a first retail loan, rate range in 1/10000, terms, purposes)
_PRODUCTS: dict[str, tuple[tuple[int, int], tuple[int, ...], tuple[str, ...]]] = {
    "consumer": (
        (550, 1800),
        (12, 18, 24, 36),
        ("home_renovation", "education", "travel", "consumer_goods", "medical"),
    ),
    "credit_card": ((1200, 1800), (12, 18, 24), ("card_instalment",)),
    "auto": ((350, 800), (24, 36), ("vehicle_purchase",)),
    # Mortgages run for decades; a 12-36 month mortgage would be unrealistic.
    "mortgage": ((310, 490), (240, 300, 360), ("home_purchase",)),
    "sme_working_capital": (
        (400, 900),
        (12, 18, 24, 36),
        ("working_capital", "inventory", "equipment"),
    ),
}
_RETAIL_FIRST = (("consumer", 45), ("credit_card", 25), ("auto", 20), ("mortgage", 10))
_RETAIL_SECOND = (("consumer", 60), ("credit_card", 40))
_DIVERSION_TYPES = ("securities", "gambling", "crypto", "real_estate")
_DIVERSION_PREFIX = {"securities": "SEC", "gambling": "GMB", "crypto": "CRX", "real_estate": "RE"}
# Multipliers of the ordinary rate, by behaviour: risky classes show the signals more.
_DIVERSION_MULT = {
    "on_time": 1.0,
    "occasionally_late": 1.5,
    "chronic_late": 3.0,
    "failing_then_default": 8.0,
    "written_off": 8.0,
}
_MULTI_LENDER_MULT = {
    "on_time": 1.0,
    "occasionally_late": 2.0,
    "chronic_late": 8.0,
    "failing_then_default": 12.0,
    "written_off": 12.0,
}


# --------------------------------------------------------------------------- planning


@dataclass(slots=True)
class _Plan:
    """What the global pass decides about one customer."""

    index: int
    customer_id: str
    behaviour: str
    segment: str
    region: _Region
    income_cents: int
    employer_id: str
    consent: dict[str, bool]
    guarantors: list[tuple[str, ...]] = field(default_factory=list)  # one entry per loan
    links: list[tuple[str, str]] = field(default_factory=list)  # (related id, relation)


def _customer_id(index: int) -> str:
    return f"C{index + 1:06d}"


def _plan(config: BookConfig) -> list[_Plan]:
    """The global, cheap pass: classes, profiles and the relationships between customers."""
    rng = random.Random(config.seed)
    n = config.customers
    counts = _largest_remainder(config.behaviour_shares, n)
    behaviours = [b for b in BEHAVIOURS for _ in range(counts[b])]
    rng.shuffle(behaviours)
    employers = max(5, n // 25)

    plans: list[_Plan] = []
    for i in range(n):
        segment = "sme" if rng.random() < config.sme_share else "retail"
        region = rng.choices(_REGIONS, weights=_REGION_WEIGHTS)[0]
        if segment == "retail":
            income = min(max(rng.lognormvariate(math.log(12_000), 0.45), 3_500), 120_000)
        else:
            income = min(max(rng.lognormvariate(math.log(180_000), 0.7), 30_000), 5_000_000)
        income_cents = max(1, round(income * region.scale / 10)) * 1_000
        consent = {"sms": True, "phone": True, "email": True}
        if rng.random() < 0.1:
            consent[rng.choice(("sms", "phone"))] = False
        n_loans = 2 if rng.random() < config.second_loan_share else 1
        plans.append(
            _Plan(
                index=i,
                customer_id=_customer_id(i),
                behaviour=behaviours[i],
                segment=segment,
                region=region,
                income_cents=income_cents,
                employer_id=f"E{rng.randint(1, employers):05d}",
                consent=consent,
                guarantors=[() for _ in range(n_loans)],
            )
        )

    # Households: pairs of retail customers living in the same zone.
    by_zone: dict[str, list[int]] = {}
    for p in plans:
        if p.segment == "retail" and rng.random() < config.household_share:
            by_zone.setdefault(p.region.timezone, []).append(p.index)
    for members in by_zone.values():
        for a, b in zip(members[::2], members[1::2], strict=False):
            plans[a].links.append((plans[b].customer_id, "household"))
            plans[b].links.append((plans[a].customer_id, "household"))

    # SME groups of 2-4 companies under common control.
    group_of: dict[int, list[int]] = {}
    pool = [p.index for p in plans if p.segment == "sme" and rng.random() < config.sme_group_share]
    rng.shuffle(pool)
    while len(pool) >= 2:
        size = min(len(pool), rng.randint(2, 4))
        group, pool = pool[:size], pool[size:]
        for a in group:
            group_of[a] = group
            for b in group:
                if a != b:
                    plans[a].links.append((plans[b].customer_id, "group_member"))

    # Guarantors: SME loans are guaranteed more often, preferably within the group.
    if n > 1:
        for p in plans:
            share = config.guarantor_share * (3 if p.segment == "sme" else 1)
            for k in range(len(p.guarantors)):
                if rng.random() >= min(share, 1.0):
                    continue
                candidates = [g for g in group_of.get(p.index, ()) if g != p.index]
                if candidates and rng.random() < 0.7:
                    g = rng.choice(candidates)
                else:
                    g = rng.randrange(n - 1)
                    g += g >= p.index
                p.guarantors[k] = (plans[g].customer_id,)
    return plans


def book_truth(config: BookConfig | None = None) -> dict[str, str]:
    """Each customer's behaviour class: the ground truth to evaluate detectors against."""
    return {p.customer_id: p.behaviour for p in _plan(config or BookConfig())}


# --------------------------------------------------------------------------- loans


@dataclass(slots=True)
class _Loan:
    loan_id: str
    number: int
    product: str
    principal: int  # cents
    term: int
    rate: str  # "0.0650"
    purpose: str | None
    guarantors: tuple[str, ...]
    open_ts: int
    due_dates: list[date]  # instalments whose notice falls inside the horizon
    due_ts: list[int]  # local midnight of each due date
    amounts: list[int]  # amount due per instalment (cents)
    balances: list[int]  # outstanding principal after k instalments; [0] = principal
    diverts: bool = False
    prepay_after: int = 0  # instalment after which the loan is settled early (0: never)
    forced_late: int = 0  # instalment that is surely late (0: none)
    status: str = "open"
    clean: bool = True
    fail_run: int = 0
    fail_limit: int = 0
    first_miss: int = 0


def _schedule(principal: int, rate: Decimal, term: int, count: int) -> tuple[list[int], list[int]]:
    """Annuity instalments and balances (cents) for the first ``count`` instalments."""
    r = rate / 12
    if r == 0:
        payment = Decimal(principal) / term
    else:
        payment = Decimal(principal) * r / (1 - (1 + r) ** -term)
    payment_cents = int(payment.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    amounts: list[int] = []
    balances = [principal]
    balance = principal
    for k in range(1, min(count, term) + 1):
        interest = int((Decimal(balance) * r).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        due = balance + interest if k == term else payment_cents
        balance = max(0, balance + interest - due)
        amounts.append(due)
        balances.append(balance)
    return amounts, balances


# --------------------------------------------------------------------------- per customer

_Handler = Callable[[int, Any], "dict[str, Any] | None"]


class _CustomerSim:
    """One customer's life over the horizon, as a tiny discrete-event simulation."""

    def __init__(self, config: BookConfig, plan: _Plan, start_ts: int, end_ts: int) -> None:
        self.config = config
        self.plan = plan
        self.cid = plan.customer_id
        self.account = f"A{plan.index + 1:06d}"
        self.behaviour = plan.behaviour
        self.currency = plan.region.currency
        self.country = plan.region.country
        self.scale = plan.region.scale
        self.zone_name = plan.region.timezone
        self.zone = ZoneInfo(plan.region.timezone)
        self.render_zone = self.zone if config.local_time else UTC
        self.start_ts = start_ts
        self.end_ts = end_ts
        self.now = start_ts
        self.rng = random.Random(f"creditwatch.simulate:{config.seed}:{plan.index}")
        self.heap: list[tuple[int, int, _Handler, Any]] = []
        self.order = itertools.count()
        income_cny = plan.income_cents / 100 / self.scale
        self.spend_factor = min(max(math.sqrt(income_cny / 12_000), 0.5), 3.0)
        self.trouble_ts = end_ts + 366 * _DAY  # never, unless failing
        self.salary_stop_ts = self.trouble_ts
        self.show_balance = self.rng.random() < 0.6
        self.loans: list[_Loan] = []
        self._setup()

    # ----------------------------------------------------------------- plumbing

    def _push(self, ts: int, handler: _Handler, data: Any = None) -> None:
        """Schedule an action; never into the past (that would break time order)."""
        if self.now <= ts < self.end_ts:
            heapq.heappush(self.heap, (ts, next(self.order), handler, data))

    def _event(self, event_type: str, fields: dict[str, Any]) -> dict[str, Any]:
        event: dict[str, Any] = {
            "event_id": "",
            "type": event_type,
            "customer_id": self.cid,
            "occurred_at": "",
        }
        event.update(fields)
        return event

    def _emit_at(self, ts: int, event_type: str, fields: dict[str, Any]) -> None:
        self._push(ts, self._h_emit, (event_type, fields))

    def _h_emit(self, ts: int, data: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        return self._event(*data)

    def _midnight(self, d: date) -> int:
        return _midnight_ts(self.zone_name, d)

    def _local_date(self, ts: int) -> date:
        return datetime.fromtimestamp(ts, self.zone).date()

    def _at(self, d: date, lo_hour: float, hi_hour: float) -> int:
        """A random instant on local day ``d`` between two local hours."""
        return self._midnight(d) + self.rng.randint(int(lo_hour * _HOUR), int(hi_hour * _HOUR) - 1)

    def _cents(self, units_cny: float) -> int:
        """A CNY-sized amount in this customer's currency, in cents (at least 1.00)."""
        return max(100, round(units_cny * self.scale * 100))

    def events(self) -> Iterator[tuple[int, int, int, dict[str, Any]]]:
        """This customer's events as (instant, customer number, sequence, event), in order."""
        heap = self.heap
        index = self.plan.index
        zone = self.render_zone
        seq = 0
        while heap:
            ts, _, handler, data = heapq.heappop(heap)
            self.now = ts
            event = handler(ts, data)
            if event is not None:
                event["occurred_at"] = datetime.fromtimestamp(ts, zone).isoformat()
                yield ts, index, seq, event
                seq += 1

    # ----------------------------------------------------------------- setup

    def _setup(self) -> None:
        rng = self.rng
        plan = self.plan
        start = self.start_ts
        failing = self.behaviour in _FAILING
        self.balance = round(
            plan.income_cents * (rng.uniform(0.05, 0.4) if failing else rng.uniform(0.5, 3.0))
        )

        self._emit_at(
            start,
            "customer.updated",
            {
                "segment": plan.segment,
                "monthly_income": _money(plan.income_cents),
                "currency": self.currency,
                "timezone": plan.region.timezone,
                "holiday_calendar": plan.region.calendar,
                "contact_consent": dict(plan.consent),
            },
        )
        for related, relation in plan.links:
            self._emit_at(
                start + 60,
                "customer.linked",
                {"related_customer_id": related, "relation": relation},
            )

        # Loan 1 opens in the first fortnight (failing ones early, so the story fits).
        open1 = self._at(
            self._local_date(start) + timedelta(days=rng.randint(1, 5 if failing else 14)), 9, 17
        )
        loan1 = self._make_loan(1, open1, plan.guarantors[0])
        self.loans.append(loan1)
        if failing:
            self._plan_trouble(loan1)
        elif self.behaviour in ("occasionally_late", "chronic_late") and loan1.due_dates:
            loan1.forced_late = rng.randint(1, len(loan1.due_dates))

        if len(plan.guarantors) > 1:
            lo = open1 + 20 * _DAY
            hi = (self.trouble_ts - 20 * _DAY) if failing else (self.end_ts - 45 * _DAY)
            if hi > lo:
                open2 = self._at(self._local_date(rng.randint(lo, hi)), 9, 17)
                self.loans.append(self._make_loan(2, open2, plan.guarantors[1]))

        for loan in self.loans:
            if loan.guarantors:
                self._emit_at(
                    loan.open_ts - 60,
                    "customer.linked",
                    {"related_customer_id": loan.guarantors[0], "relation": "guarantor"},
                )
            self._push(loan.open_ts, self._h_open, loan)

        self._setup_income()
        if plan.segment == "retail":
            utility = f"U{rng.randint(1, 20):04d}"
            day = rng.randint(10, 28)
            first = self._local_date(start)
            for m in range(self.config.months + 1):
                d = _add_months(first, m, day)
                amount = self._cents(rng.uniform(80, 600))
                self._txn(
                    self._at(d, 6, 8),
                    amount,
                    "debit",
                    "direct_debit",
                    cp_id=utility,
                    cp_type="other",
                    mode="clamp",
                )

        ml_share = self.config.multi_lender_share * _MULTI_LENDER_MULT[self.behaviour]
        if rng.random() < min(ml_share, 0.6):
            latest = min(self.trouble_ts, self.end_ts)
            for _ in range(rng.randint(1, 2)):
                ts = rng.randint(start + 10 * _DAY, max(start + 10 * _DAY + 1, latest))
                self._txn(
                    self._at(self._local_date(ts), 9, 18),
                    self._cents(_log_uniform(rng, 5_000, 50_000)),
                    "credit",
                    "transfer",
                    cp_id=f"LND{rng.randint(1, 40):04d}",
                    cp_type="lender",
                )

        self._spending_profile()
        first_day = self._local_date(start)
        self._push(start, self._h_week, (first_day, self._midnight(first_day)))

    def _make_loan(self, number: int, open_ts: int, guarantors: tuple[str, ...]) -> _Loan:
        rng = self.rng
        if self.plan.segment == "sme":
            product = "sme_working_capital"
        else:
            table = _RETAIL_FIRST if number == 1 else _RETAIL_SECOND
            product = rng.choices([p for p, _ in table], weights=[w for _, w in table])[0]
        (lo, hi), terms, purposes = _PRODUCTS[product]
        term = rng.choice(terms)
        rate_bp = rng.randint(lo, hi)
        rate = Decimal(rate_bp) / 10_000
        if product == "mortgage":
            dti = rng.uniform(0.25, 0.40)
        elif product == "sme_working_capital":
            dti = rng.uniform(0.08, 0.25)
        else:
            dti = rng.uniform(0.05, 0.20)
        if self.behaviour != "on_time":
            dti *= 1.3
        r = rate / 12
        factor = (1 - (1 + r) ** -term) / r
        principal_units = float(Decimal(self.plan.income_cents) / 100 * Decimal(dti) * factor)
        rounding = 1_000 * self.scale if self.scale == 1.0 else 100
        principal = max(1, round(principal_units / rounding)) * round(rounding) * 100

        open_day = self._local_date(open_ts)
        due_day = min(open_day.day, 28)
        dates: list[date] = []
        for k in range(1, term + 1):
            d = _add_months(open_day, k, due_day)
            if self._midnight(d - timedelta(days=self.config.notice_days)) >= self.end_ts:
                break
            dates.append(d)
        amounts, balances = _schedule(principal, rate, term, len(dates))
        loan = _Loan(
            loan_id=f"L{self.plan.index + 1:06d}-{number}",
            number=number,
            product=product,
            principal=principal,
            term=term,
            rate=f"{rate_bp // 10_000}.{rate_bp % 10_000:04d}",
            purpose=None
            if product == "credit_card" and rng.random() < 0.5
            else rng.choice(purposes),
            guarantors=guarantors,
            open_ts=open_ts,
            due_dates=dates,
            due_ts=[self._midnight(d) for d in dates],
            amounts=amounts,
            balances=balances,
        )
        share = self.config.diversion_share * _DIVERSION_MULT[self.behaviour]
        loan.diverts = product != "mortgage" and rng.random() < min(share, 0.6)
        if (
            self.behaviour in ("on_time", "occasionally_late")
            and len(dates) >= 2
            and rng.random() < self.config.prepay_share
        ):
            loan.prepay_after = rng.randint(1, len(dates) - 1)
        return loan

    def _plan_trouble(self, loan: _Loan) -> None:
        """Pick the first missed instalment so that default / write-off fit the horizon."""
        rng = self.rng
        if not loan.due_ts:
            return
        gap = (91 if self.behaviour == "failing_then_default" else 120) * _DAY
        fits = [k for k, ts in enumerate(loan.due_ts, 1) if ts + gap < self.end_ts - 2 * _DAY]
        if fits:
            kmax = fits[-1]
            k = rng.randint(min(2, kmax), kmax)
        else:
            k = rng.randint(1, len(loan.due_ts))
        self.trouble_ts = loan.due_ts[k - 1]
        self.salary_stop_ts = self.trouble_ts - rng.randint(0, 25) * _DAY

    def _setup_income(self) -> None:
        rng = self.rng
        plan = self.plan
        first = self._local_date(self.start_ts)
        months = self.config.months + 1
        if plan.segment == "retail":
            payday = rng.choice((1, 5, 8, 10, 15, 20, 25, 28))
            for m in range(months):
                d = _add_months(first, m, payday) + timedelta(days=rng.choice((-1, 0, 0, 1)))
                ts = self._at(d, 9, 11)
                if ts >= self.salary_stop_ts:
                    break
                amount = round(plan.income_cents * rng.uniform(0.97, 1.03))
                self._txn(
                    ts, amount, "credit", "transfer", cp_id=plan.employer_id, cp_type="employer"
                )
            return
        buyers = [f"B{rng.randint(1, 99_999):05d}" for _ in range(rng.randint(3, 6))]
        suppliers = [f"S{rng.randint(1, 99_999):05d}" for _ in range(rng.randint(2, 5))]
        for m in range(months):
            month_start = _add_months(first, m, 1)
            slump = self._midnight(month_start) >= self.salary_stop_ts
            revenue = (
                plan.income_cents
                * rng.uniform(0.85, 1.15)
                * (rng.uniform(0.1, 0.35) if slump else 1.0)
            )
            parts = rng.randint(4, 8)
            for _ in range(parts):
                d = self._workday(month_start + timedelta(days=rng.randint(0, 27)))
                self._txn(
                    self._at(d, 9, 17),
                    max(100, round(revenue / parts)),
                    "credit",
                    "transfer",
                    cp_id=rng.choice(buyers),
                    cp_type="other",
                )
            pays = rng.randint(2, 4)
            for _ in range(pays):
                d = self._workday(month_start + timedelta(days=rng.randint(0, 27)))
                amount = round(plan.income_cents * rng.uniform(0.55, 0.8) / pays)
                self._txn(
                    self._at(d, 9, 17),
                    max(100, amount),
                    "debit",
                    "transfer",
                    cp_id=rng.choice(suppliers),
                    cp_type="other",
                    mode="discretionary",
                )

    @staticmethod
    def _workday(d: date) -> date:
        return d + timedelta(days=(7 - d.weekday()) % 7 if d.weekday() >= 5 else 0)

    # ----------------------------------------------------------------- account

    def _txn(
        self,
        ts: int,
        amount: int,
        direction: str,
        channel: str,
        *,
        mcc: str | None = None,
        cp_id: str | None = None,
        cp_type: str | None = None,
        country: str | None = None,
        mode: str = "discretionary",
    ) -> None:
        """Schedule a posting; ``mode`` says what to do if a debit exceeds the balance.

        ``discretionary`` debits are declined (not emitted); ``clamp`` debits
        take what is there (a transfer of the remaining funds).
        """
        self._push(
            ts, self._h_txn, (amount, direction, channel, mcc, cp_id, cp_type, country, mode)
        )

    def _h_txn(self, ts: int, data: tuple[Any, ...]) -> dict[str, Any] | None:
        amount, direction, channel, mcc, cp_id, cp_type, country, mode = data
        if direction == "debit":
            if amount > self.balance:
                if mode != "clamp" or self.balance < 100:
                    return None
                amount = self.balance
            self.balance -= amount
        else:
            self.balance += amount
        fields: dict[str, Any] = {
            "account_id": self.account,
            "amount": _money(amount),
            "currency": self.currency,
            "direction": direction,
            "channel": channel,
        }
        if mcc is not None:
            fields["merchant_category"] = mcc
        if cp_id is not None:
            fields["counterparty_id"] = cp_id
        if cp_type is not None:
            fields["counterparty_type"] = cp_type
        if country is not None:
            fields["country"] = country
        if self.show_balance:
            fields["balance_after"] = _money(self.balance)
        return self._event("transaction.posted", fields)

    def _spending_profile(self) -> None:
        """Weekly means and tables, computed once: ``_h_week`` runs weekly for everyone."""
        cfg = self.config
        sme = self.plan.segment == "sme"
        card_rate = cfg.card_per_week / 7 * (0.5 if sme else 1.0)
        if self.behaviour == "chronic_late":
            card_rate *= 1.2
        # Weekly means, as (normal, troubled).
        self.card_rate = (card_rate * 7, card_rate * 7 * 0.6)
        self.atm_p = (cfg.atm_per_month * 7 / 30, cfg.atm_per_month * 7 / 30 * 2.5)
        self.online_p = cfg.online_per_month * 7 / 30
        self.card_sampler = _SME_CARD if sme else _CARD
        self.foreign = [c for c in _FOREIGN if c != self.country]
        self.atm_step = (100 if self.scale == 1.0 else 20) * 100

    def _h_week(self, ts: int, data: tuple[date, int]) -> None:
        """Schedule one local week of everyday spending, then the next week.

        A week at a time rather than a day keeps the per-customer overhead low
        while holding at most a week of pending postings.
        """
        first, midnight = data
        rng = self.rng
        rand = rng.random
        txn = self._txn
        end = self.end_ts
        midnights = [midnight] + [self._midnight(first + _DAYS[i]) for i in range(1, 8)]
        troubled = midnight >= self.salary_stop_ts
        sampler = self.card_sampler
        factor = self.spend_factor * self.scale * 100
        home = self.country
        for _ in range(_poisson(rng, self.card_rate[troubled])):
            mcc, cny = sampler.draw(rng)
            country = home if rand() < 0.97 else self.foreign[int(rand() * len(self.foreign))]
            at = midnights[int(rand() * 7)] + 8 * _HOUR + int(rand() * (14.5 * _HOUR))
            txn(at, max(100, round(cny * factor)), "debit", "card", mcc=mcc, country=country)
        for _ in range(_poisson(rng, self.atm_p[troubled])):
            notes = (1 + int(rand() * 20)) * (2 if troubled else 1)
            channel = "atm" if rand() < 0.85 else "cash"
            at = midnights[int(rand() * 7)] + 7 * _HOUR + int(rand() * (16 * _HOUR))
            txn(
                at,
                notes * self.atm_step,
                "debit",
                channel,
                mcc="6011" if channel == "atm" else None,
                country=home,
            )
        for _ in range(_poisson(rng, self.online_p)):
            mcc, cny = _ONLINE.draw(rng)
            at = midnights[int(rand() * 7)] + int(rand() * _DAY)
            txn(at, max(100, round(cny * factor)), "debit", "online", mcc=mcc, country=home)
        if midnights[7] < end:
            heapq.heappush(
                self.heap,
                (midnights[7], next(self.order), self._h_week, (first + _DAYS[7], midnights[7])),
            )
        return None

    # ----------------------------------------------------------------- loans

    def _h_open(self, ts: int, loan: _Loan) -> dict[str, Any]:
        rng = self.rng
        fields: dict[str, Any] = {
            "loan_id": loan.loan_id,
            "product": loan.product,
            "principal": _money(loan.principal),
            "currency": self.currency,
            "term_months": loan.term,
            "annual_rate": loan.rate,
        }
        if loan.purpose is not None:
            fields["purpose"] = loan.purpose
        if loan.guarantors:
            fields["guarantor_ids"] = list(loan.guarantors)
        for k, due_ts in enumerate(loan.due_ts, 1):
            self._push(due_ts - self.config.notice_days * _DAY, self._h_due, (loan, k))

        if loan.product not in ("mortgage", "credit_card"):
            paid_out = ts + rng.randint(60, _HOUR)
            self._txn(
                paid_out, loan.principal, "credit", "transfer", cp_id=_OWN_LENDER, cp_type="lender"
            )
            if loan.diverts:
                total = loan.principal * rng.uniform(0.4, 0.9)
                parts = rng.randint(1, 3)
                for _ in range(parts):
                    kind = rng.choice(_DIVERSION_TYPES)
                    cp = f"{_DIVERSION_PREFIX[kind]}{rng.randint(1, 9_999):04d}"
                    self._txn(
                        paid_out + rng.randint(2 * _HOUR, 10 * _DAY),
                        round(total / parts),
                        "debit",
                        "online" if kind == "crypto" else "transfer",
                        cp_id=cp,
                        cp_type=kind,
                        mode="clamp",
                    )
            else:
                total = loan.principal * rng.uniform(0.6, 1.0)
                parts = 1 if loan.product != "sme_working_capital" else rng.randint(2, 3)
                for _ in range(parts):
                    self._txn(
                        paid_out + rng.randint(_DAY, 10 * _DAY),
                        round(total / parts),
                        "debit",
                        "transfer",
                        cp_id=f"M{rng.randint(1, 99_999):05d}",
                        cp_type="other",
                        mode="clamp",
                    )
        return self._event("loan.opened", fields)

    def _h_due(self, ts: int, data: tuple[_Loan, int]) -> dict[str, Any] | None:
        loan, k = data
        if loan.status != "open":
            return None
        amount = loan.amounts[k - 1]
        event = self._event(
            "installment.due",
            {
                "loan_id": loan.loan_id,
                "installment_no": k,
                "due_date": loan.due_dates[k - 1].isoformat(),
                "amount_due": _money(amount),
                "currency": self.currency,
            },
        )
        self._plan_repayment(loan, k, amount)
        return event

    def _repay(self, ts: int, loan: _Loan, amount: int, k: int | None) -> None:
        fields: dict[str, Any] = {
            "loan_id": loan.loan_id,
            "amount": _money(amount),
            "currency": self.currency,
        }
        if k is not None and self.rng.random() < 0.6:
            fields["installment_no"] = k
        self._push(ts, self._h_repaid, (amount, fields))

    def _h_repaid(self, ts: int, data: tuple[int, dict[str, Any]]) -> dict[str, Any]:
        amount, fields = data
        self.balance = max(0, self.balance - amount)
        return self._event("repayment.received", fields)

    def _fail(self, ts: int, loan: _Loan, amount: int, reason: str = "insufficient_funds") -> None:
        self._emit_at(
            ts,
            "repayment.failed",
            {
                "loan_id": loan.loan_id,
                "amount": _money(amount),
                "currency": self.currency,
                "reason": reason,
            },
        )

    def _plan_repayment(self, loan: _Loan, k: int, amount: int) -> None:
        """Decide, by behaviour class, how instalment ``k`` gets paid (or not)."""
        rng = self.rng
        due = loan.due_dates[k - 1]
        b = self.behaviour
        late_days = 0
        partial = False
        fail_first = False
        if b in _FAILING:
            if loan.due_ts[k - 1] >= self.trouble_ts:
                self._miss(loan, k, amount)
                return
            if loan.due_ts[k - 1] + 35 * _DAY > self.trouble_ts and rng.random() < 0.3:
                late_days = rng.randint(3, 10)  # the first crack
        elif b == "occasionally_late":
            if (loan.number == 1 and k == loan.forced_late) or rng.random() < 0.12:
                late_days = rng.randint(5, 40)
                fail_first = rng.random() < 0.3
        elif b == "chronic_late" and (
            (loan.number == 1 and k == loan.forced_late) or rng.random() < 0.65
        ):
            late_days = int(rng.triangular(5, 60, 18))
            partial = rng.random() < 0.35
            fail_first = rng.random() < 0.5

        if late_days == 0:
            pay_day = due - timedelta(days=rng.choice((0, 0, 0, 1, 2, 3)))
            pay_ts = self._at(pay_day, 8, 16)
            self._repay(pay_ts, loan, amount, k)
            if k == loan.prepay_after and loan.clean:
                self._push(pay_ts + rng.randint(2, 10) * _DAY, self._h_prepay, (loan, k))
            elif k == loan.term and loan.clean:
                self._emit_at(pay_ts + _DAY, "loan.closed", {"loan_id": loan.loan_id})
            return

        loan.clean = False
        if fail_first:
            self._fail(self._at(due, 8, 10), loan, amount)
        pay_ts = self._at(due + timedelta(days=late_days), 8, 20)
        if partial:
            first = round(amount * rng.uniform(0.3, 0.7))
            self._repay(pay_ts, loan, first, k)
            if rng.random() < 0.7:
                self._repay(pay_ts + rng.randint(7, 30) * _DAY, loan, amount - first, k)
        else:
            self._repay(pay_ts, loan, amount, k)

    def _miss(self, loan: _Loan, k: int, amount: int) -> None:
        """A failing customer's instalment: failed collections for a while, then silence."""
        rng = self.rng
        loan.clean = False
        due = loan.due_dates[k - 1]
        if loan.first_miss == 0:
            loan.first_miss = k
            loan.fail_limit = rng.randint(2, 3)
            self._plan_outcomes(loan, k)
        loan.fail_run += 1
        if loan.fail_run > loan.fail_limit:
            return
        attempts = rng.randint(1, 3)
        ts = self._at(due, 8, 10)
        for attempt in range(attempts):
            last = loan.fail_run == loan.fail_limit and attempt == attempts - 1
            reason = "mandate_revoked" if last and rng.random() < 0.15 else "insufficient_funds"
            self._fail(ts, loan, amount, reason)
            ts += rng.randint(3, 5) * _DAY

    def _clamped(self, earliest: int, target: int) -> int | None:
        """``target`` if inside the horizon, else just inside it, never before ``earliest``."""
        latest = self.end_ts - 2 * _DAY
        if target <= latest:
            return target
        if earliest > latest:
            return None
        return max(earliest, latest - self.rng.randint(0, _DAY))

    def _plan_outcomes(self, loan: _Loan, k: int) -> None:
        rng = self.rng
        miss = loan.due_ts[k - 1]
        default_ts = self._clamped(
            miss + 91 * _DAY, miss + rng.randint(91, 100) * _DAY + 10 * _HOUR
        )
        if default_ts is not None:
            self._emit_at(
                default_ts,
                "outcome.default",
                {"loan_id": loan.loan_id, "reason": "90_days_past_due"},
            )
        if self.behaviour == "written_off":
            earliest = max(miss + 120 * _DAY, (default_ts or 0) + _DAY)
            ts = self._clamped(earliest, miss + rng.randint(140, 160) * _DAY + 11 * _HOUR)
            if ts is not None:
                self._push(ts, self._h_write_off, (loan, loan.balances[k - 1]))

    def _h_write_off(self, ts: int, data: tuple[_Loan, int]) -> dict[str, Any]:
        loan, outstanding = data
        loan.status = "written_off"
        return self._event(
            "loan.written_off",
            {"loan_id": loan.loan_id, "amount": _money(outstanding), "currency": self.currency},
        )

    def _h_prepay(self, ts: int, data: tuple[_Loan, int]) -> dict[str, Any] | None:
        """Early settlement: the outstanding principal in one payment, then closure."""
        loan, k = data
        if loan.status != "open":
            return None
        loan.status = "closed"
        amount = loan.balances[k]
        self.balance = max(0, self.balance - amount)
        self._emit_at(ts + self.rng.randint(_HOUR, _DAY), "loan.closed", {"loan_id": loan.loan_id})
        return self._event(
            "repayment.received",
            {"loan_id": loan.loan_id, "amount": _money(amount), "currency": self.currency},
        )


# --------------------------------------------------------------------------- public API


def iter_book(config: BookConfig | None = None) -> Iterator[dict[str, Any]]:
    """The book's events in ``occurred_at`` (instant) order, generated lazily.

    Ties on the instant are broken by customer number, then by the order in
    which that customer's simulation produced them, so the order is total and
    stable. ``event_id`` is the event's position: ``sim-<seed>-<n:07d>``.
    """
    config = config or BookConfig()
    start_ts = int(config.start.timestamp())
    end_ts = int(config.end.timestamp())
    streams = [_CustomerSim(config, p, start_ts, end_ts).events() for p in _plan(config)]
    prefix = f"sim-{config.seed}-"
    for n, (_, _, _, event) in enumerate(heapq.merge(*streams)):
        event["event_id"] = f"{prefix}{n:07d}"
        yield event


def generate_book(config: BookConfig | None = None) -> list[dict[str, Any]]:
    """The whole book as a list of wire-JSON dicts, sorted by ``occurred_at``."""
    return list(iter_book(config))


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return str(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def dumps_event(event: dict[str, Any]) -> bytes:
    """Compact JSON bytes of one event (Decimal rendered as a string)."""
    return orjson.dumps(event, default=_default)


def iter_jsonl(events: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """One JSONL line (compact JSON plus ``\\n``) per event."""
    for event in events:
        yield orjson.dumps(event, default=_default, option=orjson.OPT_APPEND_NEWLINE)


def write_jsonl(path: str | Path, events: Iterable[dict[str, Any]]) -> int:
    """Write events as JSONL to ``path``; returns how many were written."""
    count = 0
    with Path(path).open("wb") as fh:
        for line in iter_jsonl(events):
            fh.write(line)
            count += 1
    return count
