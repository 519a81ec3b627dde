"""A worker follows ``credit.rules.v1`` and judges with the newest valid version of its rule set.

How a worker runs it (inside its event loop)::

    from rules.watch import RulesWatcher, local_holder

    holder = local_holder()            # the shipped default pack until a version is published
    watcher = RulesWatcher(
        settings,                      # config.settings.Settings: Kafka connection, topic names
        holder,
        name="default",                # the rule set this worker runs (default: the holder's)
        on_refused=lambda version, exc: rules_refused_total.inc(),
    )
    await watcher.start()              # returns at once; the watcher runs as a task
    await watcher.wait_ready(10.0)     # optional: the newest version read before the first event
    ...                                # per event: ``rules = holder.current``, read once
    await watcher.stop()               # on shutdown

(``await follow_rules(settings, holder, ...)`` is the same watcher as one
coroutine that runs until it is cancelled.)

Every worker reads every partition of the topic itself, from the beginning,
with no consumer group: a group would hand each version to one worker only.
The records up to the end offsets found at connection are the backlog: only
its newest current-version record is offered, so a restart neither replays
every old version nor counts an old, superseded refusal again. When that newest
one does not compile, the worker keeps what its peers kept: the newest earlier
publication (``name@seq``) that does. Afterwards each current-version record
(key == the followed name) is offered as it arrives.

A version that fails to compile is refused by the :class:`RuleSetHolder`: the
last good version stays, an ERROR is logged, the refusal is counted
(``holder.refused``, ``watcher.stats.refused``) and ``on_refused`` is called,
which is the hook for the worker's Prometheus counter.

Broker outages: the consumer reconnects by itself while it runs; a failure to
connect, or any error out of the loop, closes the clients and starts again
after a backoff that doubles up to ``retry_max`` seconds, from where it had
read. Nothing of it reaches the worker, which judges with the version it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from config.settings import Settings
from rules.loader import load_default, load_file
from rules.registry import (
    RuleSetHolder,
    admin_client,
    compile_record,
    rules_topic,
    topic_partitions,
)
from streams.kafka_options import aiokafka_options

log = logging.getLogger("creditwatch.rules")

RefusedHook = Callable[[str, Exception], None]


class Message(Protocol):
    """What the feed needs of a Kafka record (aiokafka's ``ConsumerRecord`` has it)."""

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...


def local_holder(path: str | Path | None = None) -> RuleSetHolder:
    """The holder a worker starts with: the rule set in ``path``, else the shipped default pack.

    An invalid local file raises :class:`rules.loader.RuleSetError` (every
    problem with its line): a worker must not start without a good rule set.
    """
    return RuleSetHolder(load_file(path) if path is not None else load_default())


@dataclass
class WatchStats:
    """Counters a worker can expose (``/metrics``, ``/healthz``)."""

    applied: int = 0  # versions that became current
    refused: int = 0  # versions refused because they do not compile
    failures: int = 0  # connections lost or refused (each followed by a retry)
    connected: bool = False
    caught_up: bool = False
    last_failure: str | None = None


class RuleFeed:
    """Applies the records of the topic to a holder; no Kafka in here, so it is testable alone."""

    def __init__(
        self, holder: RuleSetHolder, name: str, on_refused: RefusedHook | None = None
    ) -> None:
        self.holder = holder
        self.name = name
        self.on_refused = on_refused
        self.stats = WatchStats()
        self._history_prefix = f"{name}@"

    def _offer(self, value: bytes) -> bool:
        refused_before = self.holder.refused
        changed = self.holder.offer(value, name=self.name)
        if changed:
            self.stats.applied += 1
        elif self.holder.refused > refused_before:
            self.stats.refused += 1
            if self.on_refused and self.holder.last_refusal:
                self.on_refused(*self.holder.last_refusal)
        return changed

    def live(self, message: Message) -> None:
        """One record read after the backlog: offered when it is the followed current version."""
        if message.key is None or message.key.decode(errors="replace") != self.name:
            return
        if message.value is None:
            log.warning(
                "rule set %s: current version deleted from the topic; keeping %s",
                self.name,
                self.holder.current.version,
            )
            return
        self._offer(message.value)

    def catch_up(self, backlog: Iterable[Message]) -> None:
        """The records already on the topic at connection, in offset order."""
        current: bytes | None = None
        published: dict[int, bytes] = {}
        for m in backlog:
            key = m.key.decode(errors="replace") if m.key is not None else None
            if key == self.name:
                current = m.value
            elif key and key.startswith(self._history_prefix) and m.value is not None:
                seq = key.removeprefix(self._history_prefix)
                if seq.isdigit():
                    published[int(seq)] = m.value
        self.stats.caught_up = True
        if current is None:
            log.info(
                "rule set %s: no published version; judging with %s",
                self.name,
                self.holder.current.version,
            )
            return
        refused_before = self.holder.refused
        self._offer(current)
        if self.holder.refused > refused_before:
            self._fall_back(_seq_of(current), published)

    def _fall_back(self, refused_seq: int | None, published: dict[int, bytes]) -> None:
        """The newest earlier publication that compiles, as a worker running all along kept."""
        for seq in sorted(published, reverse=True):
            if refused_seq is not None and seq >= refused_seq:
                continue
            try:
                record = orjson.loads(published[seq])
                if not isinstance(record, dict) or record.get("name") != self.name:
                    continue
                candidate = compile_record(record)
            except ValueError:
                continue
            if self.holder.swap(candidate):
                self.stats.applied += 1
            log.warning(
                "rule set %s: judging with version %s (#%d), the newest published version "
                "that compiles",
                self.name,
                candidate.version,
                seq,
            )
            return


def _seq_of(value: bytes) -> int | None:
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    seq = record.get("seq") if isinstance(record, dict) else None
    return seq if isinstance(seq, int) else None


class RulesWatcher:
    """Follows the rules topic for one rule-set name and feeds a :class:`RuleSetHolder`."""

    def __init__(
        self,
        settings: Settings,
        holder: RuleSetHolder,
        *,
        name: str | None = None,
        topic: str | None = None,
        on_refused: RefusedHook | None = None,
        ready: asyncio.Event | None = None,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        topic_poll: float = 5.0,
    ) -> None:
        """``name``: the rule set followed (default: the holder's, ``default`` for the shipped
        pack); ``topic``: default the deployment's rules topic; ``ready``: set once the topic
        has been read up to its end at connection (or found missing); ``topic_poll``: how
        often a missing topic is looked for again."""
        self.settings = settings
        self.holder = holder
        self.name = name or holder.current.name
        self.topic = topic or rules_topic(settings)
        self.feed = RuleFeed(holder, self.name, on_refused)
        self.ready = ready if ready is not None else asyncio.Event()
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.topic_poll = topic_poll
        self._delay = retry_initial
        self._positions: dict[int, int] = {}  # next offset to read, per partition
        self._task: asyncio.Task[None] | None = None

    @property
    def stats(self) -> WatchStats:
        return self.feed.stats

    async def start(self) -> None:
        """Run the watcher as a task of the current event loop; returns at once."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=f"rules-watcher-{self.name}")

    async def stop(self) -> None:
        """Stop following and close the Kafka clients; the holder keeps its version."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """True once caught up; False when ``timeout`` passed first (e.g. Kafka unreachable)."""
        try:
            async with asyncio.timeout(timeout):
                await self.ready.wait()
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """Follow the topic until cancelled, reconnecting after any failure."""
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError, TimeoutError) as exc:
                self._failed(exc, "Kafka unavailable")
            except Exception as exc:  # the worker must keep judging: report, then start again
                self._failed(exc, "unexpected error", trace=True)
            else:
                continue  # topic missing: looked for again after topic_poll
            delay = self._delay * random.uniform(0.8, 1.2)
            self._delay = min(self._delay * 2, self.retry_max)
            await asyncio.sleep(delay)

    def _failed(self, exc: BaseException, what: str, *, trace: bool = False) -> None:
        self.stats.failures += 1
        self.stats.connected = False
        self.stats.last_failure = f"{what}: {exc}"
        (log.exception if trace else log.warning)(
            "rules watcher for %s on %s: %s: %s; keeping version %s, retrying in about %.1fs",
            self.name,
            self.topic,
            what,
            exc,
            self.holder.current.version,
            self._delay,
        )

    async def _follow(self) -> None:
        kafka = self.settings.kafka
        async with admin_client(kafka) as admin:
            partitions = await topic_partitions(admin, self.topic)
        if not partitions:
            self._delay = self.retry_initial
            if not self.ready.is_set():
                self.feed.catch_up(())
                self.ready.set()
            await asyncio.sleep(self.topic_poll)
            return
        consumer = AIOKafkaConsumer(
            **aiokafka_options(kafka),
            client_id=f"{self.settings.app_id}-rules",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        try:
            await consumer.start()
            tps = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(tps)
            fresh = [tp for tp in tps if tp.partition not in self._positions]
            for tp in tps:
                if tp.partition in self._positions:
                    consumer.seek(tp, self._positions[tp.partition])
            if fresh:
                await consumer.seek_to_beginning(*fresh)
            if not self.stats.caught_up:
                await self._catch_up(consumer, tps)
            self.stats.connected = True
            self._delay = self.retry_initial
            while True:
                batch = await consumer.getmany(timeout_ms=1000)
                for tp, messages in batch.items():
                    for m in messages:
                        self.feed.live(m)
                        self._positions[tp.partition] = m.offset + 1
        finally:
            self.stats.connected = False
            await consumer.stop()

    async def _catch_up(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        """Read to the end offsets found now; offer the newest version; then what came after."""
        ends = await consumer.end_offsets(tps)
        backlog, after = [], []
        remaining = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, messages in batch.items():
                for m in messages:
                    (backlog if m.offset < ends[tp] else after).append(m)
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
        self.feed.catch_up(backlog)
        for m in after:
            self.feed.live(m)
        for tp in tps:  # where to resume after a reconnection
            self._positions[tp.partition] = await consumer.position(tp)
        self.ready.set()


async def follow_rules(
    settings: Settings,
    holder: RuleSetHolder,
    *,
    name: str | None = None,
    topic: str | None = None,
    on_refused: RefusedHook | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Follow the rules topic until cancelled (a :class:`RulesWatcher` as one coroutine)."""
    await RulesWatcher(
        settings, holder, name=name, topic=topic, on_refused=on_refused, ready=ready
    ).run()
