"""Feedback reaches the detector that flagged: the flag book and what each verdict does."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from detectors import flags
from detectors.population import PopulationAnomaly
from detectors.repayment import RepaymentDrift
from detectors.spending import SpendingDrift
from detectors.stack import PD, Stack
from detectors.thresholds import Thresholds
from detectors.transaction import TransactionAnomaly
from detectors.velocity import VelocityBurst
from risk.customer import CustomerState
from schemas.events import AlertFeedback, OutcomeFraudConfirmed, TransactionPosted

START = datetime(2026, 1, 5, 2, tzinfo=UTC)  # 10:00 in Shanghai


def debit(i: int, at: datetime, **fields: Any) -> TransactionPosted:
    base: dict[str, Any] = {
        "account_id": "a1",
        "amount": Decimal("50.00"),
        "currency": "CNY",
        "direction": "debit",
        "channel": "card",
        "country": "CN",
        "merchant_category": "5411",
    }
    return TransactionPosted(
        event_id=f"e{i}", customer_id="c1", occurred_at=at, **{**base, **fields}
    )


def habit(stack: Stack, st: CustomerState, det: dict, days: int = 60) -> int:
    rng = random.Random(3)
    for i in range(days):
        ev = debit(
            i,
            START + timedelta(days=i, hours=rng.uniform(0, 8)),
            amount=Decimal(f"{rng.uniform(35, 70):.2f}"),
        )
        stack.observe(ev, st, det)
    return days


def takeover(i: int, day: int) -> TransactionPosted:
    return debit(
        i, START + timedelta(days=day, hours=16.5), channel="online", merchant_category="5816"
    )


def verdict(i: int, alert_id: str, kind: str) -> AlertFeedback:
    return AlertFeedback(
        event_id=f"fb{i}",
        customer_id="c1",
        occurred_at=START + timedelta(days=90),
        alert_id=alert_id,
        verdict=kind,
    )


# -- the book ---------------------------------------------------------------------------


def test_book_is_bounded_json_and_keeps_only_what_feedback_reads() -> None:
    det: dict[str, Any] = {}
    x = {
        "amount": 1.23456789,
        "channel": "card",
        "ts": 5.0,
        "hour_of_week": float("nan"),
        "log_amount": 0.5,
        "mcc": "5411",
        "direction": "debit",
    }
    for i in range(12):
        flags.remember(det, f"e{i}", "transaction_anomaly", x, keep=5)
    book = det[flags.KEY]
    assert [entry[0] for entry in book] == ["e7", "e8", "e9", "e10", "e11"]
    assert book[-1][3] == {"amount": 1.2346, "channel": "card", "mcc": "5411", "direction": "debit"}
    assert orjson.loads(orjson.dumps(det)) == det
    assert len(orjson.dumps(det)) < 600
    flags.remember(det, "p1", "population_anomaly", {"segment": "sme", "night": 1.0, "x": 2})
    assert flags.find(det, event_id="p1")[0].x == {"segment": "sme", "night": 1.0}
    flags.remember(det, "z", "transaction_anomaly", x, keep=0)
    assert not flags.find(det, event_id="z")


def test_alert_ids_attach_to_their_flag_and_foreign_entries_are_ignored() -> None:
    det: dict[str, Any] = {flags.KEY: [["old", "layout"]]}
    flags.remember(det, "e1", "transaction_anomaly", {"amount": 5.0})
    flags.remember(det, "e1", "population_anomaly", {"night": 1.0})
    assert flags.attach_alert(det, "e1", "population_anomaly", "A1")
    assert not flags.attach_alert(det, "e9", "population_anomaly", "A2")
    assert [f.detector for f in flags.find(det, alert_id="A1")] == ["population_anomaly"]
    assert [f.detector for f in flags.find(det, event_id="e1")] == [
        "transaction_anomaly",
        "population_anomaly",
    ]
    flags.forget(det, flags.find(det, alert_id="A1")[0])
    assert [f.detector for f in flags.find(det, event_id="e1")] == ["transaction_anomaly"]


def test_observe_remembers_what_it_flags_with_the_features_it_saw() -> None:
    stack = Stack(thresholds=Thresholds(q=0.9, min_count=20), flags_kept=3)
    st = CustomerState(customer_id="c1", timezone="Asia/Shanghai", segment="retail")
    det: dict[str, Any] = {}
    n = habit(stack, st, det)
    findings = stack.observe(takeover(n, n), st, det)
    flagged = [f.detector for f in findings if f.flagged]
    assert "transaction_anomaly" in flagged
    kept = flags.find(det, event_id=f"e{n}")
    assert {f.detector for f in kept} == set(flagged)
    tx = next(f for f in kept if f.detector == "transaction_anomaly")
    assert tx.x["channel"] == "online" and tx.x["mcc"] == "5816" and tx.alert_id is None
    for i in range(10):  # bounded, whatever happens
        stack.observe(takeover(n + 1 + i, n + 1 + i), st, det)
    assert len(det[flags.KEY]) <= 3


# -- verdicts ---------------------------------------------------------------------------


def flagged_takeover(flags_kept: int = 8) -> tuple[Stack, CustomerState, dict, int]:
    stack = Stack(thresholds=Thresholds(q=0.9, min_count=20), flags_kept=flags_kept)
    st = CustomerState(customer_id="c1", timezone="Asia/Shanghai", segment="retail")
    det: dict[str, Any] = {}
    n = habit(stack, st, det)
    findings = {f.detector: f for f in stack.observe(takeover(n, n), st, det)}
    assert findings["transaction_anomaly"].flagged
    flags.attach_alert(det, f"e{n}", "transaction_anomaly", "ALERT-1")
    return stack, st, det, n


def test_false_positive_teaches_the_customer_model_true_positive_does_not() -> None:
    stack, _, det, _ = flagged_takeover()
    model = det["transaction_anomaly"]
    before = orjson.dumps(model)
    x_next = {
        "direction": "debit",
        "amount": 50.0,
        "channel": "online",
        "mcc": "5816",
        "hour_of_week": 16.5,
        "country": "CN",
    }
    det_tx: TransactionAnomaly = stack.customer["transaction_anomaly"]  # type: ignore[assignment]
    score_before = det_tx.score_one(x_next, model)

    reached = stack.feedback(verdict(1, "ALERT-1", "true_positive"), det)
    assert [f.detector for f in reached] == ["transaction_anomaly"]
    assert orjson.dumps(model) == before  # a real takeover stays out of the habit
    assert stack.feedback(verdict(2, "ALERT-1", "false_positive"), det) == []  # taught once

    stack2, _, det2, _ = flagged_takeover()
    model2 = det2["transaction_anomaly"]
    stack2.feedback(verdict(3, "ALERT-1", "false_positive"), det2)
    assert model2["n"] == model["n"] + 1
    assert "online" in model2["ch"] and "5816" in model2["mc"]
    assert det_tx.score_one(x_next, model2) < score_before


def test_fraud_confirmation_reaches_every_detector_that_flagged_the_transaction() -> None:
    stack, _, det, n = flagged_takeover()
    flagged = {f.detector for f in flags.find(det, event_id=f"e{n}")}
    confirmed = OutcomeFraudConfirmed(
        event_id="f1",
        customer_id="c1",
        occurred_at=START + timedelta(days=n + 3),
        transaction_event_id=f"e{n}",
    )
    reached = stack.feedback(confirmed, det)
    assert {f.detector for f in reached} == flagged
    assert not flags.find(det, event_id=f"e{n}")
    unflagged = confirmed.model_copy(update={"event_id": "f2", "transaction_event_id": "e3"})
    assert stack.feedback(unflagged, det) == []  # missed: nothing to learn back from


def test_other_events_and_unknown_alerts_change_nothing() -> None:
    stack, _, det, _ = flagged_takeover()
    before = orjson.dumps(det)
    assert stack.feedback(verdict(1, "NOT-OURS", "false_positive"), det) == []
    assert stack.feedback(debit(99, START), det) == []
    assert orjson.dumps(det) == before


def test_an_opinion_on_a_default_warning_is_not_a_default_label() -> None:
    stack = Stack()
    pd_model = stack.shared[PD]
    stack.verdict(PD, {}, {}, True)
    stack.verdict(PD, {"max_dpd": 1.0}, {}, False)
    assert pd_model.labels == 0  # type: ignore[attr-defined]


def test_each_detectors_false_positive() -> None:
    # velocity: the run joins the norm, so the same run looks less like one
    vel = VelocityBurst()
    m = vel.init()
    for i in range(8):
        vel.learn_one({"ts": i * 7 * 86400.0, "debit": 1.0, "cash": 1.0}, m)
    burst = [{"ts": 8 * 7 * 86400.0 + 60.0 * k, "debit": 1.0, "cash": 1.0} for k in range(8)]
    for x in burst:
        vel.observe_flagged(x, m)
    score = vel.score_one(burst[-1], m)
    vel.feedback(burst[-1], m, True)
    assert vel.score_one(burst[-1], m) == score
    vel.feedback(burst[-1], m, False)
    assert vel.score_one(burst[-1], m) < score

    # spending drift and repayment drift: the CUSUMs start afresh
    sd = SpendingDrift(warm_up=5)
    m = sd.init()
    for _ in range(20):
        sd.learn_one({"direction": "debit", "channel": "card", "amount": 50.0, "mcc": "5411"}, m)
    for _ in range(10):
        sd.observe_flagged(
            {"direction": "debit", "channel": "card", "amount": 400.0, "mcc": "5944"}, m
        )
    drifted = {"direction": "debit", "channel": "card", "amount": 400.0, "mcc": "5944"}
    assert sd.score_one(drifted, m) > 10
    sd.feedback(drifted, m, False)
    assert m["c"] == [0.0, 0.0] and sd.score_one(drifted, m) < 3

    rd = RepaymentDrift()
    m = rd.init()
    m["c"] = [5.0, 2.0, 1.0]
    rd.feedback({}, m, True)
    assert m["c"] == [5.0, 2.0, 1.0]
    rd.feedback({}, m, False)
    assert m["c"] == [0.0, 0.0, 0.0]

    # population: the vector the threshold kept out is learned after all
    pop = PopulationAnomaly(seed=1, window_size=20)
    for i in range(60):
        pop.learn_one({"segment": "retail", "log_amount": 0.3 + 0.001 * (i % 5)})
    tree = pop.models["retail"]
    before = list(tree.l_mass), tree.window
    pop.feedback({"segment": "retail", "log_amount": 0.9}, True)
    pop.feedback({}, False)
    assert (list(tree.l_mass), tree.window) == before
    pop.feedback({"segment": "retail", "log_amount": 0.9}, False)
    assert tree.window == (before[1] + 1) % 20
    assert math.isfinite(pop.score_one({"segment": "retail", "log_amount": 0.9}))
