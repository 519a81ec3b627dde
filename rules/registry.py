"""Published rule-set versions: the compacted topic ``credit.rules.v1`` and the worker's holder.

Every publication writes one JSON record twice:

- key ``<name>@<seq>``: the record under its publication number, so compaction
  keeps every version ever published (history, rollback). ``seq`` rather than
  the version is the key because a rollback republishes an old content, whose
  content-hash version is the old one, and must not erase the original entry;
- key ``<name>``: the current version, which workers follow (compaction keeps the last).

The history entry is written first, so a reader that sees a current version
can always find it in the history too. A rule-set name cannot contain ``@``
(``rules/model.py``), so the two kinds of key never collide.

A record: ``{name, version, seq, author, published_at, message, diff, rules,
rolled_back_to?, rolled_back_to_seq?}`` where ``diff`` is ``{added, removed,
changed, text}`` against the previous publication.

Reading never hangs: the end offsets are captured first, the partitions are
assigned by hand (no consumer group, nothing committed) and read from the
beginning up to those offsets, all under one deadline; an unreachable broker
is a :class:`RegistryUnavailable` naming the bootstrap servers, not a wait.

A worker holds the current version in a :class:`RuleSetHolder`; an event reads
``holder.current`` once, so it is judged wholly by one version; a new version
replaces the reference in one assignment. A record that does not compile is
refused: the last good version stays and the refusal is logged at ERROR and
counted. ``rules/watch.py`` feeds the holder from the topic.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from config.settings import KafkaSettings, Settings
from rules.engine import CompiledRuleSet
from rules.loader import load_data
from schemas.topics import DEFAULT_TOPICS, RULES
from streams.kafka_options import aiokafka_options

TOPIC = DEFAULT_TOPICS[RULES]
DEFAULT_TIMEOUT = 30.0
log = logging.getLogger("creditwatch.rules")

# Kafka error codes met when creating or describing the topic.
_UNKNOWN_TOPIC = 3
_TOPIC_EXISTS = 36


class RegistryUnavailable(RuntimeError):
    """Kafka could not be reached, or did not answer in time."""


class AlreadyCurrent(Exception):
    """The rule set offered for publication is the current version: nothing was written."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record
        super().__init__(
            f"rule set {record['name']} version {record['version']} is already the current "
            f"version (#{record['seq']})"
        )


def rules_topic(settings: Settings) -> str:
    """The deployment's name for the rules topic (``CREDITWATCH_TOPICS`` may rename it)."""
    return settings.topics[RULES]


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
    rolled_back_to: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record a publication writes.

    ``previous`` is the newest publication, if any; ``rolled_back_to`` the
    earlier publication whose rules this one brings back.
    """
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
        record["rolled_back_to"] = rolled_back_to["version"]
        record["rolled_back_to_seq"] = rolled_back_to["seq"]
    return record


def compile_record(record: dict[str, Any]) -> CompiledRuleSet:
    """The rule set a record carries; :class:`RuleSetError` when it is invalid."""
    data = {
        "name": record.get("name"),
        "version": record.get("version"),
        "rules": record.get("rules"),
    }
    return load_data(data, source=f"{record.get('name')}@{record.get('version')}")


def find_publication(history: list[dict[str, Any]], target: str) -> dict[str, Any]:
    """The publication ``target`` names: a version (the newest with it), else ``N``/``#N`` a seq.

    A version wins over a seq because a version given explicitly in a file may
    be all digits; ``#N`` always means the publication number.

    >>> past = [{"seq": 1, "version": "a1"}, {"seq": 2, "version": "b2"},
    ...         {"seq": 3, "version": "a1"}]
    >>> find_publication(past, "a1")["seq"], find_publication(past, "2")["version"]
    (3, 'b2')
    >>> find_publication(past, "#1")["seq"]
    1
    """
    if not target.startswith("#"):
        by_version = [r for r in history if r.get("version") == target]
        if by_version:
            return by_version[-1]
    number = target.removeprefix("#")
    if number.isdigit():
        by_seq = [r for r in history if r.get("seq") == int(number)]
        if by_seq:
            return by_seq[-1]
    raise LookupError(f"no published version or publication number {target!r}")


@dataclass
class RuleSetHolder:
    """The version a worker judges with; replaced atomically, never by an invalid one."""

    current: CompiledRuleSet
    refused: int = 0
    on_change: Callable[[CompiledRuleSet, CompiledRuleSet], None] | None = None
    on_refused: Callable[[str, Exception], None] | None = None
    last_error: str | None = field(default=None)
    last_refusal: tuple[str, Exception] | None = field(default=None)

    def offer(self, value: bytes, *, name: str | None = None) -> bool:
        """A record from the topic: True when it became the current version.

        ``name``: the rule set the caller follows; a record of another name is
        refused (it was published under the wrong key).
        """
        record: Any = None
        try:
            record = orjson.loads(value)
            if not isinstance(record, dict):
                raise ValueError("a rule-set record is a JSON object")
            if name is not None and record.get("name") != name:
                raise ValueError(
                    f"record of rule set {record.get('name')!r} published under key {name!r}"
                )
            candidate = compile_record(record)
        except ValueError as exc:  # orjson.JSONDecodeError and RuleSetError are ValueErrors
            version = record.get("version") if isinstance(record, dict) else None
            self.refuse(str(version), exc)
            return False
        return self.swap(candidate)

    def refuse(self, version: str, exc: Exception) -> None:
        """Count and report a version that cannot be used; the current one stays."""
        self.refused += 1
        self.last_error = str(exc)
        self.last_refusal = (version, exc)
        log.error(
            "REFUSED rule set version %s: keeping %s; problems:\n%s",
            version,
            self.current.version,
            exc,
        )
        if self.on_refused:
            self.on_refused(version, exc)

    def swap(self, candidate: CompiledRuleSet) -> bool:
        """Make a compiled rule set current; False when it is the current one already."""
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


def rules_new_topic(kafka: KafkaSettings, topic: str = TOPIC) -> NewTopic:
    """The rules topic as ``creditwatch topics create`` plans it: compacted, one partition.

    One partition keeps every publication of every rule set in one order.
    """
    return NewTopic(
        name=topic,
        num_partitions=1,
        replication_factor=kafka.replication_factor,
        topic_configs={"cleanup.policy": "compact"},
    )


@dataclass(frozen=True)
class TopicState:
    """What :func:`ensure_topic` found or made."""

    partitions: tuple[int, ...]
    created: bool
    cleanup_policy: str | None

    @property
    def compacted(self) -> bool:
        return "compact" in (self.cleanup_policy or "")


@asynccontextmanager
async def kafka_deadline(kafka: KafkaSettings, what: str, timeout: float) -> AsyncIterator[None]:
    """Run a Kafka conversation under a deadline; failures become :class:`RegistryUnavailable`."""
    try:
        async with asyncio.timeout(timeout):
            yield
    except TimeoutError:
        raise RegistryUnavailable(
            f"Kafka at {kafka.bootstrap_servers} did not answer within {timeout:g}s ({what})"
        ) from None
    except (KafkaError, OSError) as exc:
        raise RegistryUnavailable(
            f"Kafka at {kafka.bootstrap_servers} is unavailable ({what}): {exc}"
        ) from exc


@asynccontextmanager
async def admin_client(kafka: KafkaSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    """An admin client with the deployment's connection and security settings, closed after."""
    admin = AIOKafkaAdminClient(**aiokafka_options(kafka))
    try:
        await admin.start()
        yield admin
    finally:
        await admin.close()


