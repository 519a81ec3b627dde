"""Event-time alignment of the input topics (streams/alignment.py)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from streams.alignment import EventTimeAligner, Held

T0 = datetime(2026, 3, 1, tzinfo=UTC)
TOPICS = ("tx", "rp")


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ev(topic: str, hours: float, offset: int, partition: int = 0) -> Held:
    return Held(at(hours), topic, partition, offset, f"{topic}@{hours}")


def never(_topic: str, _partition: int) -> bool:
    return False


def names(released: list[Held]) -> list[str]:
    return [h.item for h in released]


def test_a_topic_running_ahead_waits_for_the_others_event_time() -> None:
    aligner = EventTimeAligner(TOPICS)
    aligner.add([ev("rp", 1, 0), ev("rp", 5, 1), ev("rp", 9, 2)])
    assert names(aligner.release(never).items) == []  # tx has shown nothing yet
    aligner.add([ev("tx", 2, 0), ev("tx", 6, 1)])
    assert names(aligner.release(never).items) == ["rp@1", "tx@2", "rp@5", "tx@6"]
    assert aligner.held == 1
    aligner.add([ev("tx", 12, 2)])
    assert names(aligner.release(never).items) == ["rp@9"]  # rp's own horizon is 9


def test_a_caught_up_topic_holds_nothing_back() -> None:
    aligner = EventTimeAligner(TOPICS)
    aligner.add([ev("rp", 1, 0), ev("rp", 5, 1)])
    released = aligner.release(lambda topic, _p: topic == "tx")
    assert names(released.items) == ["rp@1", "rp@5"]
    assert aligner.held == 0


def test_live_flow_with_every_topic_caught_up_releases_at_once_in_time_order() -> None:
    aligner = EventTimeAligner(TOPICS)
    aligner.add([ev("tx", 3, 0), ev("rp", 2, 0)])
    assert names(aligner.release(lambda _t, _p: True).items) == ["rp@2", "tx@3"]


def test_partition_numbers_are_aligned_separately() -> None:
    aligner = EventTimeAligner(TOPICS)
    aligner.add([ev("rp", 1, 0, partition=0), ev("tx", 1, 0, partition=1)])
    aligner.add([ev("tx", 2, 0, partition=0)])
    released = names(aligner.release(never).items)
    assert released == ["rp@1"]  # partition 1 still waits for its rp
    assert aligner.held == 2


def test_a_topic_that_stops_delivering_stops_holding_the_others_back() -> None:
    clock = Clock()
    aligner = EventTimeAligner(TOPICS, max_stall_seconds=30, clock=clock)
    aligner.add([ev("tx", 1, 0), ev("rp", 4, 0), ev("rp", 8, 1)])
    assert names(aligner.release(never).items) == ["tx@1"]
    clock.now += 20
    aligner.add([ev("rp", 9, 2)])  # rp goes on delivering; tx (behind) is silent
    assert aligner.release(never).items == []
    clock.now += 15  # tx silent for 35 s
    released = aligner.release(never)
    assert names(released.items) == ["rp@4", "rp@8", "rp@9"]
    assert released.forced_by_stall == 3


def test_a_long_wait_of_a_topic_running_ahead_is_not_a_stall() -> None:
    """Events may wait as long as the slower topic keeps delivering (a large backlog)."""
    clock = Clock()
    aligner = EventTimeAligner(TOPICS, max_stall_seconds=30, clock=clock)
    aligner.add([ev("rp", 50, 0)])
    for hour in range(1, 50):
        clock.now += 10  # 490 s in all, tx delivering every 10 s
        aligner.add([ev("tx", hour, hour)])
        released = aligner.release(never)
        assert names(released.items) == [f"tx@{hour}"]
        assert released.forced_by_stall == 0
    aligner.add([ev("tx", 51, 51)])
    assert names(aligner.release(never).items) == ["rp@50"]


def test_beyond_the_size_bound_the_earliest_events_go_first() -> None:
    aligner = EventTimeAligner(TOPICS, max_held=3)
    aligner.add([ev("rp", h, i) for i, h in enumerate([7, 1, 5, 3, 9])])
    released = aligner.release(never)
    assert names(released.items) == ["rp@1", "rp@3"]
    assert released.forced_by_size == 2
    assert aligner.held == 3


def test_everything_goes_at_a_hand_over() -> None:
    aligner = EventTimeAligner(TOPICS)
    aligner.add([ev("rp", 3, 0), ev("rp", 1, 1, partition=2)])
    assert names(aligner.release(never, everything=True).items) == ["rp@3", "rp@1"]
    assert aligner.held == 0


def test_last_offset_and_forget() -> None:
    aligner = EventTimeAligner(TOPICS)
    assert aligner.last_offset("tx", 0) is None
    aligner.add([ev("tx", 1, 41), ev("tx", 2, 42)])
    assert aligner.last_offset("tx", 0) == 42
    aligner.forget([0])
    assert aligner.last_offset("tx", 0) == 42  # still holding events: kept
    aligner.release(lambda _t, _p: True)
    aligner.forget([0])
    assert aligner.last_offset("tx", 0) is None


def test_merging_independently_delivered_topics_gives_event_time_order() -> None:
    """Topics delivered in random chunks come out as one event-time ordered stream."""
    rng = random.Random(11)
    streams = {
        t: sorted(rng.uniform(0, 1000) for _ in range(300 if t == "tx" else 60)) for t in TOPICS
    }
    aligner = EventTimeAligner(TOPICS)
    cursor = dict.fromkeys(TOPICS, 0)
    out: list[Held] = []

    def caught_up(topic: str, _p: int) -> bool:
        return cursor[topic] >= len(streams[topic])

    while any(cursor[t] < len(streams[t]) for t in TOPICS):
        topic = rng.choice([t for t in TOPICS if cursor[t] < len(streams[t])])
        n = rng.randint(1, 40)
        chunk = streams[topic][cursor[topic] : cursor[topic] + n]
        aligner.add([ev(topic, h, cursor[topic] + i) for i, h in enumerate(chunk)])
        cursor[topic] += len(chunk)
        out += aligner.release(caught_up).items
    out += aligner.release(caught_up).items
    times = [h.occurred_at for h in out]
    assert len(times) == 360
    assert times == sorted(times)
    assert aligner.held == 0


def test_topics_with_events_still_held_are_reported_ahead() -> None:
    aligner = EventTimeAligner(TOPICS)
    aligner.add([ev("rp", 1, 0), ev("rp", 9, 1), ev("tx", 2, 0)])
    aligner.add([Held(at(5), "related", 0, 0, "announcement")])  # waits, but sets no pace
    released = aligner.release(never)
    assert names(released.items) == ["rp@1", "tx@2"]
    assert released.ahead == {("rp", 0)}  # tx (the pace) and related are not stopped
    aligner.add([ev("tx", 10, 1)])
    released = aligner.release(never)
    assert names(released.items) == ["announcement", "rp@9"]
    assert released.ahead == {("tx", 0)}  # now tx is the one ahead, rp sets the pace
    released = aligner.release(lambda topic, _p: topic == "rp")  # rp delivered all it has
    assert names(released.items) == ["tx@10"]
    assert released.ahead == set()
