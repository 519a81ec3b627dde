"""Which partition (and so which outbox shard) a customer belongs to.

Producers key every message by ``customer_id`` and Kafka's default
partitioner (murmur2, the same in the Java and Python clients) places it; the
worker uses the same function so that work it does on its own initiative (the
DPD tick) goes to the shard of the partition that customer's events arrive on.

>>> partition_for("C000001", 4) in range(4)
True
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def partition_for(customer_id: str, partitions: int) -> int:
    """Kafka's default partition for a message keyed by ``customer_id``."""
    return (murmur2(customer_id.encode("utf-8")) & 0x7FFFFFFF) % partitions
