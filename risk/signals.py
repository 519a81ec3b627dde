"""Warnings that come from the account and the customer's relations, not from arrears.

Salary late or cut, loan money diverted to securities, real estate, gambling
or crypto soon after disbursement, a group's exposure crossing the large
exposure limit, and contagion from a guarantor or group member in default.

Relations cross partitions, so one customer never reads another's state: a
customer announces its exposure and its default to the customers linked to it
as internal events (``related.exposure``, ``related.default``) keyed by the
affected customer, which reach them through their own partition.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from risk.classification import RANK
from risk.customer import CustomerState
from risk.ids import stable_id
from risk.transactions import cents, money

if TYPE_CHECKING:
    from risk.engine import Engine, Outcome

RISKY_COUNTERPARTIES = frozenset({"securities", "real_estate", "gambling", "crypto"})
CONTAGION_RELATIONS = frozenset({"guarantor", "group_member"})
SUBSTANDARD = RANK["substandard"]  # a loan classified this or worse is in default
ZERO = Decimal("0")


def epoch(at: datetime) -> int:
    return int(at.timestamp())


def from_epoch(seconds: int, st: CustomerState) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC).astimezone(st.tz)


def on_transaction(engine: Engine, st: CustomerState, ev: Any, out: Outcome) -> None:
    """Features, income and fund diversion from one posted transaction."""
    cfg = engine.settings.features
    at = epoch(ev.occurred_at)
    st.tx.windows.lateness = int(cfg.allowed_lateness_hours * 3600)
    st.tx.observe(
        at=at,
        amount=ev.amount,
        direction=ev.direction,
        channel=ev.channel,
        local_hour=ev.occurred_at.astimezone(st.tz).hour,
        night_hours=(cfg.night_start_hour, cfg.night_end_hour),
        country=ev.country,
        mcc=ev.merchant_category,
        counterparty_type=ev.counterparty_type,
        balance_after=ev.balance_after,
        warm_up=cfg.novelty_warm_up_transactions,
    )
    if ev.direction == "credit" and ev.counterparty_id and ev.counterparty_type != "lender":
        _on_income(engine, st, ev, at, out)
    if ev.direction == "debit" and ev.counterparty_type in RISKY_COUNTERPARTIES:
        _on_risky_debit(engine, st, ev, out)


def _on_income(engine: Engine, st: CustomerState, ev: Any, at: int, out: Outcome) -> None:
    cfg = engine.settings.features
    income = st.income
    was_primary = income.primary
    income.observe(
        ev.counterparty_id,
        at,
        cents(ev.amount),
        employer=ev.counterparty_type == "employer",
        drop_share=cfg.salary_drop_share,
    )
    if income.primary is not None and ev.counterparty_id in (income.primary, was_primary):
        income.late_alerted_for = None  # the income arrived: no longer late
    if income.last_drop is not None and income.dropped_at is not None:
        income.last_drop = None  # still cut: reported when it began, not every month
    elif income.last_drop is not None:
        drop_at, got, usual = income.last_drop
        income.last_drop = None
        income.dropped_at = drop_at
        engine._summarize(st, ev.occurred_at, out)
        engine._emit(
            st,
            out,
            code="salary_drop",
            severity="warning",
            title="Salary fell sharply",
            loan=None,
            at=ev.occurred_at,
            evidence=(ev.event_id,),
            dedup_key=f"{st.customer_id}:income:drop",
            id_parts=(ev.event_id,),
            explanation={
                "amount": money(got),
                "usual_amount": money(usual),
                "drop_share": round(1 - got / usual, 4) if usual else None,
                "threshold_share": cfg.salary_drop_share,
                "currency": ev.currency,
            },
        )
    elif income.primary == ev.counterparty_id:
        income.dropped_at = None


def check_income(engine: Engine, st: CustomerState, at: datetime, out: Outcome) -> None:
    """Whether the primary income is later than the grace allows, as of ``at``."""
    income = st.income
    if income.primary is None:
        return  # no income recognised: none can be late (and no clock to read)
    grace = engine.settings.features.salary_grace_days
    expected = income.overdue_since(epoch(at), grace)
    if expected is None or income.late_alerted_for == expected:
        return
    income.late_alerted_for = expected
    engine._summarize(st, at, out)
    fired = from_epoch(expected + grace * 86400, st)
    source = income.sources[income.primary] if income.primary else None
    engine._emit(
        st,
        out,
        code="salary_late",
        severity="warning",
        title=f"Salary is more than {grace} days late",
        loan=None,
        at=fired,
        evidence=(),
        dedup_key=f"{st.customer_id}:income:late",
        id_parts=(str(expected),),
        explanation={
            "expected_at": from_epoch(expected, st).isoformat(),
            "grace_days": grace,
            "expected_amount": money(income.expected_cents() or 0),
            "recognised_as": "employer" if source and source.employer else "learned cadence",
            "last_received_at": from_epoch(source.last_at, st).isoformat() if source else None,
        },
    )


def _on_risky_debit(engine: Engine, st: CustomerState, ev: Any, out: Outcome) -> None:
    cfg = engine.settings.features
    window = cfg.diversion_window_days * 86400
    at = epoch(ev.occurred_at)
    recent = [
        loan
        for loan in st.loans.values()
        if loan.opened_at is not None
        and loan.status == "open"
        and loan.principal > ZERO
        and 0 <= at - epoch(loan.opened_at) <= window
    ]
    if not recent:
        return
    loan = max(recent, key=lambda ln: (ln.opened_at, ln.loan_id))
    loan.diverted += ev.amount
    share = loan.diverted / loan.principal
    if share >= Decimal(str(cfg.diversion_alert_share)) and not loan.diversion_alerted:
        loan.diversion_alerted = True
        engine._emit(
            st,
            out,
            code="loan_fund_diversion",
            severity="high",
            title=f"{share:.0%} of loan {loan.loan_id} moved to {ev.counterparty_type} "
            "soon after disbursement",
            loan=loan,
            at=ev.occurred_at,
            evidence=(ev.event_id,),
            dedup_key=f"{st.customer_id}:{loan.loan_id}:diversion",
            id_parts=(loan.loan_id,),
            explanation={
                "diverted_amount": str(loan.diverted),
                "principal": str(loan.principal),
                "share": float(round(share, 4)),
                "threshold_share": cfg.diversion_alert_share,
                "window_days": cfg.diversion_window_days,
                "last_counterparty_type": ev.counterparty_type,
                "opened_at": loan.opened_at.isoformat() if loan.opened_at else None,
            },
        )


# -- relations -----------------------------------------------------------------


def own_exposure(st: CustomerState) -> Decimal:
    return sum((loan.outstanding_principal for loan in st.loans.values()), start=ZERO)


def group_exposure(st: CustomerState) -> Decimal:
    return own_exposure(st) + sum((Decimal(v) for v in st.related_exposure.values()), start=ZERO)


def contagion_links(st: CustomerState) -> list[tuple[str, str]]:
    """(related customer, relation) pairs that exposure and default travel along."""
    return sorted(
        (other, rel)
        for other, relations in st.links.items()
        for rel in relations
        if rel in CONTAGION_RELATIONS
    )


def in_default(st: CustomerState) -> bool:
    if st.defaulted_at is not None:
        return True
    for loan in st.loans.values():  # noqa: SIM110 - a plain loop: runs on every step
        if RANK[loan.loan_class] >= SUBSTANDARD:
            return True
    return False


def internal_event(
    kind: str, st: CustomerState, target: str, at: datetime, cause: str, **fields: Any
) -> dict[str, Any]:
    """A wire-form internal event for ``target``, announced by ``st``'s customer."""
    return {
        "event_id": stable_id("related", kind, st.customer_id, target, cause),
        "type": f"related.{kind}",
        "customer_id": target,
        "related_customer_id": st.customer_id,
        "occurred_at": at.isoformat(),
        **fields,
    }


