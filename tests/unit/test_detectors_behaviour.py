"""Each detector flags the scenario it exists for and stays quiet on the controls.

Streams are built here, as decoded events run through the real engine (the
detectors see the state as it was before each event, as in the worker).
"""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from config.settings import Settings
from detectors.base import Bound
from detectors.default_probability import DefaultProbability
from detectors.features import transaction_x
from detectors.population import PopulationAnomaly
from detectors.repayment import RepaymentDrift
from detectors.spending import SpendingDrift
from detectors.stack import Finding, Stack
from detectors.thresholds import Thresholds
from detectors.transaction import TransactionAnomaly
from risk.customer import CustomerState
from risk.engine import Engine
from schemas.events import (
    CustomerUpdated,
    InstallmentDue,
    RepaymentReceived,
    TransactionPosted,
)

START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
SHANGHAI = "Asia/Shanghai"


class Customer:
    """One customer's events through the engine and a stack; findings by event."""

    def __init__(self, stack: Stack, engine: Engine, cid: str, segment: str = "retail") -> None:
        self.stack, self.engine, self.cid = stack, engine, cid
        self.state = CustomerState(customer_id=cid)
        self.det: dict[str, dict] = {}
        self.n = 0
        self.send(
            CustomerUpdated,
            START - timedelta(days=1),
            segment=segment,
            timezone=SHANGHAI,
            monthly_income="20000.00",
            currency="CNY",
        )

    def send(self, model: Any, at: datetime, **fields: Any) -> dict[str, Finding]:
        self.n += 1
        ev = model(event_id=f"{self.cid}-{self.n}", customer_id=self.cid, occurred_at=at, **fields)
        findings = self.stack.observe(ev, self.state, self.det)
        self.engine.apply(self.state, ev)
        return {f.detector: f for f in findings}

    def pay(self, at: datetime, amount: float, **fields: Any) -> dict[str, Finding]:
        defaults = {
            "account_id": "acc-1",
            "currency": "CNY",
            "direction": "debit",
            "channel": "card",
            "country": "CN",
            "merchant_category": "5411",
        }
        return self.send(
            TransactionPosted, at, amount=Decimal(f"{amount:.2f}"), **{**defaults, **fields}
        )


def local(day: int, hour: float) -> datetime:
    """``day`` days after START at ``hour`` o'clock Shanghai time."""
    return START + timedelta(days=day, hours=hour - 8)


@pytest.fixture
def engine() -> Engine:
    return Engine(Settings())


def normal_day(rng: random.Random, c: Customer, day: int) -> dict[str, Finding]:
    return c.pay(
        local(day, rng.uniform(9, 20)),
        rng.uniform(35, 70),
        merchant_category=rng.choice(("5411", "5812", "5411", "5541")),
    )


# -- transaction anomaly ----------------------------------------------------------


def test_transaction_anomaly_flags_big_night_foreign_debit_not_the_next_normal_one(
    engine: Engine,
) -> None:
    rng = random.Random(1)
    stack = Stack(thresholds=Thresholds(q=0.99, min_count=40))
    c = Customer(stack, engine, "c-normal")
    normal_scores = []
    for day in range(60):
        normal_scores.append(normal_day(rng, c, day)["transaction_anomaly"].score)
    assert normal_scores[:20] == [0.0] * 20  # quiet during the warm-up
    odd = c.pay(local(60, 3), 5000, country="TH", merchant_category="7995")["transaction_anomaly"]
    after = normal_day(rng, c, 61)["transaction_anomaly"]
    assert odd.flagged
    assert odd.score > 3 * max(normal_scores)
    assert {"amount", "time", "country"} <= {k for k, v in odd.explanation.items() if v > 1}
    assert not after.flagged
    assert sum(f > 0 for f in normal_scores[20:]) > 0  # it did score the normal ones


def test_account_takeover_with_normal_amounts_at_abnormal_times_is_seen(engine: Engine) -> None:
    rng = random.Random(2)
    stack = Stack(thresholds=Thresholds(q=0.99, min_count=40))
    c = Customer(stack, engine, "c-ato")
    for day in range(60):
        normal_day(rng, c, day)
    takeover = [
        c.pay(
            local(60, 2 + 0.2 * i), rng.uniform(35, 70), channel="online", merchant_category="5999"
        )
        for i in range(3)
    ]
    scores = [f["transaction_anomaly"] for f in takeover]
    assert all(f.explanation["amount"] < 1.0 for f in scores)  # the amounts look normal
    assert all(f.flagged for f in scores)