async def topic_partitions(admin: AIOKafkaAdminClient, topic: str) -> tuple[int, ...] | None:
    """The topic's partition numbers; None when it does not exist.

    Existence is asked with a list of all topics first, because a metadata
    request naming a missing topic makes a broker with automatic topic creation
    create it, uncompacted.
    """
    if topic not in set(await admin.list_topics()):
        return None
    (info,) = await admin.describe_topics([topic])
    if info["error_code"] == _UNKNOWN_TOPIC:  # listed but not yet known to this broker
        return None
    if info["error_code"]:
        raise KafkaError(f"describing topic {topic}: error code {info['error_code']}")
    return tuple(sorted(p["partition"] for p in info["partitions"]))


async def _cleanup_policy(admin: AIOKafkaAdminClient, topic: str) -> str | None:
    """The topic's cleanup policy; None when it cannot be read (e.g. no DescribeConfigs right)."""
    resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs={"cleanup.policy": None})
    try:
        (response,) = await admin.describe_configs([resource])
    except KafkaError as exc:
        log.info("cannot read the cleanup policy of %s: %s", topic, exc)
        return None
    for res in response.to_object()["resources"]:
        for entry in res["config_entries"]:
            if entry["config_names"] == "cleanup.policy":
                return str(entry["config_value"])
    return None


async def _ensure_topic(admin: AIOKafkaAdminClient, kafka: KafkaSettings, topic: str) -> TopicState:
    partitions = await topic_partitions(admin, topic)
    created = False
    if partitions is None:
        response = await admin.create_topics([rules_new_topic(kafka, topic)])
        for name, code, message in response.topic_errors:
            if code not in (0, _TOPIC_EXISTS):
                raise KafkaError(f"creating topic {name}: {message or f'error code {code}'}")
            created = created or code == 0
        while partitions is None:  # the new topic reaches every broker's metadata shortly
            await asyncio.sleep(0.1)
            partitions = await topic_partitions(admin, topic)
        if created:
            log.info("created compacted topic %s", topic)
    return TopicState(partitions, created, await _cleanup_policy(admin, topic))


async def ensure_topic(
    kafka: KafkaSettings, topic: str = TOPIC, *, timeout: float = DEFAULT_TIMEOUT
) -> TopicState:
    """Create the rules topic, compacted, when it is missing; an existing one is left as it is."""
    what = f"creating topic {topic}"
    async with kafka_deadline(kafka, what, timeout), admin_client(kafka) as admin:
        return await _ensure_topic(admin, kafka, topic)


