"""Backtesting: ``creditwatch replay --rules`` and ``--compare``, run as the desk runs them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from creditwatch.backtest import figures

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "rules" / "packs" / "default.yaml"
pytestmark = pytest.mark.e2e


def cli(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "creditwatch", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == expect, proc.stderr
    return proc


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines() if x]


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bt") / "events.jsonl"
    cli("simulate", "--customers", "80", "--months", "8", "--seed", "5", "--out", str(path))
    return path


@pytest.fixture(scope="module")
def candidate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default pack with the 30-day bucket moved to 20 days."""
    text = PACK.read_text(encoding="utf-8")
    old = "{feature: max_dpd, op: crosses, value: 30}"
    assert text.count(old) == 1
    path = tmp_path_factory.mktemp("rules") / "candidate.yaml"
    path.write_text(text.replace(old, "{feature: max_dpd, op: crosses, value: 20}"), "utf-8")
    return path


def test_same_events_and_rules_give_the_same_warnings(events: Path, tmp_path: Path) -> None:
    cli("replay", str(events), "--out", str(tmp_path / "one"), "--rules", str(PACK))
    cli("replay", str(events), "--out", str(tmp_path / "two"), "--rules", str(PACK))
    one = (tmp_path / "one" / "alerts.jsonl").read_bytes()
    assert one and one == (tmp_path / "two" / "alerts.jsonl").read_bytes()
    versions = {a["rule_set_version"] for a in lines(tmp_path / "one" / "alerts.jsonl")}
    assert len(versions) == 1 and "builtin-1" not in versions


def test_candidate_rules_judge_the_history(events: Path, candidate: Path, tmp_path: Path) -> None:
    cli("replay", str(events), "--out", str(tmp_path / "cand"), "--rules", str(candidate))
    alerts = lines(tmp_path / "cand" / "alerts.jsonl")
    dpd30 = [a for a in alerts if a["code"] == "dpd_30"]
    assert dpd30, "the candidate's 20-day bucket should fire in an 8-month book"
    for alert in dpd30:
        cond = alert["explanation"]["conditions"][0]
        assert cond["threshold"] == 20 and cond["value"] >= 20


def test_compare_reports_only_the_changed_rule(
    events: Path, candidate: Path, tmp_path: Path
) -> None:
    proc = cli(
        "replay", str(events), "--out", str(tmp_path), "--compare", str(PACK), str(candidate)
    )
    assert "dpd_30" in proc.stdout
    report = json.loads((tmp_path / "compare.json").read_text())
    rows = {r["rule"]: r for r in report["rules"]}
    assert rows["dpd_30"]["added"] > 0
    for rule, row in rows.items():
        if rule != "dpd_30":
            assert (row["added"], row["removed"]) == (0, 0), rule
            assert row["a"] == row["b"], rule
    assert report["labelled_defaults"] > 0
    assert rows["dpd_90"]["a"]["precision"] is not None


def test_an_invalid_candidate_is_refused_with_its_line(events: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = PACK.read_text(encoding="utf-8").replace("feature: max_dpd,", "feature: max_dpdd,", 1)
    bad.write_text(text, encoding="utf-8")
    proc = cli("replay", str(events), "--out", str(tmp_path / "o"), "--rules", str(bad), expect=2)
    assert "max_dpdd" in proc.stderr
    assert re.search(r"bad\.yaml:\d+:\d+: rule dpd_1", proc.stderr)  # file:line:column


def test_precision_and_lead_time_follow_the_labels() -> None:
    def alert(i: str, customer: str, at: str) -> dict[str, Any]:
        return {"alert_id": i, "code": "r", "customer_id": customer, "triggered_at": at}

    alerts = {
        "1": alert("1", "A", "2026-01-01T00:00:00+00:00"),
        "2": alert("2", "A", "2026-01-05T00:00:00+00:00"),
        "3": alert("3", "B", "2026-01-01T00:00:00+00:00"),
        "4": alert("4", "C", "2026-03-01T00:00:00+00:00"),
    }
    defaults = {
        "A": datetime.fromisoformat("2026-01-11T00:00:00+00:00"),  # 10 days after the first
        "C": datetime.fromisoformat("2026-02-01T00:00:00+00:00"),  # before: not predicted
    }
    fig = figures(alerts, defaults)["r"]
    assert (fig.warnings, fig.customers, fig.defaulted_after) == (4, 3, 1)
    assert fig.precision == pytest.approx(1 / 3)
    assert fig.median_lead_days == 10.0