def test_bounded_counts_keep_their_highest_count_exactly() -> None:
    """The maps' ``tp`` spares a max() per map per debit: it must always be the real max."""
    from detectors.transaction import count

    rng = random.Random(9)
    for size, cap in ((1, 5), (3, 4), (7, 200), (10, 20)):
        counts: dict[str, int] = {}
        top = 0
        for _ in range(3000):
            top = count(counts, rng.choice("abcdefghijklmn"[: rng.randint(1, 14)]), size, cap, top)
            assert top == max(counts.values(), default=0)
            assert len(counts) <= size and max(counts.values()) <= cap


def test_transaction_anomaly_is_robust_to_one_heavy_tail_amount() -> None:
    det = TransactionAnomaly(warm_up=5)
    b = Bound(det)
    rng = random.Random(3)
    base = {"channel": "card", "country": "CN", "mcc": "5411", "hour_of_week": 12.0}
    for _ in range(50):
        b.learn_one({**base, "amount": rng.uniform(40, 60)})
    before = (b.model["mu"], b.model["s"])
    b.learn_one({**base, "amount": 1_000_000.0})
    assert abs(b.model["mu"] - before[0]) < 0.1
    assert abs(b.model["s"] - before[1]) < 0.1


def test_gradual_spending_shift_is_seen_by_the_drift_detector_not_per_debit() -> None:
    shift = SpendingDrift()
    novelty = TransactionAnomaly()
    drift_model, novelty_model = shift.init(), novelty.init()
    rng = random.Random(4)
    base = {"direction": "debit", "channel": "card", "country": "CN", "hour_of_week": 12.0}
    steady = []
    for _ in range(80):
        x = {**base, "amount": rng.uniform(40, 60), "mcc": rng.choice(("5411", "5812"))}
        steady.append(shift.score_one(x, drift_model))
        shift.learn_one(x, drift_model)
        novelty.learn_one(x, novelty_model)
    drifting, novel = [], []
    for i in range(30):  # spending creeps from ~50 to ~400 over 30 debits
        x = {**base, "amount": 50 * 8 ** (i / 29) * rng.uniform(0.9, 1.1), "mcc": "5411"}
        drifting.append(shift.score_one(x, drift_model))
        novel.append(novelty.score_one(x, novelty_model))
        shift.learn_one(x, drift_model)
        novelty.learn_one(x, novelty_model)
    assert max(steady) < 3.0
    assert drifting[-1] > 15.0
    assert drifting[-1] > drifting[20] > drifting[10]
    # each step is small: the per-debit detector, which learns as it goes, sees far less
    assert drifting[-1] > 3 * max(novel)


def test_drift_detector_ignores_credits_cash_and_transfers() -> None:
    det = SpendingDrift(warm_up=2)
    m = det.init()
    for i in range(10):
        det.learn_one({"direction": "debit", "channel": "card", "amount": 50.0 + i}, m)
    before = dict(m)
    for x in (
        {"direction": "credit", "channel": "transfer", "amount": 90000.0},
        {"direction": "debit", "channel": "atm", "amount": 9000.0},
        {"direction": "debit", "channel": "transfer", "amount": 90000.0},
    ):
        assert det.score_one(x, m) == 0.0
        det.learn_one(x, m)
    assert m == before


# -- velocity and bursts ------------------------------------------------------------


def test_burst_of_atm_withdrawals_is_flagged_weekly_one_is_not(engine: Engine) -> None:
    rng = random.Random(5)
    stack = Stack(thresholds=Thresholds(q=0.99, min_count=40), explain_all=True)
    c = Customer(stack, engine, "c-burst")
    weekly = []
    for day in range(56):
        normal_day(rng, c, day)
        if day % 7 == 3:
            weekly.append(c.pay(local(day, 18.5), 500, channel="atm")["velocity_burst"])
    burst = [c.pay(local(57, 1 + i / 8), 2000, channel="atm")["velocity_burst"] for i in range(8)]
    assert all(f.explanation["cash"] == 0.0 for f in weekly)
    assert max(f.score for f in weekly) < 3.0
    assert not any(f.flagged for f in weekly)
    assert burst[0].score == 0.0  # one withdrawal is not a run
    assert all(f.flagged for f in burst[2:])
    assert burst[-1].explanation["cash"] > 10


# -- repayment drift ------------------------------------------------------------


def run_repayments(c: Customer, plan: list[tuple[int, float]]) -> list[float]:
    """Each (days relative to due, share of the instalment paid) in turn; drift scores."""
    scores = []
    for k, (offset, share) in enumerate(plan, start=1):
        due = date(2026, 1, 15) + timedelta(days=30 * (k - 1))
        announce = datetime(due.year, due.month, due.day, tzinfo=UTC) - timedelta(days=5)
        c.send(
            InstallmentDue,
            announce,
            loan_id="L1",
            installment_no=k,
            due_date=due,
            amount_due=Decimal("2000.00"),
            currency="CNY",
        )
        paid_at = datetime(due.year, due.month, due.day, 4, tzinfo=UTC) + timedelta(days=offset)
        found = c.send(
            RepaymentReceived,
            paid_at,
            loan_id="L1",
            amount=Decimal(f"{2000 * share:.2f}"),
            currency="CNY",
            installment_no=k,
        )
        scores.append(found["repayment_drift"].score)
    return scores


