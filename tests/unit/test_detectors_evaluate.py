"""``creditwatch evaluate``: labels from the stream and the truth, metrics, the command."""

from __future__ import annotations

import argparse
import contextlib
import doctest
import io
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from config.settings import Settings
from creditwatch import evaluate
from detectors.stack import Finding, Stack
from risk.engine import Engine
from schemas.events import OutcomeDefault, OutcomeFraudConfirmed, TransactionPosted

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def test_module_examples_run() -> None:
    """creditwatch/ is outside the doctest paths: its examples are run here."""
    result = doctest.testmod(evaluate)
    assert result.attempted > 0 and result.failed == 0


def test_roc_auc_matches_the_pairwise_definition() -> None:
    rng = random.Random(1)
    for _ in range(20):
        scores = [round(rng.random(), 1) for _ in range(40)]  # many ties
        labels = [rng.random() < 0.3 for _ in range(40)]
        pos = [s for s, y in zip(scores, labels, strict=True) if y]
        neg = [s for s, y in zip(scores, labels, strict=True) if not y]
        pairs = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
        assert evaluate.roc_auc(scores, labels) == pytest.approx(pairs)
    assert evaluate.roc_auc([1.0, 2.0], [True, True]) is None


def tx(i: int, customer: str, days: float) -> TransactionPosted:
    return TransactionPosted(
        event_id=f"t{i}",
        customer_id=customer,
        occurred_at=T0 + timedelta(days=days),
        account_id="a",
        amount="10.00",
        currency="CNY",
        direction="debit",
        channel="card",
    )


def test_labels_from_outcomes_truth_and_censoring() -> None:
    events = [
        tx(1, "good", 0),
        tx(2, "bad", 0),
        tx(3, "bad", 100),
        tx(4, "bad", 130),
        tx(5, "victim", 10),
        tx(6, "victim", 11),
        tx(7, "drifter", 20),
        tx(8, "drifter", 40),
        tx(9, "late_failer", 5),
        OutcomeDefault(event_id="d1", customer_id="bad", occurred_at=T0 + timedelta(days=120)),
        OutcomeFraudConfirmed(
            event_id="f1",
            customer_id="victim",
            occurred_at=T0 + timedelta(days=15),
            transaction_event_id="t6",
        ),
    ]
    truths = [
        ("book", {"good": "on_time", "bad": "failing_then_default", "late_failer": "written_off"}),
        (
            "spending_drift",
            {
                "subject": "drifter",
                "drift_start_at": (T0 + timedelta(days=30)).isoformat(),
                "drift_full_at": (T0 + timedelta(days=60)).isoformat(),
                "drift_event_ids": ["t8"],
            },
        ),
    ]
    labels = evaluate.labels_from(events, truths, horizon_days=30)
    by = {e.event_id: e for e in events}
    assert {c.kind: c.customer_id for c in labels.cases} == {
        "fraud": "victim",
        "default": "bad",
        "drift": "drifter",
    }
    assert [labels.label("default", by[i]) for i in ("t1", "t2", "t3", "t4")] == [
        False,
        False,
        True,
        None,  # before the horizon, inside it, after the default
    ]
    assert labels.label("default", by["t9"]) is None  # failing, outcome beyond the stream
    assert [labels.label("fraud", by[i]) for i in ("t5", "t6")] == [False, True]
    assert [labels.label("drift", by[i]) for i in ("t7", "t8")] == [False, True]
    fraud = next(c for c in labels.cases if c.kind == "fraud")
    assert fraud.start == by["t6"].occurred_at and fraud.labelled_at == T0 + timedelta(days=15)


def test_score_stream_scores_before_applying_and_routes_feedback() -> None:
    class Spy(Stack):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[tuple[str, int]] = []
            self.fed: list[str] = []

        def observe(self, event: Any, st: Any, det: dict) -> list[Finding]:
            self.seen.append((event.event_id, st.tx.seen))  # transactions applied so far
            return super().observe(event, st, det)

        def feedback(self, event: Any, det: dict) -> list:
            self.fed.append(event.event_id)
            return super().feedback(event, det)

    events = [tx(1, "c", 0), tx(2, "c", 1), tx(3, "c", 2)]
    confirm = OutcomeFraudConfirmed(
        event_id="f",
        customer_id="c",
        occurred_at=T0 + timedelta(days=3),
        transaction_event_id="t3",
    )
    spy = Spy()
    out = list(evaluate.score_stream([*events, confirm], Engine(Settings()), spy))
    assert [e.event_id for e, _ in out] == ["t1", "t2", "t3", "f"]
    assert spy.seen == [("t1", 0), ("t2", 1), ("t3", 2), ("f", 3)]
    assert spy.fed == ["f"]
    assert [f.detector for f in out[0][1]] == [
        "transaction_anomaly",
        "spending_drift",
        "velocity_burst",
        "population_anomaly",
    ]


def test_ordered_keeps_ties_in_the_order_given() -> None:
    a, b, c = tx(1, "x", 1), tx(2, "y", 0), tx(3, "z", 1)
    assert [e.event_id for e in evaluate.ordered([a, b, c])] == ["t2", "t1", "t3"]


@pytest.fixture(scope="module")
def small_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    parser = argparse.ArgumentParser()
    evaluate.add_parser(parser.add_subparsers())
    out = tmp_path_factory.mktemp("eval") / "report.json"
    args = parser.parse_args(
        ["evaluate", "--customers", "60", "--months", "5", "--copies", "2", "--out", str(out)]
    )
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert args.func(args) == 0
    return orjson.loads(Path(out).read_bytes()), printed.getvalue()


def test_the_command_prints_the_table_and_writes_the_report(
    small_report: tuple[dict[str, Any], str],
) -> None:
    report, printed = small_report
    assert report["stream"]["copies"] == 2 and report["stream"]["book_customers"] == 60
    assert report["cases"]["fraud"] == 2 and report["cases"]["drift"] == 2
    rows = {(r["detector"], r["label"]): r for r in report["rows"]}
    for row in rows.values():
        assert 0 < row["positives"] <= row["events"]
        assert row["auc"] is None or 0.0 <= row["auc"] <= 1.0
        assert 0.0 <= row["alert_rate"] <= 1.0
        assert row["cases_detected"] <= row["cases"]
        assert row["detector"] in printed
    # the detectors do what they exist for, even on a small stream
    assert rows[("transaction_anomaly", "fraud")]["auc"] > 0.9
    assert rows[("spending_drift", "drift")]["auc"] > 0.8
    assert rows[("spending_drift", "drift")]["cases_detected"] == 2
    assert ("default_probability", "fraud") not in rows  # it never scores a transaction


def test_lead_time_is_from_the_first_flag_in_the_case_window() -> None:
    case = evaluate.Case("fraud", "c", start=T0, labelled_at=T0 + timedelta(days=4))
    labels = evaluate.Labels([case], timedelta(days=120))
    scored = evaluate._Scored(
        scores=[9.0, 9.0, 9.0],
        flagged=[True, True, True],
        events=[tx(1, "c", -1), tx(2, "c", 1), tx(3, "c", 2)],
    )
    assert evaluate._lead_times("d", "fraud", scored, labels) == [3.0]
