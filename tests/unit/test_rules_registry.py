"""Published versions: records, diffs, and a worker refusing a broken version."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from config.settings import KafkaSettings, Settings
from rules.engine import CompiledRuleSet
from rules.loader import RuleSetError, load_default, load_text
from rules.registry import (
    RegistryUnavailable,
    RuleSetHolder,
    build_record,
    compile_record,
    find_publication,
    history,
    rules_new_topic,
    rules_topic,
)
from rules.watch import RuleFeed, RulesWatcher, local_holder
from streams.topic_admin import planned_topics

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


def test_a_record_published_under_another_name_is_refused() -> None:
    holder = RuleSetHolder(load_default())
    record = build_record(
        load_text(TINY.replace("name: default", "name: other")),
        author="a",
        message="m",
        previous=None,
        now=NOW,
    )
    assert holder.offer(orjson.dumps(record), name="default") is False
    assert holder.refused == 1 and "published under key 'default'" in (holder.last_error or "")
    assert holder.offer(orjson.dumps(record)) is True  # no name to follow: taken


def test_publications_are_found_by_version_then_by_number() -> None:
    past = [
        {"seq": 1, "version": "aaa"},
        {"seq": 2, "version": "3"},
        {"seq": 3, "version": "aaa"},
    ]
    assert find_publication(past, "aaa")["seq"] == 3  # the newest publication of it
    assert find_publication(past, "3")["seq"] == 2  # a version named "3" wins over #3
    assert find_publication(past, "#3")["seq"] == 3
    assert find_publication(past, "1")["seq"] == 1
    with pytest.raises(LookupError, match="'bbb'"):
        find_publication(past, "bbb")
    with pytest.raises(LookupError):
        find_publication(past, "#9")


def test_the_rules_topic_is_created_as_the_topic_plan_says() -> None:
    settings = Settings(kafka=KafkaSettings(replication_factor=3, topic_partitions=8))
    planned = next(t for t in planned_topics(settings) if t.name == rules_topic(settings))
    made = rules_new_topic(settings.kafka, rules_topic(settings))
    assert (made.name, made.num_partitions, made.replication_factor) == (
        planned.name,
        planned.num_partitions,
        planned.replication_factor,
    )
    assert made.topic_configs == planned.topic_configs == {"cleanup.policy": "compact"}
    renamed = Settings(topics={"rules": "bank.rules"})
    assert rules_topic(renamed) == "bank.rules"


# -- the watcher's feed: records of the topic applied to a holder ----------------------------


@dataclass
class Rec:
    key: bytes | None
    value: bytes | None


def tiny(threshold: int) -> CompiledRuleSet:
    return load_text(TINY.replace("value: 90}", f"value: {threshold}}}"))


def publications(*rule_sets: CompiledRuleSet | dict[str, Any]) -> list[dict[str, Any]]:
    """Records as ``publish`` chains them; a dict stands for a hand-made (broken) record."""
    out: list[dict[str, Any]] = []
    for item in rule_sets:
        if isinstance(item, dict):
            out.append({**item, "seq": len(out) + 1})
            continue
        prev = out[-1] if out else None
        out.append(build_record(item, author="a", message="m", previous=prev, now=NOW))
    return out


def on_topic(records: list[dict[str, Any]]) -> list[Rec]:
    """What publishing those records leaves on the topic (before compaction)."""
    out = []
    for r in records:
        value = orjson.dumps(r)
        out += [Rec(f"{r['name']}@{r['seq']}".encode(), value), Rec(r["name"].encode(), value)]
    return out


def feed_for(holder: RuleSetHolder) -> tuple[RuleFeed, list[str], list[tuple[str, str]]]:
    refused: list[str] = []
    changes: list[tuple[str, str]] = []
    holder.on_change = lambda old, new: changes.append((old.version, new.version))
    return RuleFeed(holder, "default", lambda v, exc: refused.append(v)), refused, changes


BROKEN = {"name": "default", "version": "broken1", "rules": [{"id": "x"}]}


def test_catching_up_offers_only_the_newest_version() -> None:
    holder = local_holder()
    feed, refused, changes = feed_for(holder)
    feed.catch_up(on_topic(publications(tiny(90), BROKEN, tiny(60), tiny(30))))
    assert holder.current.version == tiny(30).version
    assert changes == [(load_default().version, tiny(30).version)]  # one swap, no replay
    assert refused == [] and holder.refused == 0  # an old, superseded refusal is not recounted
    assert feed.stats.caught_up and feed.stats.applied == 1


def test_catching_up_to_a_broken_newest_keeps_the_last_good_publication(
    caplog: pytest.LogCaptureFixture,
) -> None:
    holder = local_holder()
    feed, refused, _ = feed_for(holder)
    with caplog.at_level(logging.ERROR, logger="creditwatch.rules"):
        feed.catch_up(on_topic(publications(tiny(90), tiny(60), BROKEN)))
    assert holder.current.version == tiny(60).version  # what a running worker kept
    assert refused == ["broken1"] and holder.refused == 1 and feed.stats.refused == 1
    assert any("REFUSED rule set version broken1" in r.getMessage() for r in caplog.records)


def test_nothing_published_keeps_the_local_pack() -> None:
    holder = local_holder()
    local = holder.current
    feed, _, changes = feed_for(holder)
    feed.catch_up([Rec(b"other", orjson.dumps(publications(tiny(90))[0]))])
    assert holder.current is local and changes == [] and feed.stats.caught_up


def test_live_records_swap_refuse_and_ignore_what_is_not_the_current_version() -> None:
    holder = local_holder()
    feed, refused, changes = feed_for(holder)
    first, second = publications(tiny(90), tiny(60))
    feed.live(Rec(b"default@1", orjson.dumps(first)))  # history entries are not followed
    feed.live(Rec(b"other", orjson.dumps(first)))  # nor other rule sets
    assert changes == []
    feed.live(Rec(b"default", orjson.dumps(first)))
    assert holder.current.version == tiny(90).version
    feed.live(Rec(b"default", orjson.dumps(BROKEN)))
    feed.live(Rec(b"default", None))  # a deletion is not a rule set: the current one stays
    assert holder.current.version == tiny(90).version and refused == ["broken1"]
    feed.live(Rec(b"default", orjson.dumps(second)))
    assert holder.current.version == tiny(60).version
    assert feed.stats.applied == 2 and feed.stats.refused == 1


def test_an_invalid_local_pack_stops_the_start(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.replace("max_dpd, op", "max_dpdd, op"))
    with pytest.raises(RuleSetError, match=r"bad.yaml:7:\d+: rule deep: unknown feature"):
        local_holder(bad)
    with pytest.raises(OSError):
        local_holder(tmp_path / "none.yaml")
    assert local_holder().current.version == load_default().version


# -- Kafka that cannot be reached --------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_reading_history_from_an_unreachable_broker_fails_at_once() -> None:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}")
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable, match="is unavailable"):
        await history(kafka, "default", timeout=20)
    assert time.monotonic() - started < 10


async def test_a_broker_that_never_answers_is_given_up_after_the_timeout() -> None:
    connections: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}")
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable, match=r"did not answer within 1.5s"):
            await history(kafka, "default", timeout=1.5)
        assert 1.4 < time.monotonic() - started < 6
        assert connections  # it did try
    finally:
        for w in connections:
            w.close()
        server.close()
        await server.wait_closed()


async def test_the_watcher_keeps_retrying_while_kafka_is_down_and_stops_cleanly() -> None:
    settings = Settings(kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}"))
    holder = local_holder()
    local = holder.current
    watcher = RulesWatcher(settings, holder, retry_initial=0.05, retry_max=0.2)
    await watcher.start()
    deadline = time.monotonic() + 10
    while watcher.stats.failures < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert watcher.stats.failures >= 3 and "Kafka unavailable" in (watcher.stats.last_failure or "")
    assert not await watcher.wait_ready(0.1)
    assert holder.current is local
    task = watcher._task
    assert task is not None and not task.done()  # still trying, not crashed
    await watcher.stop()
    assert task.done() and watcher._task is None