def test_repayments_drifting_later_and_smaller_are_seen_before_dpd_30(engine: Engine) -> None:
    stack = Stack()
    c = Customer(stack, engine, "c-drift")
    control = Customer(stack, engine, "c-steady")
    habit = [(-2, 1.0)] * 6
    drift = [(0, 1.0), (2, 0.9), (4, 0.8), (6, 0.7)]
    drifting = run_repayments(c, habit + drift)
    steady = run_repayments(control, habit + [(-2, 1.0)] * 4)
    assert max(steady) < 1.0
    assert max(drifting[:6]) < 1.0
    assert drifting[-1] > 8.0
    assert drifting[-1] > drifting[-2] > drifting[-3]
    max_dpd = max(ln.dpd_seen for ln in c.state.loans.values())
    assert max_dpd < 30


def test_one_late_payment_then_back_to_habit_decays() -> None:
    b = Bound(RepaymentDrift())
    for _ in range(6):
        b.learn_one({"repaid": 1.0, "days_late": -2.0, "paid_ratio": 1.0})
    b.learn_one({"repaid": 1.0, "days_late": 5.0, "paid_ratio": 1.0})
    spike = b.score_one({"repaid": 1.0, "days_late": -2.0, "paid_ratio": 1.0})
    for _ in range(4):
        b.learn_one({"repaid": 1.0, "days_late": -2.0, "paid_ratio": 1.0})
    assert b.score_one({"repaid": 1.0, "days_late": -2.0, "paid_ratio": 1.0}) < spike
    assert b.score_one({"repaid": 1.0, "days_late": -2.0, "paid_ratio": 1.0}) < 1.0


def test_failed_collections_add_up() -> None:
    b = Bound(RepaymentDrift())
    for _ in range(6):
        b.learn_one({"repaid": 1.0, "days_late": -1.0, "paid_ratio": 1.0})
    scores = []
    for _ in range(3):
        scores.append(b.score_one({"failed": 1.0}))
        b.learn_one({"failed": 1.0})
    assert scores[0] > 1.0
    assert scores[2] > scores[1] > scores[0]


# -- population anomaly ---------------------------------------------------------------


