"""From a decoded event and the customer's state to the ``x`` the detectors read.

Call these with the state as it was *before* the engine applies the event:
the detectors ask "how unlike what we knew is this", and a repayment is
matched against the instalment it pays before that instalment is folded
away. The state is only read.

One ``x`` per event serves every detector; each reads the keys it knows:

* transactions: ``ts``, ``amount``, ``direction``, ``channel``, ``country``,
  ``mcc``, ``hour_of_week`` (customer's local time, Monday 00:00 = 0),
  ``segment``, the flags ``debit`` and ``cash``, and the [0, 1] population
  features of :data:`detectors.population.FEATURES`;
* collections: ``ts``, ``repaid`` or ``failed``, ``days_late`` (local payment
  date minus the due date of the oldest unpaid instalment) and ``paid_ratio``
  (amount over what that instalment still needs), when there is one.

>>> from risk.customer import CustomerState
>>> from schemas.events import TransactionPosted
>>> ev = TransactionPosted(event_id="e1", customer_id="c1",
...     occurred_at="2026-01-05T03:30:00+08:00", account_id="a1", amount="5000.00",
...     currency="CNY", direction="debit", channel="atm", country="TH")
>>> x = event_x(ev, CustomerState(customer_id="c1", timezone="Asia/Shanghai"))
>>> x["hour_of_week"], x["cash"], x["night"], x["segment"]
(3.5, 1.0, 1.0, 'unknown')
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from risk.customer import CustomerState
from risk.signals import RISKY_COUNTERPARTIES
from risk.transactions import CHANNEL_CODE
from risk.windows import Windows, resolution_for
from schemas.events import RepaymentFailed, RepaymentReceived, TransactionPosted

DAY = 86400
CASH_CHANNELS = frozenset({"atm", "cash"})
DEBIT_CODES = frozenset("-" + code for code in CHANNEL_CODE.values())  # risk.transactions
CASH_CODES = frozenset({"-a", "-h"})  # debits at an ATM or in cash
NOVELTY_WARM_UP = 10


_TAU_PER_HOUR = 2.0 * math.pi / 24.0
_SIN = math.sin
_COS = math.cos
_LOG10 = math.log10


def transaction_x(
    ev: TransactionPosted, st: CustomerState, *, night_hours: tuple[int, int] = (22, 6)
) -> dict[str, Any]:
    """Features of one posted transaction for every transaction detector.

    Built once per event and read by every detector, so it is written for
    speed: one conversion to local time, no intermediate objects.
    """
    occurred = ev.occurred_at
    local = occurred.astimezone(st.tz)
    local_hour = local.hour
    hour = local_hour + local.minute / 60.0
    weekday = local.weekday()
    amount = float(ev.amount)
    channel = ev.channel
    debit = ev.direction == "debit"
    angle = _TAU_PER_HOUR * hour
    start, end = night_hours
    night = (local_hour >= start or local_hour < end) if start > end else start <= local_hour < end
    log_amount = _LOG10(1.0 + amount) / 6.0
    x: dict[str, Any] = {
        "ts": occurred.timestamp(),
        "amount": amount,
        "direction": ev.direction,
        "channel": channel,
        "hour_of_week": weekday * 24 + hour,
        "segment": st.segment or "unknown",
        "debit": 1.0 if debit else 0.0,
        "cash": 1.0 if debit and channel in CASH_CHANNELS else 0.0,
        "log_amount": log_amount if log_amount < 1.0 else 1.0,
        "hour_sin": 0.5 + 0.5 * _SIN(angle),
        "hour_cos": 0.5 + 0.5 * _COS(angle),
        "weekend": 1.0 if weekday >= 5 else 0.0,
        "night": 1.0 if night else 0.0,
        "online": 1.0 if channel == "online" else 0.0,
        "transfer": 1.0 if channel == "transfer" else 0.0,
        "risky_counterparty": 1.0 if ev.counterparty_type in RISKY_COUNTERPARTIES else 0.0,
    }
    tx = st.tx
    warm = tx.seen >= NOVELTY_WARM_UP
    country = ev.country
    if country is not None:
        x["country"] = country
        x["new_country"] = 1.0 if warm and country not in tx.countries else 0.0
    mcc = ev.merchant_category
    if mcc is not None:
        x["mcc"] = mcc
        x["new_mcc"] = 1.0 if warm and mcc not in tx.mccs else 0.0
    income = st.monthly_income
    if income:
        share = amount / float(income)
        x["to_income"] = 1.0 if share > 2.0 else share / 2.0
    return x


def repayment_x(ev: RepaymentReceived | RepaymentFailed, st: CustomerState) -> dict[str, Any]:
    """Features of one collection (received or failed) against the instalment it meets."""
    x: dict[str, Any] = {
        "ts": ev.occurred_at.timestamp(),
        "segment": st.segment or "unknown",
        "failed" if isinstance(ev, RepaymentFailed) else "repaid": 1.0,
    }
    loan = st.loans.get(ev.loan_id)
    inst = None
    if loan is not None:
        inst = next((i for i in loan.installments if not i.settled), None)
    if inst is not None:
        x["days_late"] = float((ev.occurred_at.astimezone(st.tz).date() - inst.due_date).days)
        if isinstance(ev, RepaymentReceived) and inst.remaining > 0:
            x["paid_ratio"] = min(float(ev.amount / inst.remaining), 1.2)
    return x


def event_x(event: Any, st: CustomerState) -> dict[str, Any] | None:
    """The detectors' ``x`` for an event, or None for events no detector scores."""
    if isinstance(event, TransactionPosted):
        return transaction_x(event, st)
    if isinstance(event, RepaymentReceived | RepaymentFailed):
        return repayment_x(event, st)
    return None


