"""The rolling risk state of one customer: profile, loans, links and the summary.

This is plain data with a compact dictionary form, so the same object lives in
the memory store (replay, tests) and, serialised, in Redis (the worker).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from risk.income import Income
from risk.loans import Loan
from risk.transactions import TransactionFeatures

STATE_VERSION = 3
DIGEST_CHARS = 12


def event_digest(event_id: str) -> str:
    """A 48-bit digest of an event id: collisions among a customer's last few hundred
    events are vanishingly unlikely (about 1 in 10^10), and it costs 12 characters."""
    return hashlib.blake2b(event_id.encode(), digest_size=6).hexdigest()


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """A cached ZoneInfo; the name was validated at the edge."""
    return ZoneInfo(name)


@dataclass(slots=True)
class CustomerState:
    """Everything creditwatch knows about one customer, as of ``as_of``."""

    customer_id: str
    loans: dict[str, Loan] = field(default_factory=dict)
    timezone: str = "UTC"
    segment: str | None = None
    holiday_calendar: str | None = None
    monthly_income: Decimal | None = None
    currency: str | None = None
    contact_consent: dict[str, bool] | None = None
    links: dict[str, list[str]] = field(default_factory=dict)
    as_of: datetime | None = None
    last_event_at: datetime | None = None
    defaulted_at: datetime | None = None
    risk_score: int = 0
    risk_tier: str = "premium"
    loan_class: str = "normal"
    open_alerts: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    tx: TransactionFeatures = field(default_factory=TransactionFeatures)
    income: Income = field(default_factory=Income)
    related_exposure: dict[str, str] = field(default_factory=dict)  # related id -> amount
    exposure_sent: str = "0"  # own exposure last announced to linked customers
    exposure_alerted: bool = False
    contagion: list[list[str]] = field(default_factory=list)  # [source, relation, at]
    default_notified: bool = False
    seq: int = 0  # commits so far: the store refuses a commit made on an older copy
    seen: str = ""  # 12-hex-digit hashes of the last events applied, newest last
    det: dict[str, Any] = field(default_factory=dict)  # detector models of this customer
    fired: dict[str, int] = field(default_factory=dict)  # dedup key -> last warning (Unix s)
    pd: float | None = None  # the default model's last probability
    detector_points: int = 0  # what the detectors add to the risk score
    contacts: list[list[str]] = field(default_factory=list)  # [channel, local date] planned
    # The live collections task of each loan in arrears, so it can be cancelled:
    # loan id -> [task id, stage, channel, not_before (ISO 8601)].
    tasks: dict[str, list[str]] = field(default_factory=dict)

    def has_seen(self, event_id: str) -> bool:
        """Whether this event was already applied (among the last remembered ones)."""
        digest = event_digest(event_id)
        at = self.seen.find(digest)
        while at != -1:
            if at % DIGEST_CHARS == 0:
                return True
            at = self.seen.find(digest, at + 1)
        return False

    def remember(self, event_id: str, keep: int) -> None:
        """Remember an applied event; only the last ``keep`` are kept."""
        self.seen = (self.seen + event_digest(event_id))[-keep * DIGEST_CHARS :]

    @property
    def tz(self) -> ZoneInfo:
        return zone(self.timezone)

    def bump(self, name: str, by: int = 1) -> None:
        """Increase one of the customer's event counters."""
        self.counters[name] = self.counters.get(name, 0) + by

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": STATE_VERSION,
            "id": self.customer_id,
            "loans": [loan.to_dict() for loan in self.loans.values()],
            "tz": self.timezone,
            "seg": self.segment,
            "hol": self.holiday_calendar,
            "inc": str(self.monthly_income) if self.monthly_income is not None else None,
            "cur": self.currency,
            "cc": self.contact_consent,
            "links": self.links,
            "asof": self.as_of.isoformat() if self.as_of else None,
            "last": self.last_event_at.isoformat() if self.last_event_at else None,
            "dft": self.defaulted_at.isoformat() if self.defaulted_at else None,
            "score": self.risk_score,
            "tier": self.risk_tier,
            "cls": self.loan_class,
            "oa": self.open_alerts,
            "cnt": self.counters,
            "tx": self.tx.to_list(),
            "inc2": self.income.to_list(),
            "rx": self.related_exposure,
            "xs": self.exposure_sent,
            "xa": self.exposure_alerted,
            "ctg": self.contagion,
            "dn": self.default_notified,
            "seq": self.seq,
            "seen": self.seen,
            "det": self.det,
            "fired": self.fired,
            "pd": self.pd,
            "dp": self.detector_points,
            "ct": self.contacts,
            **({"tk": self.tasks} if self.tasks else {}),  # most customers have none
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CustomerState:
        if d.get("v") != STATE_VERSION:
            raise ValueError(f"unsupported customer state version {d.get('v')!r}")

        def ts(value: str | None) -> datetime | None:
            return datetime.fromisoformat(value) if value else None

        return cls(
            customer_id=d["id"],
            loans={ld["id"]: Loan.from_dict(ld) for ld in d["loans"]},
            timezone=d["tz"],
            segment=d["seg"],
            holiday_calendar=d["hol"],
            monthly_income=Decimal(d["inc"]) if d["inc"] is not None else None,
            currency=d["cur"],
            contact_consent=d["cc"],
            links=d["links"],
            as_of=ts(d["asof"]),
            last_event_at=ts(d["last"]),
            defaulted_at=ts(d["dft"]),
            risk_score=d["score"],
            risk_tier=d["tier"],
            loan_class=d["cls"],
            open_alerts=d["oa"],
            counters=d["cnt"],
            tx=TransactionFeatures.from_list(d["tx"], lateness=48 * 3600),
            income=Income.from_list(d["inc2"]),
            related_exposure=d["rx"],
            exposure_sent=d["xs"],
            exposure_alerted=d["xa"],
            contagion=d["ctg"],
            default_notified=d["dn"],
            seq=d["seq"],
            seen=d["seen"],
            # Added after version 3 was first written: absent in older records.
            det=d.get("det") or {},
            fired=d.get("fired") or {},
            pd=d.get("pd"),
            detector_points=d.get("dp", 0),
            contacts=d.get("ct") or [],
            tasks=d.get("tk") or {},
        )
