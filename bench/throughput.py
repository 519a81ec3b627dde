"""The worker against the physical limit of this machine, in one run on the local Kafka and Redis.

Run: ``.venv/bin/python -m bench.throughput [--events 200000] [--rate 2000]``
(``--help`` for the rest; ``--events 20000 --latency-seconds 10`` is a quick run).
It starts its own Kafka and Redis on free loopback ports with the project's
scripts (as the integration tests do) and stops them at the end; ``--bootstrap``
with ``--redis`` uses a running stack instead. ``--profile`` samples the single
worker with py-spy while it works the backlog and adds its top functions to
the results; ``--skip latency,pair,replay`` leaves phases out (a quicker
comparison of two revisions on the backlog alone).

Why each figure is measured the way it is:

1. **produce** -- N events of a seeded simulated book (``creditwatch.simulate``,
   the realistic mix: mostly card/ATM transactions, instalments, repayments,
   failures, loan and customer events) are produced to the input topics of a
   fresh topic set, so the run never sees anyone else's data.
2. **limit** -- a bare ``AIOKafkaConsumer`` in this one Python process reads
   the same topics from the beginning and ``orjson``-decodes every value.
   Nothing in Python can consume these events faster, so it is the yardstick
   the worker is judged against (best of two passes, the first warms the
   broker's page cache).
3. **product** -- one ``creditwatch worker`` process (a subprocess, exactly as
   deployed, everything on: validation, Redis state, outbox, transactional
   publishing) consumes the backlog. The rate is taken from the worker's own
   ``/metrics`` (``creditwatch_events_total`` of the input topics), from the
   first event processed to the last, and also to the moment the Redis outbox
   is drained (every output on Kafka), which is the figure the ratio uses.
   The worker's CPU seconds per event are recorded too: on a machine shared
   with other work they move far less than the rate does.
4. **latency** -- the same worker then gets a steady offered load (the book's
   continuation, in event time) with *probes* mixed in: pairs of
   ``repayment.failed`` on a fresh loan, which deterministically fire
   ``repeated_failed_collections`` with the second event's id in
   ``evidence_event_ids``. Latency is from the moment the second event is
   handed to the producer to the moment the warning is read from
   ``credit.risk-alerts.v1`` with ``read_committed`` (the same process and
   clock does both). When the worker cannot sustain the requested rate a
   second phase runs at 80 % of what it sustained.
5. **memory** -- the worker's peak RSS (``VmHWM`` in ``/proc``) and Redis
   memory per customer (``MEMORY USAGE`` of the run's customer keys and
   indexes, and the ``used_memory`` delta).
6. **two workers** -- two worker processes with a fresh consumer group,
   key prefix and output topics on the same input backlog, measured over
   ``--pair-window`` seconds of it (the speedup compares processing rates).

Finally the warnings the single worker published are compared with those of
``creditwatch replay`` on exactly the events it was given (closing events
move every shard's servicing watermark to the last instant, the instant
replay advances everyone to). Differences are reported, not hidden, and
again without what the detectors' shared models decide (see
``_without_detectors``).

Results: a table on stdout and ``bench/results/throughput-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from config.settings import Settings
from creditwatch.simulate.book import BookConfig, dumps_event, iter_book
from schemas.topics import DEFAULT_TOPICS, INPUT_TOPICS, TOPIC_BY_EVENT_TYPE
from streams.outbox import position_topic
from streams.partitioning import partition_for
from streams.topic_admin import ensure_topics

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PROBE_CODE = "repeated_failed_collections"
SKIPPABLE = {"latency", "pair", "replay"}
BATCH_LINE = re.compile(r"^creditwatch_batch_events_(sum|count) ([0-9.e+-]+)$")
FORCED_LINE = re.compile(
    r'^creditwatch_alignment_forced_releases_total\{reason="([^"]*)"\} ([0-9.e+-]+)$'
)
METRIC_LINE = re.compile(r'^creditwatch_events_total\{[^}]*topic="([^"]*)"[^}]*\} ([0-9.e+-]+)$')


# --------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    """Progress on stderr, so stdout carries only the table."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (no interpolation: the value some probe really saw)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def system_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, for a utilisation figure."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def kafka_version() -> str | None:
    """The broker's version, from the classpath of a running broker on this machine."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "kafka.Kafka" in cmdline:
            m = re.search(r"kafka[_-](?:\d+\.\d+-)?(\d+\.\d+\.\d+)/libs", cmdline)
            if m:
                return m.group(1)
    return os.environ.get("CREDITWATCH_KAFKA_VERSION")


def machine(redis_version: str | None) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    versions = {}
    for dist in ("faust-streaming", "aiokafka", "redis", "orjson", "pydantic"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "kafka": kafka_version(),
        "redis_server": redis_version,
        "libraries": versions,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def git_revision() -> dict[str, Any]:
    """Which code was measured (read-only git queries)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.split("\n")
        return {"head": head, "modified_files": sorted(x[3:] for x in dirty if x.strip())}
    except OSError:
        return {}


# --------------------------------------------------------------------------- the stack


