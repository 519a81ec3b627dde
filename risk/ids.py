"""Stable identifiers for outputs.

An output's id is a hash of what makes it unique (customer, loan, code and
the episode it belongs to), never of wall-clock time or a random number, so
the same input always yields the same id: replays, redeliveries and a worker
restarted after a crash are recognisable downstream.

>>> stable_id("alert", "C1", "L1", "dpd30", "2026-01-10")
'a-51b3ef21a5e478968e783f5d'
"""

from __future__ import annotations

import hashlib


def stable_id(kind: str, *parts: str) -> str:
    """A short, deterministic id: first letter of ``kind`` and 24 hex digits."""
    digest = hashlib.sha256("\x1f".join((kind, *parts)).encode()).hexdigest()
    return f"{kind[0]}-{digest[:24]}"
