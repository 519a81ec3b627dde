"""``creditwatch simulate`` then ``creditwatch replay``, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "creditwatch", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines() if x]


@pytest.fixture(scope="module")
def book(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("book")
    events, truth = tmp / "events.jsonl", tmp / "truth.json"
    cli(
        "simulate", "--customers", "120", "--seed", "3", "--out", str(events), "--truth", str(truth)
    )
    return events, json.loads(truth.read_text())


@pytest.fixture(scope="module")
def replayed(book: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("replay")
    proc = cli("replay", str(book[0]), "--out", str(out))
    assert "warnings" in proc.stdout
    return out


def test_replay_writes_every_output_file(replayed: Path, book: tuple[Path, dict[str, str]]) -> None:
    for name in (
        "alerts.jsonl",
        "collections-tasks.jsonl",
        "dead-letter.jsonl",
        "state.jsonl",
        "scores.jsonl",
        "report.html",
    ):
        assert (replayed / name).exists(), name
    events = lines(book[0])
    assert len(lines(replayed / "scores.jsonl")) == len(events)
    assert {s["customer_id"] for s in lines(replayed / "state.jsonl")} == {
        e["customer_id"] for e in events
    }
    assert lines(replayed / "dead-letter.jsonl") == []
    assert "creditwatch replay report" in (replayed / "report.html").read_text()


def test_outputs_validate_against_the_published_json_schemas(replayed: Path) -> None:
    for name, schema_file in [
        ("alerts.jsonl", "credit.risk-alerts.v1.schema.json"),
        ("collections-tasks.jsonl", "credit.collections-tasks.v1.schema.json"),
        ("state.jsonl", "credit.risk-state.v1.schema.json"),
    ]:
        schema = json.loads((ROOT / "schemas/json" / schema_file).read_text())
        records = lines(replayed / name)
        assert records, name
        for record in records:
            jsonschema.validate(record, schema)


def test_warnings_match_the_simulated_behaviour(
    replayed: Path, book: tuple[Path, dict[str, str]]
) -> None:
    truth = book[1]
    codes: dict[str, set[str]] = defaultdict(set)
    for alert in lines(replayed / "alerts.jsonl"):
        codes[alert["customer_id"]].add(alert["code"])
    states = {s["customer_id"]: s for s in lines(replayed / "state.jsonl")}
    troubled = [c for c, b in truth.items() if b in ("failing_then_default", "written_off")]
    assert troubled
    for customer in troubled:
        assert {"dpd_1", "dpd_30"} <= codes[customer], customer
        assert states[customer]["risk_tier"] == "high", customer
    for customer in (c for c, b in truth.items() if b == "on_time"):
        assert "dpd_30" not in codes[customer], customer
        assert states[customer]["max_dpd"] == 0, customer
    written_off = [c for c, b in truth.items() if b == "written_off"]
    assert all(states[c]["loan_class"] == "loss" for c in written_off)


def test_replay_is_deterministic(
    book: tuple[Path, dict[str, str]], replayed: Path, tmp_path: Path
) -> None:
    cli("replay", str(book[0]), "--out", str(tmp_path))
    for name in ("alerts.jsonl", "collections-tasks.jsonl", "state.jsonl"):
        assert (tmp_path / name).read_bytes() == (replayed / name).read_bytes(), name


def test_invalid_lines_go_to_dead_letter_with_line_numbers(
    book: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    good = book[0].read_bytes().splitlines()[:50]
    bad = [b"{not json", b'{"type": "loan.opened"}', b'"just a string"']
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(good[:10] + bad + good[10:]) + b"\n")
    out = tmp_path / "out"
    cli("replay", str(path), "--out", str(out))
    letters = lines(out / "dead-letter.jsonl")
    assert [d["source_offset"] for d in letters] == [11, 12, 13]
    assert all(d["source_topic"] == "mixed.jsonl" and d["error"] for d in letters)
    assert len(lines(out / "scores.jsonl")) == 50
