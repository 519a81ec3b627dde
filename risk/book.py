"""Counters of the loan book: customers with an open loan by risk tier, open loans by class.

Operations want these as gauges, and a worker cannot count them by reading
every state (there are millions, and each is compressed). So every commit
moves a small hash of counters by the difference between the customer's
*entry* before the step and after it, in the same atomic write as the state
(:mod:`risk.redis_store`): a step refused because the state moved on moves no
counter, and a redelivered event is never applied, so it is never counted
twice. The processor takes the entry of the state it loaded, before the
engine changes that state in place.

Only open loans count, and a customer only while they have one: a state
without an open loan gets a TTL and can expire without any write, and its
entry is empty, so an expiry never leaves a count behind.

>>> from risk.customer import CustomerState
>>> from risk.loans import Loan
>>> st = CustomerState(customer_id="C1", risk_tier="medium")
>>> book_entry(st)  # no open loan: not in the book
{}
>>> st.loans = {"L1": Loan("L1", "CNY", loan_class="normal"),
...             "L2": Loan("L2", "CNY", loan_class="substandard"),
...             "L3": Loan("L3", "CNY", loan_class="normal", status="closed")}
>>> book_entry(st)
{'customers:medium': 1, 'loans:normal': 1, 'loans:substandard': 1}
>>> delta = book_delta({"customers:low": 1, "loans:normal": 2}, book_entry(st))
>>> delta
{'customers:low': -1, 'customers:medium': 1, 'loans:normal': -1, 'loans:substandard': 1}
>>> encode_delta(delta)
b'customers:low=-1,customers:medium=1,loans:normal=-1,loans:substandard=1'
>>> split_book({"customers:medium": 3, "loans:normal": 5, "loans:loss": 0})
({'medium': 3}, {'normal': 5, 'loss': 0})
"""

from __future__ import annotations

from collections.abc import Mapping

from risk.customer import CustomerState

Book = dict[str, int]
"""Counter name (``customers:{tier}`` or ``loans:{class}``) to count."""

CUSTOMERS = "customers:"
LOANS = "loans:"
TIERS: tuple[str, ...] = ("premium", "low", "medium", "high")
"""Every tier :func:`risk.score.tier_for` gives, lowest risk first."""


def book_entry(state: CustomerState | None) -> Book:
    """What one customer adds to the book's counters."""
    if state is None:
        return {}
    entry: Book = {}
    for loan in state.loans.values():
        if loan.status == "open":
            name = LOANS + loan.loan_class
            entry[name] = entry.get(name, 0) + 1
    if entry:
        entry[CUSTOMERS + state.risk_tier] = 1
    return dict(sorted(entry.items()))


def book_delta(before: Mapping[str, int], after: Mapping[str, int]) -> Book:
    """How the counters move when an entry changes from ``before`` to ``after`` (no zeros)."""
    delta: Book = {}
    for name in sorted(before.keys() | after.keys()):
        moved = after.get(name, 0) - before.get(name, 0)
        if moved:
            delta[name] = moved
    return delta


def encode_delta(delta: Mapping[str, int]) -> bytes:
    """``name=n`` pairs joined by commas: the form the commit scripts parse."""
    return b",".join(b"%s=%d" % (name.encode(), n) for name, n in delta.items())


def split_book(counters: Mapping[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """The stored counters as (customers by tier, loans by class)."""
    tiers = {k[len(CUSTOMERS) :]: n for k, n in counters.items() if k.startswith(CUSTOMERS)}
    classes = {k[len(LOANS) :]: n for k, n in counters.items() if k.startswith(LOANS)}
    return tiers, classes
