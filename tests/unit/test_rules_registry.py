"""Published versions: records, diffs, and a worker refusing a broken version."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson
import pytest

from rules.loader import load_default, load_text
from rules.registry import RuleSetHolder, build_record, compile_record

TINY = """\
name: default
rules:
  - id: deep
    description: Deep arrears
    why: ninety days past due is default
    applies_to: [tick]
    condition: {feature: max_dpd, op: crosses, value: 90}
    severity: critical
    dedup_key: "{customer_id}:deep"
    route: both
"""
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_records_chain_with_a_diff_and_round_trip() -> None:
    first = build_record(load_text(TINY), author="ann", message="first", previous=None, now=NOW)
    assert first["seq"] == 1 and first["diff"]["added"] == ["deep"]
    second_rules = load_text(TINY.replace("severity: critical", "severity: high"))
    second = build_record(second_rules, author="bob", message="soften", previous=first, now=NOW)
    assert second["seq"] == 2
    assert second["diff"]["changed"] == ["deep"] and second["diff"]["added"] == []
    assert '-  "severity": "critical"' in second["diff"]["text"]
    assert {k: second[k] for k in ("author", "message")} == {"author": "bob", "message": "soften"}
    back = compile_record(orjson.loads(orjson.dumps(second)))
    assert back.version == second_rules.version


def test_a_worker_swaps_to_a_valid_version() -> None:
    holder = RuleSetHolder(load_default())
    changes = []
    holder.on_change = lambda old, new: changes.append((old.version, new.version))
    new = load_text(TINY)
    record = build_record(new, author="ann", message="m", previous=None, now=NOW)
    assert holder.offer(orjson.dumps(record)) is True
    assert holder.current.version == new.version
    assert holder.offer(orjson.dumps(record)) is False  # same version again: nothing to do
    assert len(changes) == 1


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"[1, 2]",
        orjson.dumps({"name": "default", "version": "v9", "rules": [{"id": "x"}]}),
    ],
)
def test_a_broken_version_is_refused_loudly_and_the_last_good_kept(
    value: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    good = load_default()
    holder = RuleSetHolder(good)
    refused = []
    holder.on_refused = lambda version, exc: refused.append(version)
    with caplog.at_level(logging.ERROR, logger="creditwatch.rules"):
        assert holder.offer(value) is False
    assert holder.current is good
    assert holder.refused == 1 and len(refused) == 1
    assert any("REFUSED rule set version" in r.getMessage() for r in caplog.records)


def test_a_version_with_an_unknown_feature_is_refused_with_its_problem() -> None:
    holder = RuleSetHolder(load_default())
    record = build_record(load_text(TINY), author="a", message="m", previous=None, now=NOW)
    record["rules"][0]["condition"]["feature"] = "max_dpdd"
    assert holder.offer(orjson.dumps(record)) is False
    assert "unknown feature 'max_dpdd'" in (holder.last_error or "")
