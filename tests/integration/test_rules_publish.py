"""Publishing rule sets to a real Kafka broker, and workers' watchers following them.

Each test publishes to its own rules topic (``CREDITWATCH_TOPICS``), so tests
never see each other's versions. The command line is run as a user runs it:
the console script in a subprocess, configured by the environment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from config.settings import KafkaSettings, Settings
from rules.loader import load_text
from rules.registry import (
    RuleSetHolder,
    admin_client,
    history,
    publish,
    read_records,
    rollback,
)
from rules.watch import RulesWatcher, local_holder

if TYPE_CHECKING:
    from conftest import Stack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).parent / "creditwatch"

V1 = """\
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
V2 = V1.replace("severity: critical", "severity: high")
INVALID = V1.replace("max_dpd, op: crosses", "max_dpdd, op: crosses")


@dataclass
class Rules:
    """One test's rules topic on the session's broker."""

    stack: Stack
    topic: str
    tmp: Path

    @property
    def settings(self) -> Settings:
        return Settings(
            kafka=KafkaSettings(bootstrap_servers=self.stack.bootstrap),
            topics={"rules": self.topic},
        )

    @property
    def kafka(self) -> KafkaSettings:
        return self.settings.kafka

    def file(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        env = {
            **self.stack.env,
            "CREDITWATCH_KAFKA__BOOTSTRAP_SERVERS": self.stack.bootstrap,
            "CREDITWATCH_TOPICS": json.dumps({"rules": self.topic}),
        }
        return subprocess.run(
            [str(CLI), "rules", *argv],
            env=env,
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture
def rules(stack: Stack, tmp_path: Path) -> Rules:
    return Rules(stack, f"cwt{uuid.uuid4().hex[:8]}.credit.rules.v1", tmp_path)


def version_of(text: str) -> str:
    return load_text(text).version


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def produce_raw(kafka: KafkaSettings, topic: str, key: str, value: bytes) -> None:
    """What a careless producer can put on the topic, bypassing ``rules publish``."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.05)


def test_publish_history_and_rollback_from_the_command_line(rules: Rules) -> None:
    v1, v2 = rules.file("v1.yaml", V1), rules.file("v2.yaml", V2)

    first = rules.cli("publish", str(v1), "--author", "ann", "--message", "first pack")
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"published default version {version_of(V1)} (#1) to {rules.topic}" in first.stdout

    second = rules.cli("publish", str(v2), "--author", "bob", "--message", "deep arrears: high")
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"version {version_of(V2)} (#2)" in second.stdout and "[+0 -0 ~deep]" in second.stdout

    again = rules.cli("publish", str(v2), "--author", "bob", "--message", "same again")
    assert again.returncode == 0 and "nothing published" in again.stdout

    bad = rules.cli(
        "publish", str(rules.file("bad.yaml", INVALID)), "--author", "eve", "--message", "typo"
    )
    assert bad.returncode == 1
    assert f"{rules.tmp / 'bad.yaml'}:7:26: rule deep: unknown feature 'max_dpdd'" in bad.stdout

    listed = rules.cli("history", "--diff")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    lines = [ln for ln in listed.stdout.splitlines() if ln.startswith("#")]
    assert len(lines) == 2
    assert lines[0].startswith(f"#1  {version_of(V1)}  ") and "ann: first pack" in lines[0]
    assert lines[1].startswith(f"#2  {version_of(V2)}  ") and "bob: deep arrears: high" in lines[1]
    assert lines[1].endswith("[+0 -0 ~deep]  (current)")
    assert '-  "severity": "critical",\n+  "severity": "high",' in listed.stdout

    records = asyncio.run(history(rules.kafka, "default", topic=rules.topic))
    assert [(r["seq"], r["author"], r["message"]) for r in records] == [
        (1, "ann", "first pack"),
        (2, "bob", "deep arrears: high"),
    ]
    assert records[0]["diff"]["added"] == ["deep"] and records[1]["diff"]["changed"] == ["deep"]
    assert all(r["published_at"].endswith("+00:00") for r in records)

    back = rules.cli("rollback", version_of(V1), "--author", "cy", "--message", "too lenient")
    assert back.returncode == 0, back.stdout + back.stderr
    assert f"rolled default back to {version_of(V1)} (#1), published as #3" in back.stdout

    current = [
        rec for key, rec in asyncio.run(read_records(rules.kafka, rules.topic)) if key == "default"
    ]
    assert current[-1]["version"] == version_of(V1) and current[-1]["seq"] == 3
    listed = rules.cli("history", "--name", "default").stdout
    assert f"cy: too lenient (rollback to {version_of(V1)} #1)" in listed

    by_number = rules.cli("rollback", "#2", "--author", "cy", "--message", "after all")
    assert by_number.returncode == 0 and "published as #4" in by_number.stdout
    missing = rules.cli("rollback", "nosuchversion", "--author", "cy", "--message", "m")
    assert missing.returncode == 1 and "'nosuchversion'" in missing.stdout
    other = rules.cli("history", "--name", "tight")
    assert other.returncode == 0 and "no published versions of tight" in other.stdout


def test_the_topic_is_created_compacted(rules: Rules) -> None:
    done = rules.cli("publish", str(rules.file("v1.yaml", V1)), "--author", "ann", "--message", "m")
    assert done.returncode == 0, done.stdout + done.stderr

    async def describe() -> tuple[Any, ...]:
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

        async with admin_client(rules.kafka) as admin:
            (info,) = await admin.describe_topics([rules.topic])
            resource = ConfigResource(
                ConfigResourceType.TOPIC, rules.topic, configs={"cleanup.policy": None}
            )
            (configs,) = await admin.describe_configs([resource])
        entries = configs.to_object()["resources"][0]["config_entries"]
        return len(info["partitions"]), {e["config_names"]: e["config_value"] for e in entries}

    partitions, configs = asyncio.run(describe())
    assert partitions == 1 and configs["cleanup.policy"] == "compact"


async def test_watchers_swap_to_each_version_and_refuse_a_broken_one(
    rules: Rules, caplog: pytest.LogCaptureFixture
) -> None:
    holder = local_holder()
    local = holder.current
    seen: list[str] = []
    holder.on_change = lambda old, new: seen.append(new.version)
    refusals: list[tuple[str, Exception]] = []
    watcher = RulesWatcher(
        rules.settings,
        holder,
        on_refused=lambda version, exc: refusals.append((version, exc)),
        topic_poll=0.2,
    )
    await watcher.start()
    try:
        # nothing published yet, the topic does not even exist: the local pack stands
        assert await watcher.wait_ready(30)
        assert holder.current is local

        v1, v2 = load_text(V1), load_text(V2)
        await publish(rules.kafka, v1, author="ann", message="one", topic=rules.topic)
        await eventually(lambda: holder.current.version == v1.version, "v1 current")
        await publish(rules.kafka, v2, author="bob", message="two", topic=rules.topic)
        await eventually(lambda: holder.current.version == v2.version, "v2 current")

        broken = {"name": "default", "version": "broken1", "seq": 3, "rules": [{"id": "x"}]}
        with caplog.at_level(logging.ERROR, logger="creditwatch.rules"):
            await produce_raw(rules.kafka, rules.topic, "default", orjson.dumps(broken))
            await eventually(lambda: watcher.stats.refused == 1, "the broken version refused")
        assert holder.current.version == v2.version  # the last good one stays
        assert holder.refused == 1 and [v for v, _ in refusals] == ["broken1"]
        assert "missing key 'description'" in str(refusals[0][1])
        assert any("REFUSED rule set version broken1" in r.getMessage() for r in caplog.records)

        await rollback(
            rules.kafka, "default", v1.version, author="cy", message="back", topic=rules.topic
        )
        await eventually(lambda: holder.current.version == v1.version, "v1 current again")
        assert seen == [v1.version, v2.version, v1.version]
        assert watcher.stats.applied == 3 and watcher.stats.connected
    finally:
        await watcher.stop()
    assert watcher._task is None

    # a worker starting now reads the backlog and goes straight to the current version
    late = local_holder()
    late_changes: list[str] = []
    late.on_change = lambda old, new: late_changes.append(new.version)
    await _caught_up(rules, late)
    assert late.current.version == load_text(V1).version and late_changes == [late.current.version]
    assert late.refused == 0  # the broken version was superseded: not counted again

    # the newest version on the topic is broken: a starting worker keeps the last good publication
    broken = {"name": "default", "version": "broken2", "seq": 5, "rules": "not a list"}
    await produce_raw(rules.kafka, rules.topic, "default", orjson.dumps(broken))
    restarted = local_holder()
    await _caught_up(rules, restarted)
    assert restarted.current.version == load_text(V1).version
    assert restarted.refused == 1 and restarted.last_refusal is not None
    assert restarted.last_refusal[0] == "broken2"


async def _caught_up(rules: Rules, holder: RuleSetHolder) -> RulesWatcher:
    watcher = RulesWatcher(rules.settings, holder)
    await watcher.start()
    try:
        assert await watcher.wait_ready(30)
    finally:
        await watcher.stop()
    return watcher


async def test_two_rule_sets_on_one_topic_are_followed_separately(rules: Rules) -> None:
    holder = RuleSetHolder(load_text(V1.replace("name: default", "name: tight")))
    watcher = RulesWatcher(rules.settings, holder, topic_poll=0.2)
    assert watcher.name == "tight"  # the holder's rule set, unless told otherwise
    await watcher.start()
    try:
        assert await watcher.wait_ready(30)
        await publish(rules.kafka, load_text(V2), author="a", message="m", topic=rules.topic)
        changed = load_text(V2.replace("name: default", "name: tight").replace("90}", "60}"))
        await publish(rules.kafka, changed, author="a", message="m", topic=rules.topic)
        await eventually(lambda: holder.current.version == changed.version, "tight swapped")
        assert holder.current.name == "tight" and watcher.stats.applied == 1
        assert holder.refused == 0  # the default rule set's version was not offered
    finally:
        await watcher.stop()


# -- a broker outage -------------------------------------------------------------------------


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[str, Callable[[str], None]]]:
    """A broker of this test's own, which the test may stop and start again."""
    port, controller = free_port(), free_port()
    env = {
        **os.environ,
        "CREDITWATCH_RUN_DIR": str(tmp_path / "run"),
        "CREDITWATCH_KAFKA_PORT": str(port),
        "CREDITWATCH_KAFKA_CONTROLLER_PORT": str(controller),
    }

    def kafka(action: str) -> None:
        subprocess.run(["bash", str(ROOT / "scripts/kafka.sh"), action], env=env, check=True)

    kafka("start")
    try:
        yield f"127.0.0.1:{port}", kafka
    finally:
        subprocess.run(["bash", str(ROOT / "scripts/kafka.sh"), "stop"], env=env, check=False)


async def test_the_watcher_survives_a_broker_outage(
    own_broker: tuple[str, Callable[[str], None]],
) -> None:
    bootstrap, kafka = own_broker
    settings = Settings(kafka=KafkaSettings(bootstrap_servers=bootstrap))
    v1, v2 = load_text(V1), load_text(V2)
    await publish(settings.kafka, v1, author="ann", message="one")
    holder = local_holder()
    watcher = RulesWatcher(settings, holder, retry_initial=0.2, retry_max=1.0)
    late: RulesWatcher | None = None
    await watcher.start()
    try:
        assert await watcher.wait_ready(30)
        assert holder.current.version == v1.version

        await asyncio.to_thread(kafka, "stop")
        # a worker starting during the outage keeps trying, with its local pack meanwhile
        starting = local_holder()
        late = RulesWatcher(settings, starting, retry_initial=0.2, retry_max=1.0)
        await late.start()
        await asyncio.sleep(3)  # both watchers meet the outage
        assert watcher._task is not None and not watcher._task.done()
        assert late._task is not None and not late._task.done()
        assert late.stats.failures >= 2 and not late.ready.is_set()
        assert holder.current.version == v1.version and starting.current.name == "default"

        await asyncio.to_thread(kafka, "start")
        assert await late.wait_ready(60)
        assert starting.current.version == v1.version
        await publish(settings.kafka, v2, author="bob", message="two", timeout=60)
        await eventually(lambda: holder.current.version == v2.version, "v2 after the outage", 60)
        await eventually(lambda: starting.current.version == v2.version, "late watcher on v2", 60)
        assert holder.refused == 0 and starting.refused == 0
    finally:
        await watcher.stop()
        if late is not None:
            await late.stop()