def risk_x(st: CustomerState, at: int, *, drift_score: float = 0.0) -> dict[str, float]:
    """The default model's features (:data:`detectors.default_probability.FEATURES`), in [0, ~2]."""
    open_loans = [ln for ln in st.loans.values() if ln.status == "open"]
    history = "".join(ln.history for ln in st.loans.values())
    income = float(st.monthly_income) if st.monthly_income else None
    due = sum(
        (ln.installments[0].amount_due for ln in open_loans if ln.installments),
        start=Decimal(0),
    )
    diverted = max(
        (float(ln.diverted / ln.principal) for ln in st.loans.values() if ln.principal),
        default=0.0,
    )
    spent, cash, balance = _month_of_spending(st.tx.windows)
    x = {
        "max_dpd": min(max((ln.dpd_seen for ln in open_loans), default=0) / 90.0, 2.0),
        "failed_streak": min(max((ln.failed_streak for ln in open_loans), default=0) / 3.0, 2.0),
        "failed_30d": min(sum(ln.failed_within(30, at) for ln in open_loans) / 3.0, 2.0),
        "late_share": history.count("L") / len(history) if history else 0.0,
        "partial_payments": min(math.log1p(sum(ln.partial_payments for ln in open_loans)) / 2, 2),
        "restructured": 1.0 if any(ln.restructured for ln in open_loans) else 0.0,
        "diverted_share": min(diverted, 1.0),
        "income_late": 1.0 if st.income.late_alerted_for is not None else 0.0,
        "income_dropped": 1.0 if st.income.dropped_at is not None else 0.0,
        "cash_share_30d": cash / spent if spent else 0.0,
        "drift_score": min(drift_score / 10.0, 2.0),
    }
    if income:
        x["debt_to_income"] = min(float(due) / income, 2.0)
        if balance is not None:
            x["balance_to_income"] = max(min(balance / 100.0 / income, 2.0), -2.0)
    return x


def _month_of_spending(w: Windows) -> tuple[int, int, int | None]:
    """Debits, cash debits (cents) and the latest balance over the 30 days to the newest event.

    One pass over the day buckets, where ``Windows.totals`` and ``Windows.levels``
    would take two and build what is summed here: the default model's features
    are computed on every servicing event.
    """
    if not w.newest:
        return 0, 0, None
    size = resolution_for(30 * DAY)
    first = (w.newest - 30 * DAY) // size
    last = w.newest // size
    spent = cash = 0
    balance_day, balance = -1, None
    for index, bucket in w.buckets[size].items():
        if first <= index <= last:
            for code, slot in bucket.items():
                if code in DEBIT_CODES:
                    spent += slot[1]
                    if code in CASH_CODES:
                        cash += slot[1]
            level = bucket.get("b")
            if level is not None and index > balance_day:
                balance_day, balance = index, level[1]
    return spent, cash, balance
