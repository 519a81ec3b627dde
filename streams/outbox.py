"""Moves committed outputs from the Redis outbox to Kafka, exactly once.

Each outbox shard (one per input partition number) has its own
transactional producer, ``{app_id}-outbox-{shard}``. A batch of outbox entries
is produced in one Kafka transaction together with a record of the last entry
id on the compacted topic ``{app_id}.outbox-positions``; only after the
transaction commits are the entries deleted from Redis. After a crash the
committed position is read back (read_committed) and anything at or before it
is dropped instead of being sent again, so output consumers reading with
``isolation.level=read_committed`` see every output once. A zombie publisher
for the same shard is fenced off by Kafka when the new one initialises its
transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2
from redis.asyncio import Redis

from creditwatch.metrics import Metrics

log = logging.getLogger(__name__)


def position_topic(app_id: str) -> str:
    """The internal compacted topic holding each shard's last published entry id."""
    return f"{app_id}.outbox-positions"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _next_id(entry_id: str) -> str:
    """The smallest stream id after ``entry_id`` (``ms-seq``)."""
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


@functools.lru_cache(maxsize=65536)
def _key_hash(key: bytes) -> int:
    """The default partitioner's hash of a key (murmur2 in Python: worth caching)."""
    return murmur2(key) & 0x7FFFFFFF


BATCH_BYTES = 512 * 1024
"""Record batch size of the outbox producers (outputs are about 1 KB each)."""


class OutboxPublisher:
    """Publishes one outbox shard; ``run`` loops until stopped."""

    def __init__(
        self,
        *,
        redis: Redis,
        outbox_key: str,
        shard: int,
        app_id: str,
        topics: dict[str, str],
        kafka_options: dict[str, Any],
        metrics: Metrics,
        batch_size: int = 1000,
        idle_wait: float = 0.05,
        linger: float = 0.1,
    ) -> None:
        self.redis = redis
        self.outbox_key = outbox_key
        self.shard = shard
        self.app_id = app_id
        self.topics = topics
        self.kafka_options = kafka_options
        self.metrics = metrics
        self.batch_size = batch_size
        self.idle_wait = idle_wait
        self.linger = linger
        self.position = "0-0"
        self.wakeup = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._stopping = False
        self._partitions: dict[str, list[int]] = {}

    @property
    def position_key(self) -> bytes:
        return f"outbox-{self.shard}".encode()

    async def start(self) -> None:
        """Fence older publishers of this shard and recover the committed position."""
        self._producer = AIOKafkaProducer(
            transactional_id=f"{self.app_id}-outbox-{self.shard}",
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
            max_batch_size=BATCH_BYTES,
            **self.kafka_options,
        )
        self._partitions.clear()  # re-read: a topic may have gained partitions
        await self._producer.start()
        self.position = await self._committed_position()
        await self._forget_published()

    async def _restart(self) -> None:
        """Start over with a fresh producer: re-fence and re-read the committed position."""
        if self._producer is not None:
            try:
                await self._producer.stop()
            except Exception as exc:  # the old producer may already be broken
                log.info("outbox shard %s: closing failed producer: %s", self.shard, exc)
            self._producer = None
        if self._stopping:
            return
        try:
            await self.start()
        except Exception as exc:  # next loop round retries
            log.warning("outbox shard %s: restart failed, will retry: %s", self.shard, exc)
            self._producer = None

    async def stop(self) -> None:
        self._stopping = True
        self.wakeup.set()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _committed_position(self) -> str:
        consumer = AIOKafkaConsumer(
            isolation_level="read_committed",
            enable_auto_commit=False,
            **self.kafka_options,
        )
        await consumer.start()
        try:
            tp = TopicPartition(position_topic(self.app_id), 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            position = "0-0"
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for msg in batch.get(tp, []):
                    if msg.key == self.position_key and msg.value is not None:
                        position = msg.value.decode()
            return position
        finally:
            await consumer.stop()

    async def _forget_published(self) -> None:
        """Delete entries a previous run published but did not get to delete."""
        if self.position != "0-0":
            await self.redis.xtrim(
                self.outbox_key, minid=_next_id(self.position), approximate=False
            )

    async def publish_once(self) -> int:
        """Publish up to one batch in one transaction; returns how many entries.

        Outputs are appended to one record batch per topic partition (placed
        like the default partitioner places a keyed message: murmur2 of the
        key), not sent one by one: ``send`` costs a future and a queue
        operation per message, which made publishing a visible part of a
        worker's CPU. Each partition's outputs keep their outbox order.
        """
        producer = self._producer
        if producer is None:
            raise RuntimeError(f"outbox shard {self.shard}: publisher is not started")
        entries = await self.redis.xrange(
            self.outbox_key, min=f"({self.position}", max="+", count=self.batch_size
        )
        if not entries:
            return 0
        last_id = _text(entries[-1][0])
        counts: Counter[str] = Counter()
        async with producer.transaction():
            open_batches: dict[tuple[str, int], Any] = {}
            for _entry_id, fields in entries:
                logical = _text(fields[b"t"])
                counts[logical] += 1
                topic = self.topics[logical]
                key = fields[b"k"] or None
                value = fields[b"v"]
                if key is None:  # no customer: any partition will do
                    await producer.send(topic, key=None, value=value)
                    continue
                partition = await self._partition_of(topic, key)
                batch = open_batches.get((topic, partition))
                if batch is None:
                    batch = open_batches[topic, partition] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:  # full
                    await producer.send_batch(batch, topic, partition=partition)
                    batch = open_batches[topic, partition] = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
            for (topic, partition), batch in open_batches.items():
                await producer.send_batch(batch, topic, partition=partition)
            await producer.send(
                position_topic(self.app_id), key=self.position_key, value=last_id.encode()
            )
        self.position = last_id
        # Everything up to last_id is published (ids only grow): trim instead of
        # naming every id.
        await self.redis.xtrim(self.outbox_key, minid=_next_id(last_id), approximate=False)
        for logical, n in counts.items():
            self.metrics.published.labels(logical).inc(n)
        return len(entries)

    async def _partition_of(self, topic: str, key: bytes) -> int:
        partitions = self._partitions.get(topic)
        if partitions is None:
            assert self._producer is not None
            partitions = sorted(await self._producer.partitions_for(topic))
            self._partitions[topic] = partitions
        return partitions[_key_hash(key) % len(partitions)]

    async def run(self, on_error: Callable[[BaseException], None] | None = None) -> None:
        """Publish until stopped; Kafka and Redis outages are retried with backoff.

        Woken by each commit of its shard (and every second without one). At
        most one transaction starts per ``linger`` seconds: every Kafka
        transaction has a fixed cost (its requests, and markers written by the
        broker), which at one transaction per processed batch took a visible
        share of the worker's and the broker's CPU. The pause counts from the
        start of the previous transaction, so outputs committed after a quiet
        spell go out at once instead of after a fixed sleep.
        """
        backoff = 0.1
        loop = asyncio.get_running_loop()
        started = loop.time() - self.linger
        while not self._stopping:
            pause = started + self.linger - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            started = loop.time()
            # Cleared before publishing, not after: a wake-up that arrives while a
            # batch is being published (new outputs committed meanwhile) must not
            # be lost, or they would wait for the idle timeout.
            self.wakeup.clear()
            try:
                sent = await self.publish_once()
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # retried: nothing is lost, the outbox keeps it
                log.warning("outbox shard %s: publish failed, retrying: %s", self.shard, exc)
                if on_error:
                    on_error(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                await self._restart()
                continue
            if sent < self.batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), timeout=self.idle_wait * 20)