def test_population_anomaly_ranks_an_odd_vector_above_the_crowd(engine: Engine) -> None:
    rng = random.Random(6)
    det = PopulationAnomaly(seed=1)
    st = CustomerState(customer_id="c", timezone=SHANGHAI, segment="retail")
    st.monthly_income = Decimal("20000")
    crowd = []
    for i in range(3000):
        ev = TransactionPosted(
            event_id=f"p{i}",
            customer_id="c",
            occurred_at=local(i // 50, rng.uniform(9, 21)),
            account_id="a",
            amount=Decimal(f"{math.exp(rng.gauss(4, 0.6)):.2f}"),
            currency="CNY",
            direction="debit",
            channel=rng.choice(("card", "card", "card", "online")),
            country="CN",
            merchant_category="5411",
        )
        x = transaction_x(ev, st)
        crowd.append(det.score_one(x))
        det.learn_one(x)
    odd_ev = TransactionPosted(
        event_id="odd",
        customer_id="c",
        occurred_at=local(61, 3),
        account_id="a",
        amount=Decimal("90000.00"),
        currency="CNY",
        direction="debit",
        channel="transfer",
        counterparty_type="gambling",
        country="CN",
    )
    odd = det.score_one(transaction_x(odd_ev, st))
    q99 = sorted(crowd[1000:])[int(0.99 * 2000)]
    assert odd > q99


@pytest.mark.parametrize(("n_trees", "height", "window"), [(5, 6, 50), (3, 4, 20), (10, 8, 100)])
def test_lean_half_space_trees_score_exactly_as_rivers(
    n_trees: int, height: int, window: int
) -> None:
    """Same seed, same stream: the flat re-implementation gives river's scores to the bit,
    with missing features (the heavier branch) and observations taken back (refused)."""
    from river import anomaly

    from detectors.population import ORDER, HalfSpaceTrees

    rng = random.Random(n_trees * 100 + height)
    ref = anomaly.HalfSpaceTrees(
        n_trees=n_trees,
        height=height,
        window_size=window,
        limits={k: (0.0, 1.0) for k in ORDER},
        seed=17,
    )
    lean = HalfSpaceTrees(len(ORDER), n_trees=n_trees, height=height, window_size=window, seed=17)
    for i in range(1500):
        x = {k: rng.random() ** 3 for k in ORDER if i == 0 or rng.random() < 0.9}
        v = [x.get(k) for k in ORDER]
        expected = float(ref.score_one(x))
        assert lean.score(v) == expected
        if i == 0:
            ref.learn_one(x)
            lean.learn(v)
            continue
        assert lean.walk(v) == expected  # the one-pass walk scores identically ...
        if rng.random() < 0.1:
            lean.unwalk(v)  # ... and a refused observation leaves no trace
        else:
            lean.close()
            ref.learn_one(x)


# -- default probability ---------------------------------------------------------------


def synthetic_customer(rng: random.Random) -> tuple[list[dict[str, float]], bool]:
    """Monthly risk features of one customer; defaulters deteriorate before they default."""
    bad = rng.random() < 0.15
    months = []
    for m in range(4):
        trouble = bad and m >= 1
        months.append(
            {
                "max_dpd": (rng.uniform(0.05, 0.4) if trouble else 0.0),
                "failed_streak": (rng.randint(1, 3) / 3 if trouble else 0.0),
                "late_share": rng.uniform(0.3, 1) if trouble else rng.uniform(0, 0.2),
                "cash_share_30d": rng.uniform(0.2, 0.6) if bad else rng.uniform(0, 0.3),
                "debt_to_income": rng.uniform(0.1, 0.6),
            }
        )
    return months, bad


def auc(scores: list[float], labels: list[bool]) -> float:
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_default_model_learns_from_late_labels_and_reads_as_a_probability() -> None:
    rng = random.Random(7)
    model = DefaultProbability()
    month = 30 * 86400.0
    for _ in range(600):  # train: labels arrive at the end, through the snapshot book
        months, bad = synthetic_customer(rng)
        book = model.new_book()
        for m, x in enumerate(months):
            for snapshot, label in model.remember(x, m * month, book):
                model.feedback(snapshot, label)
        if bad:
            for snapshot, label in model.resolve(book, defaulted=True):
                model.feedback(snapshot, label)
        else:  # survive the horizon: the remaining snapshots mature as goods
            for snapshot, label in model.remember({}, 10 * month, book):
                model.feedback(snapshot, label)
    scores, labels = [], []
    for _ in range(400):
        months, bad = synthetic_customer(rng)
        scores.append(model.score_one(months[2]))
        labels.append(bad)
    assert auc(scores, labels) > 0.9
    assert all(0.0 < s < 1.0 for s in scores)
    # calibrated: the mean predicted probability is near the default rate
    assert abs(sum(scores) / len(scores) - sum(labels) / len(labels)) < 0.06


def test_default_label_teaches_the_features_as_they_were() -> None:
    model = DefaultProbability(min_labels=1)
    book = model.new_book()
    model.remember({"max_dpd": 0.0, "failed_streak": 0.3}, 0.0, book)
    model.remember({"max_dpd": 1.0}, 10 * 86400.0, book)  # same period: not a new snapshot
    pairs = model.resolve(book, defaulted=True)
    assert [(x["max_dpd"], x["failed_streak"], y) for x, y in pairs] == [(0.0, 0.3, True)]


def test_snapshot_book_is_bounded_and_matures_goods() -> None:
    model = DefaultProbability(horizon_days=120, snapshot_every_days=30, max_snapshots=5)
    book = model.new_book()
    matured = []
    for day in range(0, 400, 10):
        matured += model.remember({"max_dpd": day / 400}, day * 86400.0, book)
    assert len(book["s"]) <= 5
    assert matured
    assert all(label is False for _, label in matured)


def test_stack_feeds_outcome_default_to_the_model(engine: Engine) -> None:
    from schemas.events import OutcomeDefault

    stack = Stack()
    c = Customer(stack, engine, "c-pd")
    run_repayments(c, [(-1, 1.0), (5, 0.5)])
    assert c.det["default_probability"]["s"]
    c.send(OutcomeDefault, datetime(2026, 6, 1, tzinfo=UTC))
    assert c.det["default_probability"]["s"] == []
    assert stack.shared["default_probability"].positives >= 1  # type: ignore[attr-defined]


# -- thresholds ----------------------------------------------------------------------------


def test_threshold_refuses_to_learn_what_it_flags_but_keeps_tracking_scores() -> None:
    t = Thresholds(q=0.95, min_count=100)
    for i in range(200):
        t.observe("d", "retail", float(i % 20))
    before = t.threshold("d", "retail")
    d = t.observe("d", "retail", 100.0)
    assert d.flagged and not d.learn
    assert t.threshold("d", "retail") >= before  # type: ignore[operator]
    lenient = Thresholds(q=0.95, min_count=100, refuse_learning_when_flagged=False)
    for i in range(200):
        lenient.observe("d", "retail", float(i % 20))
    assert lenient.observe("d", "retail", 100.0).learn
