"""Each simulated scenario, replayed through the real processing, raises what it should.

The simulator's ground truth says who should be warned and when; the controls
of the same simulation must stay quiet.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from config.settings import Settings
from creditwatch.replay import run_replay
from creditwatch.simulate.scenarios import build_scenario


def replay(name: str, tmp: Path, **params: Any) -> tuple[dict[str, Any], list[dict], dict]:
    scenario = build_scenario(name, **params)
    events = tmp / f"{name}.jsonl"
    events.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in scenario.events))
    out = tmp / name
    asyncio.run(run_replay(events, out, Settings()))
    alerts = [orjson.loads(x) for x in (out / "alerts.jsonl").read_bytes().splitlines()]
    states = {
        s["customer_id"]: s
        for s in map(orjson.loads, (out / "state.jsonl").read_bytes().splitlines())
    }
    return scenario.truth, alerts, states


def codes_of(alerts: list[dict], customer: str) -> list[str]:
    return [a["code"] for a in alerts if a["customer_id"] == customer]


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path


def test_salary_stop(tmp: Path) -> None:
    truth, alerts, states = replay("salary_stop", tmp)
    late = [a for a in alerts if a["code"] == "salary_missing"]
    assert [a["customer_id"] for a in late] == [truth["subject"]]
    expected = datetime.fromisoformat(truth["expected_at"])
    fired = datetime.fromisoformat(late[0]["triggered_at"])
    grace = timedelta(days=Settings().features.salary_grace_days)
    assert abs(fired - (expected + grace)) < timedelta(days=2)
    assert states[truth["subject"]]["features"]["income_late"] is True
    for control in truth["controls"]:
        assert "salary_missing" not in codes_of(alerts, control)


def test_salary_cut(tmp: Path) -> None:
    truth, alerts, _ = replay("salary_cut", tmp)
    drops = [a for a in alerts if a["code"] == "salary_cut"]
    assert [a["evidence_event_ids"] for a in drops] == [[truth["cut_event_id"]]]
    for control in truth["controls"]:
        assert not [c for c in codes_of(alerts, control) if c.startswith("salary")]


def test_learned_cadence_income(tmp: Path) -> None:
    truth, alerts, states = replay("learned_cadence_income", tmp)
    subjects = [case["customer_id"] for case in truth["cases"]]
    assert sorted(a["customer_id"] for a in alerts if a["code"] == "salary_missing") == sorted(
        subjects
    )
    for s in subjects:
        assert states[s]["features"]["income_source"] == "learned cadence"
    for control in truth["controls"]:
        assert "salary_missing" not in codes_of(alerts, control)


def test_fund_diversion(tmp: Path) -> None:
    truth, alerts, _ = replay("fund_diversion", tmp)
    fired = {a["loan_id"]: a for a in alerts if a["code"] == "loan_fund_diversion"}
    assert set(fired) == {case["loan_id"] for case in truth["cases"]}
    for case in truth["cases"]:
        assert fired[case["loan_id"]]["evidence_event_ids"][-1] in case["diversion_event_ids"]
    for control in truth["controls"]:
        assert "loan_fund_diversion" not in codes_of(alerts, control)


def test_guarantor_contagion(tmp: Path) -> None:
    truth, alerts, states = replay("guarantor_contagion", tmp)
    contagion = [a for a in alerts if a["code"] == "related_party_default"]
    assert sorted(a["customer_id"] for a in contagion) == sorted(truth["affected"])
    assert {a["explanation"]["source_customer_id"] for a in contagion} == {truth["source"]}
    assert all(a["source"] == "contagion" for a in contagion)
    for customer in truth["affected"]:
        assert states[customer]["features"]["contagion_sources"] == [truth["source"]]
    for control in truth["unaffected"]:
        assert "related_party_default" not in codes_of(alerts, control)


def test_large_exposure(tmp: Path) -> None:
    truth, alerts, states = replay("large_exposure", tmp)
    breach = [a for a in alerts if a["code"] == "large_exposure_breach"]
    assert sorted(a["customer_id"] for a in breach) == sorted(truth["group"])
    limit = Settings().features.large_exposure_limit
    for customer in truth["group"]:
        assert float(states[customer]["features"]["group_exposure"]) >= float(limit)
    for control in truth["controls"]:
        assert "large_exposure_breach" not in codes_of(alerts, control)


def test_restructure_and_cure(tmp: Path) -> None:
    truth, alerts, states = replay("restructure_and_cure", tmp)
    subject, loan = truth["subject"], truth["loan_id"]
    moves = [
        (a["explanation"]["from"], a["explanation"]["to"], a["explanation"]["reason"])
        for a in alerts
        if a["code"] == "loan_class_change" and a["loan_id"] == loan
    ]
    assert ("special_mention", "substandard", "restructured") in moves
    assert moves[-1][1] == "normal" and moves[-1][2].startswith("cured after")
    assert states[subject]["loans"][loan]["loan_class"] == "normal"
    migrations = states[subject]["features"]["loans"][loan]["class_migrations"]
    assert migrations[-1][2] == "normal"
    for control in truth["controls"]:
        assert states[control]["loan_class"] == "substandard"


def test_controls_stay_quiet(tmp: Path) -> None:
    _truth, alerts, states = replay("control", tmp)
    assert alerts == []
    assert {s["risk_tier"] for s in states.values()} == {"premium"}
