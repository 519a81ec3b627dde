"""Fixtures that start a real Kafka broker and a real Redis for the integration tests.

The session starts its own broker and Redis on free loopback ports, in a
temporary run directory, with the project's scripts (the same ones the README
uses), and stops them at the end. Workers are started as real
``creditwatch worker`` processes. Each test uses its own topic names, Redis
key prefix and consumer group, so tests cannot see each other's data.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis import Redis

from schemas.topics import DEFAULT_TOPICS, TOPIC_BY_EVENT_TYPE

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    bootstrap: str
    redis_url: str
    env: dict[str, str]


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    run_dir = tmp_path_factory.mktemp("stack")
    kafka_port, controller_port, redis_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "CREDITWATCH_RUN_DIR": str(run_dir),
        "CREDITWATCH_KAFKA_PORT": str(kafka_port),
        "CREDITWATCH_KAFKA_CONTROLLER_PORT": str(controller_port),
        "CREDITWATCH_REDIS_PORT": str(redis_port),
    }
    subprocess.run(["bash", str(ROOT / "scripts/redis.sh"), "start"], env=env, check=True)
    try:
        subprocess.run(["bash", str(ROOT / "scripts/kafka.sh"), "start"], env=env, check=True)
        yield Stack(
            bootstrap=f"127.0.0.1:{kafka_port}",
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            env=env,
        )
    finally:
        subprocess.run(["bash", str(ROOT / "scripts/kafka.sh"), "stop"], env=env, check=False)
        subprocess.run(["bash", str(ROOT / "scripts/redis.sh"), "stop"], env=env, check=False)


@dataclass
class Deployment:
    """One test's isolated slice of the stack: topics, key prefix, app id."""

    stack: Stack
    name: str
    topics: dict[str, str]
    prefix: str
    tmp: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self, http_port: int) -> dict[str, str]:
        return {
            **self.stack.env,
            "CREDITWATCH_APP_ID": self.name,
            "CREDITWATCH_KAFKA__BOOTSTRAP_SERVERS": self.stack.bootstrap,
            "CREDITWATCH_KAFKA__TOPIC_PARTITIONS": "2",
            "CREDITWATCH_REDIS__URL": self.stack.redis_url,
            "CREDITWATCH_REDIS__KEY_PREFIX": self.prefix,
            "CREDITWATCH_HTTP_PORT": str(http_port),
            "CREDITWATCH_DATA_DIR": str(self.tmp / "worker"),
            "CREDITWATCH_DPD_TICK_SECONDS": "0.5",
            "CREDITWATCH_COMMIT_INTERVAL_SECONDS": "0.2",
            "CREDITWATCH_TOPICS": json.dumps(self.topics),
            "CREDITWATCH_LOG_LEVEL": "INFO",
            "CREDITWATCH_KAFKA__SESSION_TIMEOUT_SECONDS": "6",
            "CREDITWATCH_KAFKA__HEARTBEAT_INTERVAL_SECONDS": "1",
        }

    def start_worker(
        self, timeout: float = 90.0, **overrides: str
    ) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        log = (self.tmp / f"worker-{len(self.workers)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "creditwatch", "worker"],
            env={**self.env(port), **overrides},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.workers.append(proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"worker exited early, see {log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    body = json.loads(r.read())
                    if body["status"] == "ok" and body["assigned_partitions"]:
                        return proc, port
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"worker not ready within {timeout}s, see {log.name}")

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def redis(self) -> Redis:
        return Redis.from_url(self.stack.redis_url)

    def produce(self, events: list[Any]) -> list[tuple[str, int, int]]:
        """Produce to this deployment's input topics; (topic, partition, offset) each."""
        return asyncio.run(produce(self.stack.bootstrap, self.topics, events))

    def consume(self, logical: str, **kwargs: Any) -> list[dict[str, Any]]:
        """Everything committed on one of this deployment's output topics."""
        return asyncio.run(consume_all(self.stack.bootstrap, self.topics[logical], **kwargs))


@pytest.fixture
def deployment(stack: Stack, tmp_path: Path) -> Iterator[Deployment]:
    name = f"cwt{uuid.uuid4().hex[:8]}"
    topics = {logical: f"{name}.{topic}" for logical, topic in DEFAULT_TOPICS.items()}
    dep = Deployment(stack=stack, name=name, topics=topics, prefix=name, tmp=tmp_path)
    try:
        yield dep
    finally:
        dep.stop_workers()


async def produce(
    bootstrap: str, topics: dict[str, str], events: list[Any]
) -> list[tuple[str, int, int]]:
    """Send events (wire dicts routed by type, or raw (logical topic, key, bytes)).

    Returns (topic, partition, offset) of each message, in order.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    placed: list[tuple[str, int, int]] = []
    try:
        for item in events:
            if isinstance(item, tuple):
                logical, key, value = item
            else:
                logical = TOPIC_BY_EVENT_TYPE[item["type"]]
                key, value = item["customer_id"], orjson.dumps(item)
            meta = await producer.send_and_wait(topics[logical], key=key.encode(), value=value)
            placed.append((meta.topic, meta.partition, meta.offset))
    finally:
        await producer.stop()
    return placed


async def consume_all(
    bootstrap: str,
    topic: str,
    *,
    expect: int | None = None,
    settle: float = 3.0,
    timeout: float = 60.0,
) -> list[dict[str, Any]]:
    """Read a topic from the beginning with read_committed until quiet (or ``expect`` seen)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_new = loop.time()
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    out.append(orjson.loads(rec.value))
                    last_new = loop.time()
            if expect is not None and len(out) >= expect and loop.time() - last_new > 1.0:
                break
            if expect is None and out and loop.time() - last_new > settle:
                break
        return out
    finally:
        await consumer.stop()


@pytest.fixture
def smtp() -> Iterator[Any]:
    """A real SMTP server on a free loopback port, with an inbox the test reads."""
    from tests.integration.smtp_server import SmtpServer  # it imports free_port from here

    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
