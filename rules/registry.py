"""Published rule-set versions: the compacted topic ``credit.rules.v1`` and the worker's holder.

Every publication writes one JSON record twice:

- key ``<name>``: the current version, which workers follow (compaction keeps the last);
- key ``<name>@<seq>``: the same record under its publication number, so compaction
  keeps every version ever published (history, rollback). ``seq`` rather than
  the version is the key because a rollback republishes an old content, whose
  content-hash version is the old one, and must not erase the original entry.

A record: ``{name, version, seq, author, published_at, message, diff, rules, rolled_back_to?}``
where ``diff`` is ``{added, removed, changed, text}`` against the previous publication.

A worker holds the current version in a :class:`RuleSetHolder`; an event reads
``holder.current`` once, so it is judged wholly by one version; a new version
replaces the reference in one assignment. A record that does not compile is
refused: the last good version stays and the refusal is logged at ERROR and
counted.
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from rules.engine import CompiledRuleSet
from rules.loader import RuleSetError, load_data

TOPIC = "credit.rules.v1"
log = logging.getLogger("creditwatch.rules")


def rules_json(rule_set: CompiledRuleSet) -> list[dict[str, Any]]:
    return rule_set.model.model_dump(mode="json", by_alias=True)["rules"]


def diff_rules(old: list[dict[str, Any]] | None, new: list[dict[str, Any]]) -> dict[str, Any]:
    """Rules added, removed and changed (by id), and a unified text diff.

    >>> d = diff_rules([{"id": "a", "severity": "high"}], [{"id": "a", "severity": "critical"},
    ...                                                     {"id": "b"}])
    >>> d["added"], d["removed"], d["changed"]
    (['b'], [], ['a'])
    """
    before = {r["id"]: r for r in old or []}
    after = {r["id"]: r for r in new}

    def lines(rules: list[dict[str, Any]] | None) -> list[str]:
        return json.dumps(rules or [], indent=1, sort_keys=True).splitlines(keepends=True)

    return {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(k for k in set(before) & set(after) if before[k] != after[k]),
        "text": "".join(difflib.unified_diff(lines(old), lines(new), "previous", "this")),
    }


def build_record(
    rule_set: CompiledRuleSet,
    *,
    author: str,
    message: str,
    previous: dict[str, Any] | None,
    now: datetime | None = None,
    rolled_back_to: str | None = None,
) -> dict[str, Any]:
    """The record a publication writes (``previous``: the current record, if any)."""
    rules = rules_json(rule_set)
    record: dict[str, Any] = {
        "name": rule_set.name,
        "version": rule_set.version,
        "seq": (previous["seq"] + 1) if previous else 1,
        "author": author,
        "published_at": (now or datetime.now(UTC)).isoformat(),
        "message": message,
        "diff": diff_rules(previous["rules"] if previous else None, rules),
        "rules": rules,
    }
    if rolled_back_to:
        record["rolled_back_to"] = rolled_back_to
    return record


def compile_record(record: dict[str, Any]) -> CompiledRuleSet:
    """The rule set a record carries; :class:`RuleSetError` when it is invalid."""
    data = {
        "name": record.get("name"),
        "version": record.get("version"),
        "rules": record.get("rules"),
    }
    return load_data(data, source=f"{record.get('name')}@{record.get('version')}")


@dataclass
class RuleSetHolder:
    """The version a worker judges with; replaced atomically, never by an invalid one."""

    current: CompiledRuleSet
    refused: int = 0
    on_change: Callable[[CompiledRuleSet, CompiledRuleSet], None] | None = None
    on_refused: Callable[[str, RuleSetError | ValueError], None] | None = None
    last_error: str | None = field(default=None)

    def offer(self, value: bytes) -> bool:
        """A record from the topic: True when it became the current version."""
        record: Any = None
        try:
            record = orjson.loads(value)
            if not isinstance(record, dict):
                raise ValueError("a rule-set record is a JSON object")
            candidate = compile_record(record)
        except (ValueError, orjson.JSONDecodeError) as exc:
            self.refused += 1
            self.last_error = str(exc)
            version = record.get("version") if isinstance(record, dict) else None
            log.error(
                "REFUSED rule set version %s: keeping %s; problems:\n%s",
                version,
                self.current.version,
                exc,
            )
            if self.on_refused:
                self.on_refused(str(version), exc)
            return False
        if candidate.version == self.current.version and candidate.name == self.current.name:
            return False
        old, self.current = self.current, candidate  # one assignment: atomic for readers
        log.warning(
            "rule set %s: now version %s (was %s)", candidate.name, candidate.version, old.version
        )
        if self.on_change:
            self.on_change(old, candidate)
        return True


# -- Kafka ---------------------------------------------------------------------------------


async def read_records(bootstrap: str, topic: str = TOPIC, **kafka: Any) -> list[tuple[str, dict]]:
    """Every (key, record) on the topic from the beginning to its current end."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest", **kafka
    )
    await consumer.start()
    out: list[tuple[str, dict]] = []
    try:
        partitions = await consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return out
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, messages in batch.items():
                for m in messages:
                    if m.key is not None and m.value is not None:
                        out.append((m.key.decode(), orjson.loads(m.value)))
                    if m.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return out


async def history(bootstrap: str, name: str, topic: str = TOPIC, **kafka: Any) -> list[dict]:
    """Every published version of ``name``, oldest first."""
    records = {
        rec["seq"]: rec
        for key, rec in await read_records(bootstrap, topic, **kafka)
        if key.startswith(f"{name}@") and isinstance(rec, dict) and "seq" in rec
    }
    return [records[k] for k in sorted(records)]


async def _write(bootstrap: str, topic: str, record: dict, **kafka: Any) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **kafka)
    await producer.start()
    try:
        value = orjson.dumps(record)
        await producer.send_and_wait(topic, value, key=f"{record['name']}@{record['seq']}".encode())
        await producer.send_and_wait(topic, value, key=record["name"].encode())
    finally:
        await producer.stop()


async def publish(
    bootstrap: str,
    rule_set: CompiledRuleSet,
    *,
    author: str,
    message: str,
    topic: str = TOPIC,
    rolled_back_to: str | None = None,
    **kafka: Any,
) -> dict:
    """Publish a (validated) rule set as the next version; the record written."""
    past = await history(bootstrap, rule_set.name, topic, **kafka)
    record = build_record(
        rule_set,
        author=author,
        message=message,
        previous=past[-1] if past else None,
        rolled_back_to=rolled_back_to,
    )
    await _write(bootstrap, topic, record, **kafka)
    return record


async def rollback(
    bootstrap: str,
    name: str,
    version: str,
    *,
    author: str,
    message: str,
    topic: str = TOPIC,
    **kafka: Any,
) -> dict:
    """Republish an earlier version's rules as the newest publication."""
    past = await history(bootstrap, name, topic, **kafka)
    target = next((r for r in reversed(past) if r["version"] == version), None)
    if target is None:
        raise LookupError(f"rule set {name!r} has no published version {version!r}")
    rule_set = compile_record(target)
    return await publish(
        bootstrap,
        rule_set,
        author=author,
        message=message,
        topic=topic,
        rolled_back_to=version,
        **kafka,
    )
