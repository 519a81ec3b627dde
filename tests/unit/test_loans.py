"""DPD arithmetic and payment allocation (oldest instalment first)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from risk.loans import HISTORY_LENGTH, Loan

D = Decimal


def schedule(n: int, amount: str = "100.00", start: date = date(2026, 1, 10)) -> Loan:
    loan = Loan(loan_id="L1", currency="CNY", principal=D("1000.00"))
    for i in range(n):
        loan.add_installment(i + 1, start + timedelta(days=30 * i), D(amount))
    return loan


def test_dpd_is_zero_on_the_due_date_and_one_the_day_after() -> None:
    loan = schedule(1)
    assert loan.dpd(date(2026, 1, 10)) == 0
    assert loan.dpd(date(2026, 1, 11)) == 1
    assert loan.dpd(date(2026, 2, 9)) == 30


def test_dpd_counts_from_the_oldest_unpaid_instalment() -> None:
    loan = schedule(3)
    as_of = date(2026, 3, 15)  # instalments due 01-10, 02-09, 03-11
    assert loan.dpd(as_of) == (as_of - date(2026, 1, 10)).days
    loan.pay(D("100.00"))
    assert loan.dpd(as_of) == (as_of - date(2026, 2, 9)).days
    loan.pay(D("200.00"))
    assert loan.dpd(as_of) == 0


def test_partial_payment_keeps_the_instalment_past_due() -> None:
    loan = schedule(1)
    loan.pay(D("99.99"))
    assert loan.dpd(date(2026, 1, 20)) == 10
    assert loan.overdue_amount(date(2026, 1, 20)) == D("0.01")


def test_payment_before_announcement_is_held_as_credit() -> None:
    loan = Loan(loan_id="L1", currency="CNY")
    loan.pay(D("150.00"))
    assert loan.credit == D("150.00")
    loan.add_installment(1, date(2026, 1, 10), D("100.00"))
    loan.add_installment(2, date(2026, 2, 10), D("100.00"))
    assert loan.credit == D("0")
    assert loan.dpd(date(2026, 2, 20)) == 10
    assert loan.overdue_amount(date(2026, 2, 20)) == D("50.00")


def test_overpayment_is_credit_for_the_next_instalment() -> None:
    loan = schedule(1)
    loan.pay(D("250.00"))
    assert loan.credit == D("150.00")
    loan.add_installment(2, date(2026, 2, 10), D("100.00"))
    assert loan.credit == D("50.00")
    assert loan.dpd(date(2026, 3, 1)) == 0


def test_closed_loan_has_no_arrears() -> None:
    loan = schedule(2)
    loan.status = "closed"
    assert loan.dpd(date(2026, 6, 1)) == 0
    assert loan.overdue_amount(date(2026, 6, 1)) == D("0")


def test_settled_instalments_are_folded_so_state_stays_bounded() -> None:
    loan = schedule(40)
    loan.pay(D("4000.00"))
    assert loan.installments == []
    assert loan.settled_count == 40
    assert len(loan.history) == HISTORY_LENGTH
    assert loan.dpd(date(2030, 1, 1)) == 0


def test_round_trip_through_dict() -> None:
    loan = schedule(3)
    loan.pay(D("120.50"))
    loan.failed_streak = 2
    again = Loan.from_dict(loan.to_dict())
    assert again == loan


amounts = st.decimals(min_value=D("0.01"), max_value=D("500.00"), places=2)


@given(dues=st.lists(amounts, min_size=1, max_size=8), pays=st.lists(amounts, max_size=8))
def test_payment_order_does_not_matter_for_arrears(
    dues: list[Decimal], pays: list[Decimal]
) -> None:
    """Allocation is oldest-first, so only the total paid decides DPD and overdue."""
    as_of = date(2027, 1, 1)
    a = Loan(loan_id="L", currency="CNY")
    b = Loan(loan_id="L", currency="CNY")
    for i, amount in enumerate(dues):
        a.add_installment(i + 1, date(2026, 1, 1) + timedelta(days=31 * i), amount)
        b.add_installment(i + 1, date(2026, 1, 1) + timedelta(days=31 * i), amount)
    for p in pays:
        a.pay(p)
    for p in reversed(pays):
        b.pay(p)
    assert a.dpd(as_of) == b.dpd(as_of)
    assert a.overdue_amount(as_of) == b.overdue_amount(as_of)
    total_due = sum(dues, start=D(0))
    total_paid = sum(pays, start=D(0))
    assert a.overdue_amount(as_of) == max(total_due - total_paid, D(0))
    assert a.credit == max(total_paid - total_due, D(0))


@given(
    dues=st.lists(amounts, min_size=1, max_size=6),
    paid=amounts,
    days=st.integers(min_value=0, max_value=400),
)
def test_dpd_never_negative_and_grows_one_per_day(
    dues: list[Decimal], paid: Decimal, days: int
) -> None:
    loan = Loan(loan_id="L", currency="CNY")
    for i, amount in enumerate(dues):
        loan.add_installment(i + 1, date(2026, 1, 1) + timedelta(days=30 * i), amount)
    loan.pay(paid)
    d0 = date(2026, 8, 1) + timedelta(days=days)
    today, tomorrow = loan.dpd(d0), loan.dpd(d0 + timedelta(days=1))
    assert today >= 0
    assert tomorrow in (today + 1, today) if today == 0 else tomorrow == today + 1


def test_punctuality_history_partial_payments_and_on_time_ratio() -> None:
    loan = schedule(4)  # due 01-10, 02-09, 03-11, 04-10
    loan.pay(D("100.00"), on=date(2026, 1, 9))  # on time
    loan.pay(D("40.00"), on=date(2026, 2, 12))  # partial, late
    loan.pay(D("60.00"), on=date(2026, 2, 15))  # settles #2 late
    assert loan.history == "OL"
    assert loan.partial_payments == 1
    assert loan.on_time_ratio(date(2026, 3, 20)) == 1 / 3  # #3 overdue counts as late
    assert loan.on_time_ratio(date(2026, 3, 1)) == 1 / 2


def test_outstanding_principal_amortises_with_each_settled_instalment() -> None:
    loan = Loan(loan_id="L", currency="CNY", principal=D("1200.00"), outstanding=D("1200.00"),
                annual_rate=D("0.12"))
    loan.add_installment(1, date(2026, 1, 10), D("106.62"))
    loan.pay(D("106.62"), on=date(2026, 1, 10))
    # interest 1200 * 1% = 12.00, principal part 94.62
    assert loan.outstanding_principal == D("1105.38")
    loan.status = "written_off"
    assert loan.outstanding_principal == D("0")


def test_restructured_loan_counts_on_time_instalments_towards_cure() -> None:
    loan = schedule(3)
    loan.restructured = True
    loan.pay(D("100.00"), on=date(2026, 1, 1))
    loan.pay(D("100.00"), on=date(2026, 2, 1))
    assert loan.cure_streak == 2
    loan.pay(D("100.00"), on=date(2026, 4, 1))  # late
    assert loan.cure_streak == 0


def test_failed_collections_are_kept_for_thirty_days() -> None:
    loan = schedule(1)
    day = 86400
    for t in (0, 10 * day, 35 * day, 36 * day):
        loan.record_failure(t)
    assert loan.failed_within(30, 36 * day) == 3
    assert loan.failed_within(30, 41 * day) == 2
    assert loan.failed_at == [10 * day, 35 * day, 36 * day]


def test_an_older_instalment_announced_late_is_paid_first() -> None:
    loan = Loan(loan_id="L", currency="CNY")
    loan.add_installment(2, date(2026, 2, 10), D("100.00"))
    loan.pay(D("60.00"), on=date(2026, 2, 1))
    loan.add_installment(1, date(2026, 1, 10), D("100.00"))
    # the 60 paid now sits on the older instalment, which is the one ageing
    assert loan.dpd(date(2026, 2, 20)) == 41
    assert loan.overdue_amount(date(2026, 2, 20)) == D("140.00")
    assert [i.paid for i in loan.installments] == [D("60.00"), D("0")]
