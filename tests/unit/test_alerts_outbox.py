"""Outbox delivery: delete only after acceptance, per-channel retry, leases, dead messages."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from alerts import admin
from alerts.clock import ManualClock, to_ms
from alerts.config import DeliveryConfig
from alerts.factory import memory_service
from alerts.outbox import (
    Deliverer,
    MemoryOutbox,
    NotifyError,
    OutboxMessage,
    backoff,
)

T0 = datetime(2026, 8, 3, 12, 0, tzinfo=UTC)
CONFIG = DeliveryConfig(
    initial_backoff=timedelta(seconds=10),
    max_backoff=timedelta(minutes=5),
    lease=timedelta(minutes=2),
    batch=50,
)


class Channel:
    """A channel double: fails as scripted, records what it accepted."""

    def __init__(self, failures: list[NotifyError | Exception] | None = None) -> None:
        self.failures = list(failures or [])
        self.accepted: list[str] = []
        self.attempts = 0

    async def notify(self, message: OutboxMessage) -> None:
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        self.accepted.append(message.id)


def msg(i: int, receiver: str = "risk_desk") -> OutboxMessage:
    return OutboxMessage(
        id=f"m-{i}",
        receiver=receiver,
        kind="ops",
        created_ms=0,
        notice={"subject": f"n{i}", "lines": []},
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


def deliverer(
    outbox: MemoryOutbox,
    clock: ManualClock,
    owner: str = "w1",
    config: DeliveryConfig = CONFIG,
    **channels: Channel,
) -> Deliverer:
    return Deliverer(outbox=outbox, notifiers=channels, clock=clock, config=config, owner=owner)


def test_backoff_grows_and_is_capped() -> None:
    waits = [backoff(CONFIG, n).total_seconds() for n in range(1, 8)]
    assert waits == [10, 20, 40, 80, 160, 300, 300]


async def test_accepted_messages_are_deleted(clock: ManualClock) -> None:
    outbox, desk = MemoryOutbox(), Channel()
    for i in range(3):
        assert await outbox.put(msg(i), due_ms=to_ms(T0))
    assert not await outbox.put(msg(0), due_ms=to_ms(T0))  # same id: not twice
    report = await deliverer(outbox, clock, risk_desk=desk).deliver_once()
    assert (report.sent, desk.accepted) == (3, ["m-0", "m-1", "m-2"])
    assert await outbox.pending() == 0


async def test_retryable_failure_waits_with_backoff_and_nothing_is_lost(
    clock: ManualClock,
) -> None:
    outbox = MemoryOutbox()
    down = NotifyError("connection refused", retryable=True)
    desk = Channel([down, down])
    for i in range(3):
        await outbox.put(msg(i), due_ms=to_ms(T0))
    d = deliverer(outbox, clock, risk_desk=desk)
    report = await d.deliver_once()
    # one refused connection says enough: the rest of the round waits without trying
    assert (report.sent, report.retried, desk.attempts) == (0, 3, 1)
    assert (await d.deliver_once()).claimed == 0  # not due yet
    clock.advance(timedelta(seconds=10))
    report = await d.deliver_once()
    assert (report.sent, report.retried) == (0, 3)  # second failure, the first message
    first = OutboxMessage.from_json(outbox.messages["m-0"])
    assert (first.attempts, first.error) == (2, "connection refused")
    clock.advance(timedelta(seconds=19))
    assert (await d.deliver_once()).claimed == 0  # backoff doubled to 20 s
    clock.advance(timedelta(seconds=1))
    report = await d.deliver_once()
    assert report.sent == 3 and sorted(desk.accepted) == ["m-0", "m-1", "m-2"]
    assert await outbox.pending() == 0


async def test_permanent_failures_and_notifier_bugs_are_parked_not_dropped(
    clock: ManualClock,
) -> None:
    outbox = MemoryOutbox()
    desk = Channel(
        [NotifyError("550 mailbox unavailable", retryable=False), RuntimeError("template bug")]
    )
    for i in range(3):
        await outbox.put(msg(i), due_ms=to_ms(T0))
    await outbox.put(msg(9, receiver="nobody"), due_ms=to_ms(T0))
    report = await deliverer(outbox, clock, risk_desk=desk).deliver_once()
    assert (report.sent, report.dead) == (1, 3)
    dead = {m.id: m.error for m in await outbox.dead()}
    assert dead["m-0"] == "550 mailbox unavailable"
    assert dead["m-1"].startswith("unexpected RuntimeError")
    assert "no channel configured" in dead["m-9"]
    assert await outbox.requeue_dead(["m-0"], now_ms=to_ms(T0)) == 1
    assert (await deliverer(outbox, clock, risk_desk=desk).deliver_once()).sent == 1
    assert sorted(desk.accepted) == ["m-0", "m-2"]


async def test_max_attempts_parks_after_the_limit(clock: ManualClock) -> None:
    outbox = MemoryOutbox()
    config = CONFIG.model_copy(update={"max_attempts": 2})
    desk = Channel([NotifyError("timeout", retryable=True)] * 5)
    await outbox.put(msg(0), due_ms=to_ms(T0))
    d = deliverer(outbox, clock, config=config, risk_desk=desk)
    assert (await d.deliver_once()).retried == 1
    clock.advance(timedelta(minutes=1))
    assert (await d.deliver_once()).dead == 1
    assert [m.attempts for m in await outbox.dead()] == [2]


async def test_a_lease_keeps_a_second_worker_off_until_it_expires(clock: ManualClock) -> None:
    outbox = MemoryOutbox()
    await outbox.put(msg(0), due_ms=to_ms(T0))
    claimed = await outbox.claim(now_ms=to_ms(T0), lease_ms=120_000, owner="w1", limit=10)
    assert [m.id for m in claimed] == ["m-0"]
    other = Channel()
    d2 = deliverer(outbox, clock, owner="w2", risk_desk=other)
    assert (await d2.deliver_once()).claimed == 0
    clock.advance(timedelta(minutes=2))  # w1 died holding it: the lease runs out
    assert (await d2.deliver_once()).sent == 1
    assert other.accepted == ["m-0"]
    # w1 coming back cannot renew or re-deliver what is gone
    assert not await outbox.renew("m-0", owner="w1", until_ms=to_ms(clock.now()) + 1)


async def test_two_workers_delivering_concurrently_send_each_message_once(
    clock: ManualClock,
) -> None:
    outbox = MemoryOutbox()
    for i in range(40):
        await outbox.put(msg(i), due_ms=to_ms(T0))

    class Slow(Channel):
        async def notify(self, message: OutboxMessage) -> None:
            await asyncio.sleep(0)
            await super().notify(message)

    a, b = Slow(), Slow()
    small = CONFIG.model_copy(update={"batch": 5})
    da = deliverer(outbox, clock, owner="a", config=small, risk_desk=a)
    db = deliverer(outbox, clock, owner="b", config=small, risk_desk=b)
    while await outbox.pending():
        await asyncio.gather(da.deliver_once(), db.deliver_once())
    sent = a.accepted + b.accepted
    assert sorted(sent) == sorted(f"m-{i}" for i in range(40))
    assert len(sent) == len(set(sent))


async def test_run_loop_delivers_until_stopped(clock: ManualClock) -> None:
    service = memory_service(notifiers={"ops": (ops := Channel())}, clock=clock)
    await service.outbox.put(msg(1, receiver="ops"), due_ms=to_ms(T0))
    stop = asyncio.Event()
    task = asyncio.create_task(service.deliverer.run(stop, idle=0.01))
    for _ in range(100):
        if ops.accepted:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 2)
    assert ops.accepted == ["m-1"]
    status = await admin.outbox_status(service)
    assert status == {"pending": 0, "dead": []}