def _currency(st: CustomerState) -> str:
    return st.currency or next((ln.currency for ln in st.loans.values()), "XXX")


def _exposure_event(
    st: CustomerState, other: str, relation: str, at: datetime, cause: str, exposure: Decimal
) -> dict[str, Any]:
    return internal_event(
        "exposure",
        st,
        other,
        at,
        f"{cause}:{exposure}",
        relation=relation,
        exposure=str(exposure),
        currency=_currency(st),
    )


def _default_event(
    st: CustomerState, other: str, relation: str, at: datetime, cause: str
) -> dict[str, Any]:
    return internal_event(
        "default",
        st,
        other,
        at,
        cause,
        relation=relation,
        loan_class=st.loan_class,
        reason=_default_reason(st),
    )


def announce(
    engine: Engine, st: CustomerState, at: datetime, cause: str | None, out: Outcome
) -> None:
    """Tell linked customers about a changed exposure or a new default; check the group.

    ``cause`` is the event id behind the step, None for the passage of time to
    ``at`` (``tick:<at>``, spelt out only when something is announced: this
    runs on every day a loan ages, and mostly announces nothing).
    """
    exposure = own_exposure(st)
    sent = str(exposure)
    if sent != st.exposure_sent:
        st.exposure_sent = sent
        because = _cause(cause, at)
        for other, relation in contagion_links(st):
            out.internal.append(_exposure_event(st, other, relation, at, because, exposure))
    defaulted = in_default(st)
    if defaulted and not st.default_notified:
        st.default_notified = True
        because = _cause(cause, at)
        for other, relation in contagion_links(st):
            out.internal.append(_default_event(st, other, relation, at, because))
    elif not defaulted and st.default_notified:
        st.default_notified = False
    check_group_exposure(
        engine, st, at, out, evidence=None if cause is None else (cause,), own=exposure
    )


