"""What a customer's flagged events were, so a verdict on them can reach the detector.

Feedback arrives long after the event and names it indirectly: an
``alert.feedback`` names the warning (``alert_id``), an
``outcome.fraud_confirmed`` names the transaction (``transaction_event_id``).
Teaching a detector from it needs the detector that flagged the event and the
features it saw then (they cannot be rebuilt from today's state). So each
flag is kept in the customer's detector dict (``det["_fl"]``), newest last,
at most ``keep`` of them (older verdicts are rare and are dropped):

``[event_id, detector, alert_id or None, {feature: value}]``

with only the features the detector's feedback reads (:data:`KEYS`), floats
rounded to 4 places: JSON-able, about 100-250 bytes a flag.
:meth:`detectors.stack.Stack.observe` remembers every flag it raises;
whoever turns a flag into a warning calls :func:`attach_alert` with the
warning's id; :meth:`detectors.stack.Stack.feedback` looks verdicts up here.

>>> det = {}
>>> x = {"amount": 52.123456, "channel": "online", "ts": 1.0, "log_amount": 0.3}
>>> remember(det, "e1", "transaction_anomaly", x)
>>> attach_alert(det, "e1", "transaction_anomaly", "alert-9")
True
>>> [(f.event_id, f.detector, f.x) for f in find(det, alert_id="alert-9")]
[('e1', 'transaction_anomaly', {'amount': 52.1235, 'channel': 'online'})]
>>> [f.detector for f in find(det, event_id="e1")], find(det, event_id="e2")
(['transaction_anomaly'], [])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from detectors.population import FEATURES as POPULATION_FEATURES

KEY = "_fl"
DEFAULT_KEEP = 8
KEYS: dict[str, tuple[str, ...]] = {
    "transaction_anomaly": ("direction", "amount", "hour_of_week", "channel", "country", "mcc"),
    "spending_drift": ("direction", "channel", "amount", "mcc"),
    "velocity_burst": ("debit", "cash", "failed"),
    "repayment_drift": ("repaid", "failed"),
    "population_anomaly": ("segment", *POPULATION_FEATURES),
}
"""Per detector, the features its feedback reads (others flag nothing to learn back)."""


@dataclass(frozen=True, slots=True)
class Flag:
    """One flagged event: who flagged it, the warning raised (if any), the features then."""

    event_id: str
    detector: str
    alert_id: str | None
    x: dict[str, Any]


def compact(detector: str, x: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``x`` that ``detector``'s feedback needs, small and JSON-able."""
    out: dict[str, Any] = {}
    for key in KEYS.get(detector, ()):
        value = x.get(key)
        if isinstance(value, float):
            if value == value and abs(value) != float("inf"):
                out[key] = round(value, 4)
        elif isinstance(value, str | int):
            out[key] = value
    return out


def remember(
    det: dict[str, Any],
    event_id: str,
    detector: str,
    x: Mapping[str, Any],
    *,
    alert_id: str | None = None,
    keep: int = DEFAULT_KEEP,
) -> None:
    """Keep one flag (the oldest go once there are more than ``keep``)."""
    if keep <= 0:
        return
    book = det.get(KEY)
    if not isinstance(book, list):
        book = det[KEY] = []
    book.append([event_id, detector, alert_id, compact(detector, x)])
    if len(book) > keep:
        del book[: len(book) - keep]


def attach_alert(det: dict[str, Any], event_id: str, detector: str, alert_id: str) -> bool:
    """Record the warning raised for a flag; False when the flag is no longer kept."""
    for entry in reversed(det.get(KEY) or ()):
        if entry[0] == event_id and entry[1] == detector:
            entry[2] = alert_id
            return True
    return False


def find(
    det: Mapping[str, Any], *, alert_id: str | None = None, event_id: str | None = None
) -> list[Flag]:
    """The kept flags of a warning (``alert_id``) or of an event (``event_id``)."""
    out = []
    for entry in det.get(KEY) or ():
        if not (isinstance(entry, list) and len(entry) == 4):
            continue  # not a flag this module wrote: ignore rather than fail
        if (alert_id is not None and entry[2] == alert_id) or (
            event_id is not None and entry[0] == event_id
        ):
            out.append(Flag(entry[0], entry[1], entry[2], dict(entry[3])))
    return out


def forget(det: dict[str, Any], flag: Flag) -> None:
    """Drop a flag once its verdict is in (a second verdict on it then changes nothing)."""
    book = det.get(KEY) or []
    det[KEY] = [e for e in book if not (e[0] == flag.event_id and e[1] == flag.detector)]