@contextlib.contextmanager
def local_stack(keep: bool) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Kafka and Redis of the run's own, on free loopback ports, with the project's scripts.

    The same scripts and the same way as ``tests/integration/conftest.py``:
    a temporary run directory, so nothing of another stack on this machine is
    touched; both are stopped at the end. Yields (bootstrap, Redis URL, facts).
    """
    run_dir = Path(tempfile.mkdtemp(prefix="cwbench-stack-"))
    kafka_port, controller_port, redis_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "CREDITWATCH_RUN_DIR": str(run_dir),
        "CREDITWATCH_KAFKA_PORT": str(kafka_port),
        "CREDITWATCH_KAFKA_CONTROLLER_PORT": str(controller_port),
        "CREDITWATCH_REDIS_PORT": str(redis_port),
    }
    scripts = ROOT / "scripts"
    log(f"starting Redis on 127.0.0.1:{redis_port} and Kafka on 127.0.0.1:{kafka_port}")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT}
    subprocess.run(["bash", str(scripts / "redis.sh"), "start"], env=env, check=True, **quiet)
    try:
        subprocess.run(["bash", str(scripts / "kafka.sh"), "start"], env=env, check=True, **quiet)
        yield (
            f"127.0.0.1:{kafka_port}",
            f"redis://127.0.0.1:{redis_port}/0",
            {"started_by_the_benchmark": True, "run_dir": str(run_dir)},
        )
    finally:
        if not keep:
            log("stopping Kafka and Redis")
            subprocess.run(["bash", str(scripts / "kafka.sh"), "stop"], env=env, **quiet)
            subprocess.run(["bash", str(scripts / "redis.sh"), "stop"], env=env, **quiet)


# --------------------------------------------------------------------------- one run's slice


@dataclass
class Space:
    """One isolated slice of the stack: topic names, key prefix, consumer group."""

    name: str
    topics: dict[str, str]
    partitions: int

    @classmethod
    def fresh(cls, partitions: int, inputs_from: Space | None = None) -> Space:
        name = f"cwbench{uuid.uuid4().hex[:8]}"
        topics = {logical: f"{name}.{topic}" for logical, topic in DEFAULT_TOPICS.items()}
        if inputs_from is not None:  # read the same backlog, write elsewhere
            for logical in INPUT_TOPICS:
                topics[logical] = inputs_from.topics[logical]
        return cls(name=name, topics=topics, partitions=partitions)

    def settings(self, bootstrap: str, redis_url: str) -> Settings:
        return Settings(
            app_id=self.name,
            topics=self.topics,
            kafka={"bootstrap_servers": bootstrap, "topic_partitions": self.partitions},
            redis={"url": redis_url, "key_prefix": self.name},
        )

    @property
    def input_names(self) -> set[str]:
        return {self.topics[t] for t in INPUT_TOPICS}

    def own_topics(self) -> list[str]:
        """Topics this slice created (inputs only if they are its own)."""
        own = [t for t in self.topics.values() if t.startswith(f"{self.name}.")]
        return [*own, position_topic(self.name)]


class Worker:
    """One ``creditwatch worker`` subprocess of a slice."""

    def __init__(self, space: Space, args: argparse.Namespace, tmp: Path, label: str) -> None:
        self.space = space
        self.port = free_port()
        self.log_path = tmp / f"{label}.log"
        env = {
            **os.environ,
            "CREDITWATCH_APP_ID": space.name,
            "CREDITWATCH_KAFKA__BOOTSTRAP_SERVERS": args.bootstrap,
            "CREDITWATCH_KAFKA__TOPIC_PARTITIONS": str(space.partitions),
            "CREDITWATCH_REDIS__URL": args.redis,
            "CREDITWATCH_REDIS__KEY_PREFIX": space.name,
            "CREDITWATCH_HTTP_PORT": str(self.port),
            "CREDITWATCH_DATA_DIR": str(tmp / f"{label}-data"),
            "CREDITWATCH_DPD_TICK_SECONDS": str(args.tick_seconds),
            "CREDITWATCH_TOPICS": json.dumps(space.topics),
            "CREDITWATCH_LOG_LEVEL": "INFO",
        }
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "creditwatch", "worker"],
                env=env,
                cwd=args.worker_root,  # `-m` imports from here first
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
            return bytes(resp.read())

    def health(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self._get("/healthz")))
        except OSError:
            return None
        except ValueError:
            return None

    def processed(self) -> int:
        """Input events the worker has dealt with (applied, duplicate or dead-lettered)."""
        try:
            text = self._get("/metrics").decode()
        except OSError:
            return -1
        total = 0.0
        names = self.space.input_names
        for line in text.splitlines():
            m = METRIC_LINE.match(line)
            if m and m.group(1) in names:
                total += float(m.group(2))
        return int(total)

    def batches(self) -> dict[str, Any]:
        """How many events the agents handed the processor at once (the batch histogram)."""
        try:
            text = self._get("/metrics").decode()
        except OSError:
            return {}
        values = {}
        for line in text.splitlines():
            m = BATCH_LINE.match(line)
            if m:
                values[m.group(1)] = float(m.group(2))
        count = values.get("count", 0.0)
        return {
            "batches": int(count),
            "mean_events": round(values.get("sum", 0.0) / count, 1) if count else None,
        }

    def alignment(self) -> dict[str, Any]:
        """The event-time alignment's counters: events let go out of turn, by reason."""
        try:
            text = self._get("/metrics").decode()
        except OSError:
            return {}
        forced: dict[str, int] = {}
        for line in text.splitlines():
            m = FORCED_LINE.match(line)
            if m:
                forced[m.group(1)] = int(float(m.group(2)))
        return {"released_out_of_turn": forced}

    def assigned(self) -> list[int]:
        body = self.health()
        return list(body.get("assigned_partitions") or []) if body else []

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early, see {self.log_path}")
            if self.health() is not None:
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker not answering within {timeout}s, see {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------------- the book


def probe_pair(run: str, i: int, occurred_at: str) -> list[dict[str, Any]]:
    """Two failed collections on a fresh loan: the second always raises one warning."""
    customer = f"P{run}-{i}"
    common = {
        "type": "repayment.failed",
        "customer_id": customer,
        "occurred_at": occurred_at,
        "loan_id": "LP1",
        "amount": "100.00",
        "currency": "CNY",
        "reason": "insufficient_funds",
    }
    return [
        {"event_id": f"{customer}-a", **common},
        {"event_id": f"{customer}-b", **common},
    ]


def closing_events(run: str, partitions: int, at: str) -> list[dict[str, Any]]:
    """One servicing event per shard at the last instant: every watermark reaches it."""
    out = []
    for shard in range(partitions):
        customer = next(
            f"Z{run}-{i}"
            for i in range(100_000)
            if partition_for(f"Z{run}-{i}", partitions) == shard
        )
        out.append(
            {
                "event_id": f"close-{run}-{shard}",
                "type": "installment.due",
                "customer_id": customer,
                "occurred_at": at,
                "loan_id": "LZ",
                "installment_no": 1,
                "due_date": at[:10],
                "amount_due": "1.00",
                "currency": "CNY",
            }
        )
    return out


def simulated(events: int, seed: int) -> tuple[list[dict[str, Any]], int]:
    """At least ``events`` events of one book (its first ones, in time order)."""
    sample = sum(1 for _ in iter_book(BookConfig(seed=seed, customers=50, months=6)))
    customers = max(10, math.ceil(events / (sample / 50) * 1.15))
    while True:
        book: list[dict[str, Any]] = []
        for ev in iter_book(BookConfig(seed=seed, customers=customers, months=6)):
            book.append(ev)
            if len(book) >= events:
                return book, customers
        customers = math.ceil(customers * 1.3)


async def produce(
    bootstrap: str, topics: dict[str, str], events: Iterable[dict[str, Any]]
) -> tuple[int, float]:
    """Send as fast as the producer goes; returns (count, seconds)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    sent = 0
    started = time.perf_counter()
    try:
        pending: list[asyncio.Future[Any]] = []
        for ev in events:
            pending.append(
                await producer.send(
                    topics[TOPIC_BY_EVENT_TYPE[ev["type"]]],
                    value=dumps_event(ev),
                    key=ev["customer_id"].encode(),
                )
            )
            sent += 1
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await producer.flush()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent, time.perf_counter() - started


# --------------------------------------------------------------------------- (2) the limit


async def bare_consumer(bootstrap: str, topics: list[str], expected: int) -> dict[str, Any]:
    """Read and JSON-decode every message of ``topics`` from the beginning."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(consumer.partitions_for_topic(t) or await _partitions(consumer, t))
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        count = 0
        nbytes = 0
        loads = orjson.loads
        started = time.perf_counter()
        while count < expected:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for rec in records:
                    loads(rec.value)
                    nbytes += len(rec.value)
                count += len(records)
        seconds = time.perf_counter() - started
    finally:
        await consumer.stop()
    return {
        "events": count,
        "seconds": round(seconds, 3),
        "events_per_s": round(count / seconds),
        "mib_per_s": round(nbytes / seconds / 2**20, 1),
    }


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        await consumer._client.force_metadata_update()
        found = consumer.partitions_for_topic(topic)
        if found:
            return set(found)
        await asyncio.sleep(0.1)
    raise RuntimeError(f"no partitions for {topic}")


# --------------------------------------------------------------------------- (3) the product


async def outbox_depth(redis: Redis, space: Space) -> int:
    return sum([await redis.xlen(f"{space.name}:ob:{s}") for s in range(space.partitions)])


async def consume_backlog(
    workers: list[Worker],
    redis: Redis,
    expected: int,
    timeout: float,
    poll: float = 0.5,
    window: float | None = None,
) -> dict[str, Any]:
    """Poll the workers' counters until ``expected`` events are processed and the outbox is empty.

    Measures from the first poll that sees every worker assigned and some
    event processed, so start-up and the first rebalance are not counted. Polled
    every half second: each poll is a /metrics request the worker answers with
    its own CPU.
    With ``window``, measures only that many seconds of processing (the rate
    of a backlog that is not worked to its end).
    """
    space = workers[0].space
    deadline = time.monotonic() + timeout
    first: tuple[float, int] | None = None
    last: float | None = None
    samples: list[tuple[float, int]] = []
    cpu0: dict[int, float] = {}
    busy0 = system_busy()
    redis_cpu0 = await redis_cpu(redis)
    while time.monotonic() < deadline:
        for w in workers:
            if w.proc.poll() is not None:
                raise RuntimeError(f"worker exited, see {w.log_path}")
        now = time.monotonic()
        counts = [w.processed() for w in workers]
        done = sum(max(c, 0) for c in counts)
        samples.append((now, done))
        if first is None and done > 0 and all(w.assigned() for w in workers):
            first = (now, done)
            cpu0 = {w.pid: cpu_seconds(w.pid) for w in workers}
            busy0 = system_busy()
            redis_cpu0 = await redis_cpu(redis)
        windowed = window is not None and first is not None and now - first[0] >= window
        if windowed and last is None:
            expected = done  # what the window saw
        if first is not None and done >= expected and last is None:
            last = now
            cpu1 = {w.pid: cpu_seconds(w.pid) for w in workers}
            busy1 = system_busy()
            redis_cpu1 = await redis_cpu(redis)
        if last is not None and (windowed or await outbox_depth(redis, space) == 0):
            drained = time.monotonic()
            break
        await asyncio.sleep(poll)
    else:
        raise RuntimeError(f"backlog not consumed within {timeout}s ({samples[-1][1]}/{expected})")
    assert first is not None and last is not None
    t0, c0 = first
    processing = last - t0
    through_drain = drained - t0
    return {
        "events": expected,
        "measured_events": expected - c0,
        "measured_share": round((expected - c0) / expected, 2),  # the rest: before all joined
        "seconds_to_last_event": round(processing, 2),
        "seconds_to_outbox_drained": round(through_drain, 2),
        "events_per_s": round((expected - c0) / processing),
        "events_per_s_to_drained": round((expected - c0) / through_drain),
        "worker_cpu_percent": [
            round(100 * (cpu1[w.pid] - cpu0[w.pid]) / processing) for w in workers
        ],
        "machine_cpu_percent": round(100 * (busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1)),
        "redis_cpu_percent": round(100 * (redis_cpu1 - redis_cpu0) / processing),
        # CPU per event is what other work on the machine changes least (the rate is
        # what the worker got of a shared machine; this is what it needed).
        "worker_cpu_ms_per_event": round(
            1000 * sum(cpu1[w.pid] - cpu0[w.pid] for w in workers) / max(expected - c0, 1), 3
        ),
    }


async def redis_cpu(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


# --------------------------------------------------------------------------- profile


class Profiler:
    """``py-spy record`` attached to a worker: where its CPU goes while it works a backlog."""

    def __init__(self, pid: int, out: Path, rate: int = 250) -> None:
        self.out = out
        exe = Path(sys.executable).with_name("py-spy")
        self.proc = subprocess.Popen(
            [
                str(exe if exe.exists() else "py-spy"),
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--output",
                str(out),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def profile_summary(raw: Path, top: int = 25) -> dict[str, Any]:
    """Top functions by own samples and by samples with them on the stack (py-spy raw)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n

    def rows(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": f, "percent": round(100 * n / max(total, 1), 1)}
            for f, n in counter.most_common(top)
        ]

    return {"samples": total, "own": rows(own), "inclusive": rows(inclusive), "raw": str(raw)}


# --------------------------------------------------------------------------- (4) latency


async def offered_load(
    worker: Worker,
    space: Space,
    bootstrap: str,
    background: list[dict[str, Any]],
    rate: float,
    seconds: float,
    probes_per_s: float,
    probe_base: int,
    sent_log: list[dict[str, Any]],
) -> dict[str, Any]:
    """Send ``background`` at ``rate`` events/s with probes mixed in; measure probe latency."""
    alerts_topic = space.topics["risk_alerts"]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        fetch_max_wait_ms=20,
    )
    await consumer.start()
    tps = [TopicPartition(alerts_topic, p) for p in range(space.partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=1
    )
    await producer.start()
    sent_at: dict[str, tuple[float, float]] = {}  # event id -> (perf counter, wall clock)
    latencies: list[float] = []
    to_publish: list[float] = []  # until the outbox producer sent the warning (its timestamp)
    stop = asyncio.Event()

    async def read_alerts() -> None:
        while not stop.is_set() or sent_at:
            batch = await consumer.getmany(timeout_ms=50)
            now = time.perf_counter()
            for records in batch.values():
                for rec in records:
                    alert = orjson.loads(rec.value)
                    if alert.get("code") != PROBE_CODE:
                        continue
                    for eid in alert.get("evidence_event_ids", []):
                        t = sent_at.pop(eid, None)
                        if t is not None:
                            latencies.append(now - t[0])
                            to_publish.append(rec.timestamp / 1000 - t[1])

    reader = asyncio.create_task(read_alerts())
    count_before = worker.processed()
    cpu_before, busy_before = cpu_seconds(worker.pid), system_busy()
    total = int(rate * seconds)
    probe_every = max(2, round(rate / probes_per_s)) if probes_per_s > 0 else 0
    pending: list[asyncio.Future[Any]] = []
    sent = probes = 0
    bg = iter(background)
    last_at = background[0]["occurred_at"]
    started = time.perf_counter()
    try:
        while sent < total:
            due = min(total, int((time.perf_counter() - started) * rate) + 1)
            while sent < due:
                if probe_every and sent % probe_every == 0 and sent + 2 <= total:
                    pair = probe_pair(space.name, probe_base + probes, last_at)
                    probes += 1
                    for ev in pair:
                        if ev is pair[-1]:
                            sent_at[ev["event_id"]] = (time.perf_counter(), time.time())
                        pending.append(await _send(producer, space, ev))
                        sent_log.append(ev)
                    sent += 2
                    continue
                ev = next(bg)
                last_at = ev["occurred_at"]
                pending.append(await _send(producer, space, ev))
                sent_log.append(ev)
                sent += 1
            if len(pending) > 2000:
                await asyncio.gather(*pending)
                pending.clear()
            await asyncio.sleep(0.002)
        send_seconds = time.perf_counter() - started
        cpu_after, busy_after = cpu_seconds(worker.pid), system_busy()
        await producer.flush()
        await asyncio.gather(*pending)
        lag_at_end = count_before + sent - worker.processed()
        deadline = time.perf_counter() + 60
        while sent_at and time.perf_counter() < deadline:
            await asyncio.sleep(0.1)
        missing = len(sent_at)
        stop.set()
        sent_at.clear()
        await reader
    finally:
        stop.set()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        await producer.stop()
        await consumer.stop()
    ms = [x * 1000 for x in latencies]
    pub = [x * 1000 for x in to_publish]
    return {
        "offered_events_per_s": rate,
        "achieved_events_per_s": round(sent / send_seconds),
        "seconds": round(send_seconds, 1),
        "events": sent,
        "probes": probes,
        "probes_answered": len(latencies),
        "probes_missing": missing,
        "worker_backlog_at_end_of_sending": lag_at_end,
        "worker_cpu_percent": round(100 * (cpu_after - cpu_before) / send_seconds),
        "machine_cpu_percent": round(
            100 * (busy_after[0] - busy_before[0]) / max(busy_after[1] - busy_before[1], 1)
        ),
        "p50_ms": _round(percentile(ms, 50)),
        "p95_ms": _round(percentile(ms, 95)),
        "p99_ms": _round(percentile(ms, 99)),
        "max_ms": _round(max(ms) if ms else None),
        "mean_ms": _round(statistics.fmean(ms) if ms else None),
        "to_outbox_send_p50_ms": _round(percentile(pub, 50)),
        "to_outbox_send_p99_ms": _round(percentile(pub, 99)),
    }


def _round(x: float | None) -> float | None:
    return round(x, 1) if x is not None else None


async def _send(producer: AIOKafkaProducer, space: Space, ev: dict[str, Any]) -> Any:
    return await producer.send(
        space.topics[TOPIC_BY_EVENT_TYPE[ev["type"]]],
        value=dumps_event(ev),
        key=ev["customer_id"].encode(),
    )


async def wait_processed(worker: Worker, target: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.processed() >= target:
            return True
        await asyncio.sleep(0.2)
    return False


# --------------------------------------------------------------------------- (5) memory


async def redis_memory(redis: Redis, space: Space) -> dict[str, Any]:
    """``MEMORY USAGE`` of the customer keys and the indexes, per customer."""
    prefix = f"{space.name}:c:"
    keys = [k async for k in redis.scan_iter(match=f"{prefix}*", count=2000)]
    state_bytes = 0
    for i in range(0, len(keys), 1000):
        pipe = redis.pipeline(transaction=False)
        for k in keys[i : i + 1000]:
            pipe.memory_usage(k, samples=0)
        state_bytes += sum(int(x or 0) for x in await pipe.execute())
    index_bytes = 0
    for key in (f"{space.name}:score", f"{space.name}:due"):
        index_bytes += int(await redis.memory_usage(key, samples=0) or 0)
    n = max(len(keys), 1)
    return {
        "customers": len(keys),
        "state_bytes_per_customer": round(state_bytes / n),
        "index_bytes_per_customer": round(index_bytes / n),
        "bytes_per_customer": round((state_bytes + index_bytes) / n),
    }


# --------------------------------------------------------------------------- replay equality


async def read_topic(bootstrap: str, topic: str, partitions: int) -> list[dict[str, Any]]:
    """Everything committed on ``topic`` (read_committed), from the beginning to the end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)  # last stable offsets under read_committed
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= end[tp] for pos, tp in zip(positions, tps, strict=True)):
                break
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                out += [orjson.loads(r.value) for r in records]
    finally:
        await consumer.stop()
    return out


def compare_alerts(
    worker: list[dict[str, Any]], replay: list[dict[str, Any]], examples: int = 8
) -> dict[str, Any]:
    """Worker warnings vs replay warnings, by ``alert_id``; differences itemised."""
    w_ids = Counter(a["alert_id"] for a in worker)
    by_w = {a["alert_id"]: a for a in worker}
    by_r = {a["alert_id"]: a for a in replay}
    only_w = sorted(set(by_w) - set(by_r))
    only_r = sorted(set(by_r) - set(by_w))
    field_diffs: Counter[str] = Counter()
    differing: list[dict[str, Any]] = []
    for aid in sorted(set(by_w) & set(by_r)):
        a, b = by_w[aid], by_r[aid]
        fields = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if fields:
            field_diffs.update(fields)
            if len(differing) < examples:
                differing.append(
                    {
                        "alert_id": aid,
                        "code": a["code"],
                        "customer_id": a["customer_id"],
                        "fields": {f: {"worker": a.get(f), "replay": b.get(f)} for f in fields},
                    }
                )

    def brief(a: dict[str, Any]) -> dict[str, Any]:
        keys = ("code", "customer_id", "loan_id", "triggered_at", "risk_score")
        return {"alert_id": a["alert_id"], **{k: a.get(k) for k in keys}}

    return {
        "worker_alerts": len(worker),
        "replay_alerts": len(replay),
        "published_twice": sum(1 for n in w_ids.values() if n > 1),
        "only_in_worker": len(only_w),
        "only_in_replay": len(only_r),
        "only_in_worker_by_code": dict(Counter(by_w[i]["code"] for i in only_w)),
        "only_in_replay_by_code": dict(Counter(by_r[i]["code"] for i in only_r)),
        "same_id_different_fields": sum(1 for i in set(by_w) & set(by_r) if by_w[i] != by_r[i]),
        "differing_fields": dict(field_diffs),
        "examples_only_in_worker": [brief(by_w[i]) for i in only_w[:examples]],
        "examples_only_in_replay": [brief(by_r[i]) for i in only_r[:examples]],
        "examples_differing": differing,
        "equal": not only_w and not only_r and not field_diffs,
        "without_detectors": _without_detectors(worker, replay),
    }


def _without_detectors(
    worker: list[dict[str, Any]], replay: list[dict[str, Any]]
) -> dict[str, Any]:
    """The same comparison leaving out what the shared detector models decide.

    Detector warnings, and the score/tier the default probability adds to,
    come from models shared by all customers (adaptive thresholds, the default
    model) that learn in processing order, which a partitioned worker and
    replay cannot share; the rules and the engine judge each customer alone.
    """
    ignored = {"risk_score", "risk_tier", "explanation"}
    w = {a["alert_id"]: a for a in worker if a.get("source") != "detector"}
    r = {a["alert_id"]: a for a in replay if a.get("source") != "detector"}
    only_w, only_r = set(w) - set(r), set(r) - set(w)
    fields: Counter[str] = Counter()
    for aid in set(w) & set(r):
        fields.update(
            k for k in (set(w[aid]) | set(r[aid])) - ignored if w[aid].get(k) != r[aid].get(k)
        )
    keys = ("code", "customer_id", "loan_id", "triggered_at", "severity", "loan_class", "dpd")
    differing = sorted(
        aid
        for aid in set(w) & set(r)
        if any(w[aid].get(k) != r[aid].get(k) for k in (set(w[aid]) | set(r[aid])) - ignored)
    )
    return {
        "examples": {
            "only_in_worker": [{k: w[i].get(k) for k in keys} for i in sorted(only_w)[:8]],
            "only_in_replay": [{k: r[i].get(k) for k in keys} for i in sorted(only_r)[:8]],
            "differing": [
                {
                    "alert_id": aid,
                    **{
                        k: {"worker": w[aid].get(k), "replay": r[aid].get(k)}
                        for k in sorted((set(w[aid]) | set(r[aid])) - ignored)
                        if w[aid].get(k) != r[aid].get(k) or k in keys
                    },
                }
                for aid in differing[:8]
            ],
        },
        "worker_alerts": len(w),
        "replay_alerts": len(r),
        "only_in_worker_by_code": dict(Counter(w[i]["code"] for i in only_w)),
        "only_in_replay_by_code": dict(Counter(r[i]["code"] for i in only_r)),
        "differing_fields": dict(fields),
        "equal": not only_w and not only_r and not fields,
    }


def run_replay_cli(events_path: Path, out_dir: Path, env: dict[str, str], root: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "creditwatch", "replay", str(events_path), "--out", str(out_dir)],
        cwd=root,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


# --------------------------------------------------------------------------- cleanup


async def cleanup(bootstrap: str, redis: Redis, spaces: list[Space]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = sorted({t for s in spaces for t in s.own_topics()} & existing)
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()
    for space in spaces:
        batch: list[Any] = []
        async for key in redis.scan_iter(match=f"{space.name}:*", count=2000):
            batch.append(key)
            if len(batch) >= 2000:
                await redis.delete(*batch)
                batch = []
        if batch:
            await redis.delete(*batch)


# --------------------------------------------------------------------------- the run


async def run(args: argparse.Namespace) -> dict[str, Any]:
    redis = Redis.from_url(args.redis)
    redis_version = (await redis.info("server")).get("redis_version")
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "label": args.label,
        "command": " ".join([".venv/bin/python -m bench.throughput", *sys.argv[1:]]),
        "code": {**git_revision(), "worker_root": str(args.worker_root)},
        "machine": machine(redis_version),
        "parameters": {
            "events": args.events,
            "rate": args.rate,
            "latency_seconds": args.latency_seconds,
            "partitions": args.partitions,
            "tick_seconds": args.tick_seconds,
            "seed": args.seed,
            "skipped": sorted(args.skip),
        },
    }
    space = Space.fresh(args.partitions)
    spaces = [space]
    tmp = Path(tempfile.mkdtemp(prefix=f"{space.name}-"))
    result["run"] = {"name": space.name, "logs": str(tmp)}
    workers: list[Worker] = []
    try:
        await ensure_topics(space.settings(args.bootstrap, args.redis))
        phase_events = int(sum(args.rate) * args.latency_seconds)
        log(f"generating {args.events} + latency events (seed {args.seed})")
        book, customers = simulated(args.events + 2 * phase_events + 1000, args.seed)
        backlog, tail = book[: args.events], book[args.events :]
        result["book"] = {
            "customers_in_book": customers,
            "customers_in_backlog": len({e["customer_id"] for e in backlog}),
            "event_time_span": [backlog[0]["occurred_at"], backlog[-1]["occurred_at"]],
            "mix": dict(Counter(e["type"] for e in backlog).most_common()),
        }

        log(f"(1) producing {len(backlog)} events to {space.name}.*")
        n, secs = await produce(args.bootstrap, space.topics, backlog)
        result["produce"] = {
            "events": n,
            "seconds": round(secs, 2),
            "events_per_s": round(n / secs),
        }

        log("(2) the limit: bare aiokafka consumer + orjson")
        passes = [
            await bare_consumer(args.bootstrap, sorted(space.input_names), n) for _ in range(2)
        ]
        result["limit"] = {**max(passes, key=lambda p: p["events_per_s"]), "passes": passes}

        used_before = int((await redis.info("memory"))["used_memory"])
        log("(3) the product: one creditwatch worker consumes the backlog")
        worker = Worker(space, args, tmp, "worker-1")
        workers.append(worker)
        worker.wait_ready()
        profiler = Profiler(worker.pid, tmp / "worker-1.pyspy.txt") if args.profile else None
        try:
            result["product"] = await consume_backlog([worker], redis, n, timeout=args.timeout)
            result["product"]["batches"] = worker.batches()
            result["product"]["alignment"] = worker.alignment()
        finally:
            if profiler is not None:
                profiler.stop()
        if profiler is not None and profiler.out.exists():
            result["profile"] = profile_summary(profiler.out)
        result["ratio_product_to_limit"] = round(
            result["product"]["events_per_s_to_drained"] / result["limit"]["events_per_s"], 3
        )
        used_after = int((await redis.info("memory"))["used_memory"])
        mem = await redis_memory(redis, space)
        mem["used_memory_delta_per_customer"] = round(
            (used_after - used_before) / max(mem["customers"], 1)
        )
        result["memory"] = {
            "worker_peak_rss_mib_after_backlog": _round(peak_rss_mib(worker.pid)),
            "redis": mem,
        }
        log(
            f"    {result['product']['events_per_s']} ev/s processing, "
            f"{result['product']['events_per_s_to_drained']} ev/s to drained outbox"
        )

        sent_log: list[dict[str, Any]] = list(backlog)
        sustained = result["product"]["events_per_s"]
        phases: list[tuple[float, float]] = [
            (rate, args.latency_seconds if sustained >= rate else min(10.0, args.latency_seconds))
            for rate in args.rate
        ]
        if sustained < args.rate[0] * 1.1:  # the most it sustains, with a margin
            phases.append((round(sustained * 0.8, -1), args.latency_seconds))
        result["latency"] = []
        tail_at = 0
        probe_base = 0
        for rate, seconds in phases if "latency" not in args.skip else []:
            log(f"(4) latency at {rate:.0f} events/s for {seconds:.0f}s")
            needed = int(rate * seconds) + 10
            chunk = tail[tail_at : tail_at + needed]
            tail_at += needed
            phase = await offered_load(
                worker,
                space,
                args.bootstrap,
                chunk,
                rate,
                seconds,
                args.probes_per_s,
                probe_base,
                sent_log,
            )
            probe_base += phase["probes"]
            result["latency"].append(phase)
            log(f"    p50 {phase['p50_ms']} ms, p95 {phase['p95_ms']} ms, p99 {phase['p99_ms']} ms")
            await wait_processed(worker, len(sent_log), timeout=args.timeout)

        log("closing events: every shard's watermark to the last instant")
        last = max(sent_log, key=lambda e: datetime.fromisoformat(e["occurred_at"]))
        closing = closing_events(space.name, args.partitions, last["occurred_at"])
        await produce(args.bootstrap, space.topics, closing)
        sent_log += closing
        await wait_processed(worker, len(sent_log), timeout=args.timeout)
        await asyncio.sleep(args.tick_seconds * 2 + 1)  # a tick after the last watermark
        while await outbox_depth(redis, space):
            await asyncio.sleep(0.2)
        result["memory"]["worker_peak_rss_mib"] = _round(peak_rss_mib(worker.pid))
        worker.stop()

        if "pair" not in args.skip:
            result["two_workers"] = await two_workers(args, space, spaces, workers, tmp, redis, n)
            result["two_workers"]["speedup_vs_one"] = round(
                result["two_workers"]["events_per_s"] / result["product"]["events_per_s"], 2
            )

        if "replay" not in args.skip:
            result["replay"], result["equality"] = await replay_equality(args, space, sent_log, tmp)
    finally:
        for w in workers:
            w.stop()
        if not args.keep:
            with contextlib.suppress(Exception):
                await cleanup(args.bootstrap, redis, spaces)
        await redis.aclose()
    return result


async def two_workers(
    args: argparse.Namespace,
    space: Space,
    spaces: list[Space],
    workers: list[Worker],
    tmp: Path,
    redis: Redis,
    n: int,
) -> dict[str, Any]:
    """(6): two workers, a fresh group, key prefix and outputs, on the same input backlog."""
    log("(5) two workers on the same backlog (fresh group, prefix and outputs)")
    space2 = Space.fresh(args.partitions, inputs_from=space)
    spaces.append(space2)
    await ensure_topics(space2.settings(args.bootstrap, args.redis))
    pair = [Worker(space2, args, tmp, f"pair-{i}") for i in range(2)]
    workers += pair
    for w in pair:
        w.wait_ready()
    two = await consume_backlog(pair, redis, n, timeout=args.timeout, window=args.pair_window)
    two["assigned_partitions"] = [w.assigned() for w in pair]
    two["peak_rss_mib"] = [_round(peak_rss_mib(w.pid)) for w in pair]
    for w in pair:
        w.stop()
    log(f"    {two['events_per_s']} ev/s with two workers")
    return two


async def replay_equality(
    args: argparse.Namespace, space: Space, sent_log: list[dict[str, Any]], tmp: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``creditwatch replay`` on every event the single worker was given; warnings compared."""
    log("replay on the same events, and comparison of the warnings")
    events_path = tmp / "events.jsonl"
    events_path.write_bytes(b"".join(dumps_event(e) + b"\n" for e in sent_log))
    replay_env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITWATCH_")}
    replay_secs = run_replay_cli(events_path, tmp / "replay", replay_env, args.worker_root)
    replay_alerts = [
        orjson.loads(x) for x in (tmp / "replay" / "alerts.jsonl").read_bytes().splitlines()
    ]
    worker_alerts = await read_topic(args.bootstrap, space.topics["risk_alerts"], args.partitions)
    replay = {
        "events": len(sent_log),
        "seconds": round(replay_secs, 1),
        "events_per_s": round(len(sent_log) / replay_secs),
    }
    return replay, compare_alerts(worker_alerts, replay_alerts)


def table(r: dict[str, Any]) -> str:
    """The figures a person reads first."""
    rows: list[tuple[str, str]] = []
    m = r["machine"]
    rows.append(("machine", f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB"))
    rows.append(("", f"Python {m['python']}, Kafka {m['kafka']}, Redis {m['redis_server']}"))
    rows.append(
        ("events (customers)", f"{r['produce']['events']} ({r['book']['customers_in_backlog']})")
    )
    rows.append(("(1) produce", f"{r['produce']['events_per_s']:,} ev/s"))
    rows.append(("(2) limit: bare consumer + orjson", f"{r['limit']['events_per_s']:,} ev/s"))
    p = r["product"]
    rows.append(("(3) worker, to last event", f"{p['events_per_s']:,} ev/s"))
    rows.append(("(3) worker, to outbox drained", f"{p['events_per_s_to_drained']:,} ev/s"))
    rows.append(
        (
            "    worker / Redis / machine CPU",
            f"{p['worker_cpu_percent'][0]} % / {p['redis_cpu_percent']} % / "
            f"{p['machine_cpu_percent']} %",
        )
    )
    rows.append(("    worker CPU per event", f"{p['worker_cpu_ms_per_event']} ms"))
    if p.get("batches"):
        rows.append(
            (
                "    batches (mean events)",
                f"{p['batches']['batches']:,} ({p['batches']['mean_events']})",
            )
        )
    if p.get("alignment") is not None:
        forced = p["alignment"].get("released_out_of_turn") or {}
        rows.append(
            (
                "    events out of event-time turn",
                ", ".join(f"{k} {v}" for k, v in sorted(forced.items())) or "none",
            )
        )
    rows.append(("(3)/(2)", f"{r['ratio_product_to_limit']:.3f}"))
    for phase in r.get("latency", []):
        rows.append(
            (
                f"(4) latency @ {phase['offered_events_per_s']:.0f} ev/s",
                f"p50 {phase['p50_ms']} ms, p95 {phase['p95_ms']} ms, p99 {phase['p99_ms']} ms "
                f"({phase['probes_answered']}/{phase['probes']} probes, worker CPU "
                f"{phase['worker_cpu_percent']} %, backlog at end "
                f"{phase['worker_backlog_at_end_of_sending']})",
            )
        )
    mem = r["memory"]
    rows.append(("(5) worker peak RSS", f"{mem.get('worker_peak_rss_mib')} MiB"))
    red = mem["redis"]
    rows.append(
        (
            "(5) Redis per customer",
            f"{red['bytes_per_customer']} B (MEMORY USAGE; used_memory delta "
            f"{red['used_memory_delta_per_customer']} B)",
        )
    )
    if "two_workers" in r:
        t = r["two_workers"]
        rows.append(
            (
                "(6) two workers",
                f"{t['events_per_s']:,} ev/s ({t['speedup_vs_one']}x), CPU "
                f"{'+'.join(str(c) for c in t['worker_cpu_percent'])} %, machine "
                f"{t['machine_cpu_percent']} %",
            )
        )
    if "equality" in r:
        e = r["equality"]
        rows.append(
            (
                "worker == replay",
                f"{e['equal']} ({e['worker_alerts']} vs {e['replay_alerts']} warnings; only worker "
                f"{e['only_in_worker']}, only replay {e['only_in_replay']}, differing "
                f"{e['same_id_different_fields']}, published twice {e['published_twice']})",
            )
        )
    if "equality" in r:
        e = r["equality"]["without_detectors"]
        rows.append(
            (
                "  rules/engine only",
                f"{e['equal']} ({e['worker_alerts']} vs {e['replay_alerts']}; only worker "
                f"{e['only_in_worker_by_code']}, only replay {e['only_in_replay_by_code']})",
            )
        )
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="backlog size (200000)")
    parser.add_argument(
        "--rate",
        type=lambda text: [float(x) for x in text.split(",")],
        default=[2000.0],
        help="offered load(s), events/s, comma-separated (2000)",
    )
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument("--probes-per-s", type=float, default=20.0)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--tick-seconds", type=float, default=5.0, help="worker DPD tick (production: 3600)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--bootstrap",
        help="use this running Kafka (with --redis) instead of starting one on free ports",
    )
    parser.add_argument("--redis", help="use this running Redis (with --bootstrap)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per phase, seconds")
    parser.add_argument("--label", default="", help="a note stored with the results")
    parser.add_argument(
        "--worker-root",
        type=Path,
        default=ROOT,
        help="run the worker and replay from this source tree (e.g. an export of another commit)",
    )
    parser.add_argument(
        "--pair-window",
        type=float,
        default=60.0,
        help="seconds of backlog the two workers are measured on (60)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the single worker with py-spy while it works the backlog",
    )
    parser.add_argument(
        "--skip",
        type=lambda text: {x for x in text.split(",") if x},
        default=set(),
        help="leave out phases, comma-separated: latency, pair, replay (quicker comparisons)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run's topics and keys")
    parser.add_argument("--json", type=Path, help="results file (default bench/results/...)")
    args = parser.parse_args()
    unknown = args.skip - SKIPPABLE
    if unknown:
        parser.error(f"--skip: unknown phase(s) {', '.join(sorted(unknown))}")
    if args.bootstrap and args.redis:
        result = asyncio.run(run(args))
        result["stack"] = {"started_by_the_benchmark": False}
    else:
        with local_stack(args.keep) as (bootstrap, redis_url, facts):
            args.bootstrap, args.redis = bootstrap, redis_url
            result = asyncio.run(run(args))
            result["stack"] = facts
    out = args.json or RESULTS / f"throughput-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
