"""What the Faust agents, timers and views of one worker share.

Built by the composition root (:mod:`streams.bootstrap`) and handed to the
agents (:mod:`streams.agents`); nothing here is created at import time. It
owns the retry policy for outages: an input is retried until its step is
committed to Redis, so an outage delays processing but never drops an event,
and Kafka offsets only move on once the step is durable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from config.settings import Settings
from creditwatch.metrics import Metrics
from risk.processor import Processor, Result, Source
from risk.redis_store import RedisStateStore
from streams.judging import JudgeServices
from streams.outbox import OutboxPublisher

log = logging.getLogger(__name__)

RETRYABLE = (RedisError, ConnectionError, OSError, TimeoutError)


@dataclass
class WorkerRuntime:
    """Shared services of one worker process."""

    settings: Settings
    redis: Redis
    store: RedisStateStore
    processor: Processor
    metrics: Metrics
    kafka_options: dict[str, Any]
    judging: JudgeServices | None = None
    publishers: dict[int, OutboxPublisher] = field(default_factory=dict)
    publisher_tasks: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    assigned: set[int] = field(default_factory=set)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    stopping: bool = False

    # -- processing -----------------------------------------------------------

    async def handle(
        self, raw: bytes, topic: str, partition: int, offset: int, *, internal: bool = False
    ) -> Result:
        """Process one Kafka message, retrying outages until it is committed."""
        await self.until_ready()
        backoff = 0.05
        while True:
            try:
                result = await self.processor.handle(
                    raw, Source(topic, partition, offset), internal=internal
                )
                break
            except RETRYABLE as exc:
                log.warning("state store unavailable, retrying in %.2fs: %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        self.wake(partition)
        return result

    async def handle_batch(
        self,
        messages: Sequence[tuple[bytes, str, int, int]],
        *,
        internal: bool = False,
    ) -> list[Result]:
        """Process a batch of Kafka messages ``(value, topic, partition, offset)`` in order.

        Outages are retried until the whole batch is committed: the part a
        failed attempt had already committed is recognised as already applied
        on the next one, so retrying the batch is safe.
        """
        decoded = await self.decode_batch(messages, internal=internal)
        valid = [i for i, item in enumerate(decoded) if item is not None]
        results: list[Result] = [Result("dead_letter")] * len(messages)
        applied = await self.apply_decoded([decoded[i] for i in valid])  # type: ignore[misc]
        for i, result in zip(valid, applied, strict=True):
            results[i] = result
        return results

    async def decode_batch(
        self,
        messages: Sequence[tuple[bytes, str, int, int]],
        *,
        internal: bool = False,
    ) -> list[tuple[Any, bytes, Source] | None]:
        """Decode messages; an invalid one is dead-lettered (retried through outages) -> None."""
        await self.until_ready()
        batch = [
            (raw, Source(topic, partition, offset)) for raw, topic, partition, offset in messages
        ]
        backoff = 0.05
        while True:
            try:  # a dead letter already written is recognised by its marker on a retry
                return await self.processor.decode_batch(batch, internal=internal)
            except RETRYABLE as exc:
                log.warning("state store unavailable, retrying in %.2fs: %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def apply_decoded(self, decoded: Sequence[tuple[Any, bytes, Source]]) -> list[Result]:
        """Apply decoded events, retrying outages until the whole lot is committed."""
        if not decoded:
            return []
        await self.until_ready()
        backoff = 0.05
        while True:
            try:
                results = await self.processor.apply_decoded(decoded)
                break
            except RETRYABLE as exc:
                log.warning("state store unavailable, retrying in %.2fs: %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        # Producers key by customer, so a customer's outbox shard is the partition
        # its events arrive on; any other shard is published at its idle wake-up.
        for shard in {source.partition for _event, _raw, source in decoded}:
            if shard is not None:
                self.wake(shard)
        return results

    async def until_ready(self) -> None:
        """No event is judged before the models are restored and the rules topic is read."""
        if self.judging is not None and not self.judging.ready.is_set():
            await self.judging.ready.wait()

    def wake(self, shard: int) -> None:
        publisher = self.publishers.get(shard)
        if publisher is not None:
            publisher.wakeup.set()

    def shard_of(self, customer_id: str) -> int:
        return self.processor.shard_of(customer_id)

    async def tick(self) -> int:
        """Advance arrears of this worker's customers to their shard's watermark."""
        if not self.assigned:
            return 0
        await self.until_ready()
        assigned = set(self.assigned)
        to = datetime.now(UTC) if self.settings.dpd_clock == "wall" else None
        out = await self.processor.tick(to, owns=lambda c: self.shard_of(c) in assigned)
        for shard in assigned:
            self.wake(shard)
        return len(out.alerts)

    # -- outbox publishers ----------------------------------------------------

    async def on_assigned(self, partitions: set[int]) -> None:
        """Publish the outbox shards of the partitions this worker now owns."""
        self.assigned = set(partitions)
        for shard in sorted(self.assigned - set(self.publishers)):
            publisher = OutboxPublisher(
                redis=self.redis,
                outbox_key=self.store.outbox_key(shard),
                shard=shard,
                app_id=self.settings.app_id,
                topics=self.settings.topics,
                kafka_options=self.kafka_options,
                metrics=self.metrics,
            )
            await publisher.start()
            self.publishers[shard] = publisher
            self.publisher_tasks[shard] = asyncio.create_task(
                publisher.run(), name=f"outbox-{shard}"
            )
        for shard in sorted(set(self.publishers) - self.assigned):
            await self._stop_publisher(shard)

    async def _stop_publisher(self, shard: int) -> None:
        publisher = self.publishers.pop(shard)
        task = self.publisher_tasks.pop(shard)
        await publisher.stop()
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception) as exc:  # stopping: report, do not raise
            if not isinstance(exc, asyncio.CancelledError):
                log.warning("outbox shard %s stopped with %s", shard, exc)

    async def drain_outbox(self, timeout: float = 10.0) -> None:
        """On shutdown: publish what is committed before the producers close."""
        deadline = asyncio.get_running_loop().time() + timeout
        for shard, publisher in list(self.publishers.items()):
            while asyncio.get_running_loop().time() < deadline:
                try:
                    if await publisher.publish_once() == 0:
                        break
                except Exception as exc:  # left in the outbox for the next start
                    log.warning("outbox shard %s not drained at shutdown: %s", shard, exc)
                    break

    async def stop(self) -> None:
        self.stopping = True
        for shard in list(self.publishers):
            await self._stop_publisher(shard)

    async def outbox_depth(self) -> int:
        total = 0
        for shard in range(self.settings.kafka.topic_partitions):
            total += await self.redis.xlen(self.store.outbox_key(shard))
        self.metrics.outbox_depth.set(total)
        return total
