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
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from creditwatch.metrics import Metrics

log = logging.getLogger(__name__)


def position_topic(app_id: str) -> str:
    """The internal compacted topic holding each shard's last published entry id."""
    return f"{app_id}.outbox-positions"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
        batch_size: int = 500,
        idle_wait: float = 0.05,
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
        self.position = "0-0"
        self.wakeup = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._stopping = False

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
            **self.kafka_options,
        )
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
        while True:
            entries = await self.redis.xrange(
                self.outbox_key, min="-", max=self.position, count=self.batch_size
            )
            if not entries:
                return
            await self.redis.xdel(self.outbox_key, *[eid for eid, _ in entries])

    async def publish_once(self) -> int:
        """Publish up to one batch in one transaction; returns how many entries."""
        if self._producer is None:
            raise RuntimeError(f"outbox shard {self.shard}: publisher is not started")
        entries = await self.redis.xrange(
            self.outbox_key, min=f"({self.position}", max="+", count=self.batch_size
        )
        if not entries:
            return 0
        last_id = _text(entries[-1][0])
        async with self._producer.transaction():
            for _entry_id, fields in entries:
                topic = self.topics[_text(fields[b"t"])]
                key = fields[b"k"] or None
                await self._producer.send(topic, key=key, value=fields[b"v"])
            await self._producer.send(
                position_topic(self.app_id), key=self.position_key, value=last_id.encode()
            )
        self.position = last_id
        await self.redis.xdel(self.outbox_key, *[eid for eid, _ in entries])
        for _eid, fields in entries:
            self.metrics.published.labels(_text(fields[b"t"])).inc()
        return len(entries)

    async def run(self, on_error: Callable[[BaseException], None] | None = None) -> None:
        """Publish until stopped; Kafka and Redis outages are retried with backoff."""
        backoff = 0.1
        while not self._stopping:
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
                self.wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), timeout=self.idle_wait * 20)
