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
from schemas.events import RepaymentFailed, RepaymentReceived, TransactionPosted

DAY = 86400
CASH_CHANNELS = frozenset({"atm", "cash"})
NOVELTY_WARM_UP = 10


def _night(hour: int, start: int, end: int) -> bool:
    return (hour >= start or hour < end) if start > end else (start <= hour < end)


def transaction_x(
    ev: TransactionPosted, st: CustomerState, *, night_hours: tuple[int, int] = (22, 6)
) -> dict[str, Any]:
    """Features of one posted transaction for every transaction detector."""
    local = ev.occurred_at.astimezone(st.tz)
    hour = local.hour + local.minute / 60.0
    amount = float(ev.amount)
    debit = ev.direction == "debit"
    angle = 2.0 * math.pi * hour / 24.0
    x: dict[str, Any] = {
        "ts": ev.occurred_at.timestamp(),
        "amount": amount,
        "direction": ev.direction,
        "channel": ev.channel,
        "hour_of_week": local.weekday() * 24 + hour,
        "segment": st.segment or "unknown",
        "debit": 1.0 if debit else 0.0,
        "cash": 1.0 if debit and ev.channel in CASH_CHANNELS else 0.0,
        "log_amount": min(math.log10(1.0 + amount) / 6.0, 1.0),
        "hour_sin": 0.5 + 0.5 * math.sin(angle),
        "hour_cos": 0.5 + 0.5 * math.cos(angle),
        "weekend": 1.0 if local.weekday() >= 5 else 0.0,
        "night": 1.0 if _night(local.hour, *night_hours) else 0.0,
        "online": 1.0 if ev.channel == "online" else 0.0,
        "transfer": 1.0 if ev.channel == "transfer" else 0.0,
        "risky_counterparty": 1.0 if ev.counterparty_type in RISKY_COUNTERPARTIES else 0.0,
    }
    warm = st.tx.seen >= NOVELTY_WARM_UP
    if ev.country is not None:
        x["country"] = ev.country
        x["new_country"] = 1.0 if warm and ev.country not in st.tx.countries else 0.0
    if ev.merchant_category is not None:
        x["mcc"] = ev.merchant_category
        x["new_mcc"] = 1.0 if warm and ev.merchant_category not in st.tx.mccs else 0.0
    if st.monthly_income:
        x["to_income"] = min(amount / float(st.monthly_income), 2.0) / 2.0
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
    w = st.tx.windows
    debits = w.totals("-", 30 * DAY, w.newest) if w.newest else {}
    spent = sum(a for code, (_, a) in debits.items() if len(code) == 2)
    cash = sum(debits.get(code, (0, 0))[1] for code in ("-a", "-h"))
    levels = w.levels("b", 30 * DAY, w.newest) if w.newest else []
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
        if levels:
            x["balance_to_income"] = max(min(levels[-1][1] / 100.0 / income, 2.0), -2.0)
    return x
