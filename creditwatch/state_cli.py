"""``creditwatch state show|top``: a customer's risk state for a person, or JSON for scripts."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from config.settings import Settings
from risk.engine import Engine
from schemas.codec import encode


async def show(settings: Settings, customer_id: str, *, as_json: bool) -> int:
    from streams.bootstrap import redis_client, redis_store

    redis = redis_client(settings.redis)
    try:
        state = await redis_store(settings, redis).load(customer_id)
    finally:
        await redis.aclose()
    if state is None:
        print(f"no state for customer {customer_id}", file=sys.stderr)
        return 1
    summary = Engine(settings).summary(state)
    if as_json:
        sys.stdout.write(encode(summary).decode() + "\n")
        return 0
    console = Console()
    head = Table(title=f"customer {summary.customer_id}", show_header=False)
    head.add_row("risk score", str(summary.risk_score))
    head.add_row("risk tier", summary.risk_tier)
    head.add_row("loan class", summary.loan_class)
    head.add_row("max DPD", str(summary.max_dpd))
    head.add_row("total exposure", str(summary.total_exposure))
    head.add_row("open alerts", str(summary.open_alerts))
    head.add_row("last event", summary.last_event_at.isoformat() if summary.last_event_at else "-")
    console.print(head)
    loans = Table(title="loans")
    for col in ("loan", "status", "DPD", "overdue", "class"):
        loans.add_column(col)
    for loan in summary.loans.values():
        loans.add_row(
            loan.loan_id,
            loan.status or "-",
            str(loan.dpd),
            f"{loan.overdue_amount} {loan.currency}",
            loan.loan_class,
        )
    console.print(loans)
    features = summary.features
    parts = Table(title="why: score components")
    parts.add_column("component")
    parts.add_column("points", justify="right")
    for name, points in features["score_components"].items():
        parts.add_row(name, str(points))
    console.print(parts)
    facts = Table(title="features", show_header=False)
    for key in (
        "worst_on_time_ratio",
        "partial_payments",
        "failed_collections_30d",
        "months_since_delinquency",
        "income_source",
        "income_expected_at",
        "income_late",
        "income_dropped",
        "max_diverted_share",
        "own_exposure",
        "group_exposure",
        "contagion_sources",
        "tx_30d_debit_count",
        "tx_30d_debit_sum",
        "tx_30d_credit_sum",
        "cash_withdrawals_7d_count",
        "night_share_30d",
        "balance_trend_30d_per_day",
    ):
        if key in features:
            facts.add_row(key.replace("_", " "), str(features[key]))
    console.print(facts)
    return 0


async def top(settings: Settings, *, n: int, tier: str | None, as_json: bool) -> int:
    from streams.bootstrap import redis_client, redis_store

    redis = redis_client(settings.redis)
    store = redis_store(settings, redis)
    engine = Engine(settings)
    rows = []
    try:
        # Read a wider slice when filtering by tier, so N rows of that tier can be found.
        for _customer_id, state in await store.top(n if tier is None else max(n * 20, 200)):
            if tier is not None and state.risk_tier != tier:
                continue
            rows.append(engine.summary(state))
            if len(rows) >= n:
                break
    finally:
        await redis.aclose()
    if as_json:
        for row in rows:
            sys.stdout.write(encode(row).decode() + "\n")
        return 0
    table = Table(title=f"top {n} customers by risk score" + (f" (tier {tier})" if tier else ""))
    for col in ("customer", "score", "tier", "class", "max DPD", "exposure", "open alerts"):
        table.add_column(col)
    for s in rows:
        table.add_row(
            s.customer_id,
            str(s.risk_score),
            s.risk_tier,
            s.loan_class,
            str(s.max_dpd),
            str(s.total_exposure),
            str(s.open_alerts),
        )
    Console().print(table)
    return 0


__all__ = ["show", "top"]