async def _read_partitions(
    kafka: KafkaSettings, topic: str, partitions: tuple[int, ...]
) -> list[tuple[str, dict[str, Any]]]:
    """Every keyed JSON-object record up to the end offsets captured before reading."""
    consumer = AIOKafkaConsumer(
        **aiokafka_options(kafka),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    out: list[tuple[str, dict[str, Any]]] = []
    try:
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        remaining = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, messages in batch.items():
                for m in messages:
                    if m.offset >= ends[tp] or m.key is None or m.value is None:
                        continue
                    try:
                        record = orjson.loads(m.value)
                    except orjson.JSONDecodeError:
                        log.warning("%s offset %d is not JSON: skipped", topic, m.offset)
                        continue
                    if isinstance(record, dict):
                        out.append((m.key.decode(errors="replace"), record))
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return out


def _history_of(name: str, records: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    by_seq = {
        rec["seq"]: rec
        for key, rec in records
        if key.startswith(f"{name}@") and isinstance(rec.get("seq"), int)
    }
    return [by_seq[k] for k in sorted(by_seq)]


async def read_records(
    kafka: KafkaSettings, topic: str = TOPIC, *, timeout: float = DEFAULT_TIMEOUT
) -> list[tuple[str, dict[str, Any]]]:
    """Every (key, record) on the topic from the beginning to its end at the time of asking."""
    async with kafka_deadline(kafka, f"reading {topic}", timeout):
        async with admin_client(kafka) as admin:
            partitions = await topic_partitions(admin, topic)
        if not partitions:
            return []
        return await _read_partitions(kafka, topic, partitions)


async def history(
    kafka: KafkaSettings, name: str, *, topic: str = TOPIC, timeout: float = DEFAULT_TIMEOUT
) -> list[dict[str, Any]]:
    """Every published version of ``name``, oldest first (none when the topic is missing)."""
    return _history_of(name, await read_records(kafka, topic, timeout=timeout))


async def _write(kafka: KafkaSettings, topic: str, record: dict[str, Any]) -> None:
    producer = AIOKafkaProducer(**aiokafka_options(kafka), acks="all", enable_idempotence=True)
    try:
        await producer.start()
        value = orjson.dumps(record)
        await producer.send_and_wait(topic, value, key=f"{record['name']}@{record['seq']}".encode())
        await producer.send_and_wait(topic, value, key=record["name"].encode())
    finally:
        await producer.stop()


async def _publish(
    kafka: KafkaSettings,
    name: str,
    rule_set: CompiledRuleSet | None,
    *,
    author: str,
    message: str,
    topic: str,
    rollback_target: str | None = None,
) -> dict[str, Any]:
    """Publish ``rule_set``, or (``rule_set`` None) the publication ``rollback_target`` names.

    History is read after the topic is ensured, in the same call, so the new
    record's ``seq`` and diff follow the newest publication.
    """
    async with admin_client(kafka) as admin:
        state = await _ensure_topic(admin, kafka, topic)
    if state.cleanup_policy is not None and not state.compacted:
        log.warning(
            "topic %s has cleanup.policy=%s, not compact: old versions will be deleted",
            topic,
            state.cleanup_policy,
        )
    past = _history_of(name, await _read_partitions(kafka, topic, state.partitions))
    target = None
    if rule_set is None:
        target = find_publication(past, rollback_target or "")
        rule_set = compile_record(target)
    previous = past[-1] if past else None
    if previous and previous.get("version") == rule_set.version:
        raise AlreadyCurrent(previous)
    record = build_record(
        rule_set, author=author, message=message, previous=previous, rolled_back_to=target
    )
    await _write(kafka, topic, record)
    return record


async def publish(
    kafka: KafkaSettings,
    rule_set: CompiledRuleSet,
    *,
    author: str,
    message: str,
    topic: str = TOPIC,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """Publish a (validated) rule set as the next version; the record written.

    The topic is created, compacted, when missing. :class:`AlreadyCurrent` when
    the rule set is the current version already (nothing is written).
    """
    async with kafka_deadline(kafka, f"publishing to {topic}", timeout):
        return await _publish(
            kafka, rule_set.name, rule_set, author=author, message=message, topic=topic
        )


async def rollback(
    kafka: KafkaSettings,
    name: str,
    target: str,
    *,
    author: str,
    message: str,
    topic: str = TOPIC,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """Republish an earlier version's rules (``target``: version, ``N`` or ``#N``) as the newest.

    :class:`LookupError` when ``name`` has no such publication, :class:`RuleSetError`
    when its rules no longer compile, :class:`AlreadyCurrent` when it is current.
    """
    async with kafka_deadline(kafka, f"rolling back on {topic}", timeout):
        async with admin_client(kafka) as admin:
            exists = await topic_partitions(admin, topic) is not None
        if not exists:  # nothing was ever published: say so rather than create the topic
            raise LookupError(f"rule set {name!r} has never been published on {topic}")
        return await _publish(
            kafka, name, None, author=author, message=message, topic=topic, rollback_target=target
        )