def _cause(cause: str | None, at: datetime) -> str:
    """The cause as announced: a tick's is ``tick:<at>``, the id it is judged under."""
    return f"tick:{at.isoformat()}" if cause is None else cause


def _default_reason(st: CustomerState) -> str:
    if st.defaulted_at is not None:
        return "default recorded"
    return f"loan classified {st.loan_class}"


def check_group_exposure(
    engine: Engine,
    st: CustomerState,
    at: datetime,
    out: Outcome,
    *,
    evidence: tuple[str, ...] | None,
    own: Decimal | None = None,
) -> None:
    """Warn once the group's exposure reaches the large-exposure limit.

    ``evidence`` None: the passage of time to ``at`` (see :func:`announce`);
    ``own`` is the customer's own exposure when the caller summed it already.
    """
    limit = engine.settings.features.large_exposure_limit
    if own is None:
        own = own_exposure(st)
    total = own + sum((Decimal(v) for v in st.related_exposure.values()), start=ZERO)
    if total >= limit and not st.exposure_alerted:
        if evidence is None:
            evidence = (_cause(None, at),)
        st.exposure_alerted = True
        engine._emit(
            st,
            out,
            code="large_exposure",
            severity="high",
            title="Group exposure is over the large-exposure limit",
            loan=None,
            at=at,
            evidence=evidence,
            dedup_key=f"{st.customer_id}:exposure:limit",
            id_parts=(at.isoformat(),),
            explanation={
                "group_exposure": str(total),
                "own_exposure": str(own),
                "related_exposure": dict(sorted(st.related_exposure.items())),
                "limit": str(limit),
            },
        )
    elif total < limit:
        st.exposure_alerted = False


def on_link_changed(
    engine: Engine,
    st: CustomerState,
    other: str,
    relation: str,
    linked: bool,
    at: datetime,
    cause: str,
    out: Outcome,
) -> None:
    """A new or removed link: bring the related customer up to date."""
    if relation not in CONTAGION_RELATIONS:
        return
    exposure = own_exposure(st) if linked else ZERO
    out.internal.append(_exposure_event(st, other, relation, at, cause, exposure))
    if linked and st.default_notified:
        out.internal.append(_default_event(st, other, relation, at, cause))


def on_related_exposure(engine: Engine, st: CustomerState, ev: Any, out: Outcome) -> None:
    if ev.exposure > ZERO:
        st.related_exposure[ev.related_customer_id] = str(ev.exposure)
    else:
        st.related_exposure.pop(ev.related_customer_id, None)
    check_group_exposure(engine, st, ev.occurred_at, out, evidence=(ev.event_id,))


def on_related_default(engine: Engine, st: CustomerState, ev: Any, out: Outcome) -> None:
    if any(src == ev.related_customer_id for src, _, _ in st.contagion):
        return
    st.contagion = [
        *st.contagion,
        [ev.related_customer_id, ev.relation, ev.occurred_at.isoformat()],
    ][-5:]
    engine._summarize(st, ev.occurred_at, out)
    engine._emit(
        st,
        out,
        code="related_party_default",
        severity="high",
        title=f"A {ev.relation.replace('_', ' ')} relation ({ev.related_customer_id}) "
        "is in default",
        loan=None,
        at=ev.occurred_at,
        evidence=(ev.event_id,),
        dedup_key=f"{st.customer_id}:contagion:{ev.related_customer_id}",
        id_parts=(ev.related_customer_id,),
        source="contagion",
        explanation={
            "source_customer_id": ev.related_customer_id,
            "relation": ev.relation,
            "source_loan_class": ev.loan_class,
            "reason": ev.reason,
        },
    )


def features(st: CustomerState, as_of: datetime | None) -> dict[str, Any]:
    """Income, exposure and relation features for the risk state."""
    income = st.income
    expected = income.expected_at()
    source = income.sources.get(income.primary) if income.primary else None
    return {
        "income_recognised": income.primary is not None,
        "income_source": (
            None if source is None else ("employer" if source.employer else "learned cadence")
        ),
        "income_expected_at": from_epoch(expected, st).isoformat() if expected else None,
        "income_expected_amount": money(income.expected_cents() or 0) if expected else None,
        "income_late": income.late_alerted_for is not None,
        "income_dropped": income.dropped_at is not None,
        "own_exposure": str(own_exposure(st)),
        "group_exposure": str(group_exposure(st)),
        "related_exposure": dict(sorted(st.related_exposure.items())),
        "contagion_sources": [src for src, _, _ in st.contagion],
        "links": {k: list(v) for k, v in sorted(st.links.items())},
    }
