"""Diagnostic for a running Kafka broker (not a pytest test).

Run against the local stack (``bash scripts/stack.sh up``)::

    .venv/bin/python tests/integration/kafka_smoke_check.py [--bootstrap 127.0.0.1:19092]

It checks, with aiokafka, what the worker relies on:

1. the admin client can create (and delete) a topic; auto-creation is off;
2. a plain produce / consume round trip with a consumer group;
3. transactions: a transactional producer commits one transaction and aborts
   another, and a ``read_committed`` consumer sees only the committed records;
4. consume-transform-produce: consumer offsets committed inside a transaction
   (``send_offsets_to_transaction``), as Faust's exactly-once mode does.

Exit status 0 when everything passed, 1 otherwise. The bootstrap address
defaults to ``CREDITWATCH_KAFKA__BOOTSTRAP_SERVERS``, else
``127.0.0.1:$CREDITWATCH_KAFKA_PORT``, else ``127.0.0.1:19092``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType


def default_bootstrap() -> str:
    explicit = os.environ.get("CREDITWATCH_KAFKA__BOOTSTRAP_SERVERS")
    if explicit:
        return explicit
    return f"127.0.0.1:{os.environ.get('CREDITWATCH_KAFKA_PORT', '19092')}"


def step(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


async def drain(consumer: AIOKafkaConsumer, tp: TopicPartition, timeout: float) -> list[bytes]:
    """Read ``tp`` from its current position up to its end offset (the LSO when read_committed)."""
    end = (await consumer.end_offsets([tp]))[tp]
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    while await consumer.position(tp) < end:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{tp}: position {await consumer.position(tp)} never reached {end}")
        batch = await consumer.getmany(tp, timeout_ms=500)
        values.extend(record.value for record in batch.get(tp, []))
    return values


async def check(bootstrap: str, timeout: float) -> None:
    run = uuid.uuid4().hex[:8]
    topic = f"smoke.check.{run}"
    out_topic = f"smoke.check.{run}.out"
    tp = TopicPartition(topic, 0)
    out_tp = TopicPartition(out_topic, 0)

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    await admin.start()
    try:
        step(f"broker {bootstrap}: creating topics {topic}, {out_topic}")
        await admin.create_topics(
            [
                NewTopic(topic, num_partitions=1, replication_factor=1),
                NewTopic(out_topic, num_partitions=1, replication_factor=1),
            ]
        )
        listed = await admin.list_topics()
        assert topic in listed and out_topic in listed, f"created topics not listed: {listed}"
        cluster = await admin.describe_cluster()
        brokers = cluster.get("brokers", [])
        step(f"cluster {cluster.get('cluster_id')}: {len(brokers)} broker(s)")
        if brokers:
            node = str(brokers[0]["node_id"])
            resource = ConfigResource(ConfigResourceType.BROKER, node)
            response = (await admin.describe_configs([resource]))[0]
            configs = {c[0]: c[1] for c in response.resources[0][4]}
            step(
                "broker config: auto.create.topics.enable="
                f"{configs.get('auto.create.topics.enable')}, "
                f"transaction.state.log.min.isr={configs.get('transaction.state.log.min.isr')}"
            )

        # 1. plain round trip, with a consumer group committing offsets.
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            meta = await producer.send_and_wait(topic, b"plain", key=b"customer-1")
            step(f"produced plain record at {meta.topic}[{meta.partition}]@{meta.offset}")
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=f"smoke-{run}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            got = await drain(consumer, tp, timeout)
            assert got == [b"plain"], f"plain round trip: expected [b'plain'], got {got}"
            await consumer.commit()
            committed = await consumer.committed(tp)
            assert committed == 1, f"group offset commit: expected 1, got {committed}"
            step("consumed it back and committed the group offset")
        finally:
            await consumer.stop()

        # 2. transactions: one committed, one aborted.
        txn = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"smoke-txn-{run}")
        await txn.start()
        try:
            async with txn.transaction():
                await txn.send(topic, b"committed", key=b"customer-1")
            step("transaction 1 committed")
            await txn.begin_transaction()
            await txn.send(topic, b"aborted", key=b"customer-1")
            await txn.flush()
            await txn.abort_transaction()
            step("transaction 2 aborted")
        finally:
            await txn.stop()

        for isolation, expected in (
            ("read_committed", [b"plain", b"committed"]),
            ("read_uncommitted", [b"plain", b"committed", b"aborted"]),
        ):
            reader = AIOKafkaConsumer(
                bootstrap_servers=bootstrap,
                isolation_level=isolation,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
            )
            await reader.start()
            try:
                reader.assign([tp])
                await reader.seek_to_beginning(tp)
                got = await drain(reader, tp, timeout)
            finally:
                await reader.stop()
            assert got == expected, f"{isolation}: expected {expected}, got {got}"
            step(f"{isolation} consumer saw {[v.decode() for v in got]}")

        # 3. consume-transform-produce with offsets committed in the transaction.
        group = f"smoke-eos-{run}"
        eos = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"smoke-eos-{run}")
        await eos.start()
        try:
            async with eos.transaction():
                await eos.send(out_topic, b"transformed", key=b"customer-1")
                await eos.send_offsets_to_transaction({tp: 2}, group)
        finally:
            await eos.stop()
        checker = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await checker.start()
        try:
            # The commit markers reach __consumer_offsets just after EndTxn returns, and
            # aiokafka's OffsetFetch does not ask for stable offsets: poll briefly.
            deadline = time.monotonic() + timeout
            while (committed := await checker.committed(tp)) != 2:
                assert time.monotonic() < deadline, (
                    f"offset committed in transaction: expected 2, got {committed}"
                )
                await asyncio.sleep(0.2)
            checker.assign([out_tp])
            await checker.seek_to_beginning(out_tp)
            got = await drain(checker, out_tp, timeout)
            assert got == [b"transformed"], f"transactional output: got {got}"
        finally:
            await checker.stop()
        step("send_offsets_to_transaction: output and group offset committed atomically")
    finally:
        try:
            await admin.delete_topics([topic, out_topic])
            step("deleted the smoke-check topics")
        finally:
            await admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=default_bootstrap(), help="host:port[,host:port]")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per step")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        asyncio.run(asyncio.wait_for(check(args.bootstrap, args.timeout), args.timeout * 6))
    except Exception as exc:  # a diagnostic: report whatever went wrong, plainly
        print(f"SMOKE CHECK FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"SMOKE CHECK PASSED in {time.monotonic() - started:.1f}s against {args.bootstrap}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
