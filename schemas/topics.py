"""Topic names of the product contract (SPEC.md), and which event types each carries.

The names are fixed by the contract; deployments may rename them through
configuration (``CREDITWATCH_TOPICS``), which is why code refers to the
logical name (the dictionary key) rather than the literal topic.
"""

from __future__ import annotations

TRANSACTIONS = "transactions"
REPAYMENTS = "repayments"
LOANS = "loans"
CUSTOMERS = "customers"
OUTCOMES = "outcomes"
RULES = "rules"
RISK_ALERTS = "risk_alerts"
COLLECTIONS_TASKS = "collections_tasks"
RISK_STATE = "risk_state"
DEAD_LETTER = "dead_letter"
RELATED = "related"

DEFAULT_TOPICS: dict[str, str] = {
    TRANSACTIONS: "credit.transactions.v1",
    REPAYMENTS: "credit.repayments.v1",
    LOANS: "credit.loans.v1",
    CUSTOMERS: "credit.customers.v1",
    OUTCOMES: "credit.outcomes.v1",
    RULES: "credit.rules.v1",
    RISK_ALERTS: "credit.risk-alerts.v1",
    COLLECTIONS_TASKS: "credit.collections-tasks.v1",
    RISK_STATE: "credit.risk-state.v1",
    DEAD_LETTER: "credit.dead-letter.v1",
    RELATED: "credit.related-party.v1",
}

INPUT_TOPICS: tuple[str, ...] = (TRANSACTIONS, REPAYMENTS, LOANS, CUSTOMERS, OUTCOMES)
# The service's own: announcements between related customers (schemas/internal.py).
INTERNAL_TOPICS: tuple[str, ...] = (RELATED,)
OUTPUT_TOPICS: tuple[str, ...] = (RISK_ALERTS, COLLECTIONS_TASKS, RISK_STATE, DEAD_LETTER)
COMPACTED_TOPICS: frozenset[str] = frozenset({RULES, RISK_STATE})

EVENT_TYPES_BY_TOPIC: dict[str, tuple[str, ...]] = {
    TRANSACTIONS: ("transaction.posted",),
    REPAYMENTS: ("installment.due", "repayment.received", "repayment.failed"),
    LOANS: ("loan.opened", "loan.restructured", "loan.closed", "loan.written_off"),
    CUSTOMERS: ("customer.updated", "customer.linked", "customer.unlinked"),
    OUTCOMES: ("outcome.default", "outcome.fraud_confirmed", "alert.feedback"),
}

TOPIC_BY_EVENT_TYPE: dict[str, str] = {
    event_type: topic for topic, types in EVENT_TYPES_BY_TOPIC.items() for event_type in types
}
