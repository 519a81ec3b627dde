"""creditwatch: schemas — the wire contract (SPEC.md) as typed records.

Why a package of its own: every other package (risk, detectors, alerts,
streams, the CLI) depends on these records and on nothing else of each other's
wire handling; decoding and validation happen once, here, at the edge.
"""

from schemas.codec import InvalidEvent, dead_letter, decode_event, encode, encode_event
from schemas.events import (
    EVENT_MODELS,
    AlertFeedback,
    BaseEvent,
    CustomerLinked,
    CustomerUnlinked,
    CustomerUpdated,
    InputEvent,
    InstallmentDue,
    LoanClosed,
    LoanOpened,
    LoanRestructured,
    LoanWrittenOff,
    OutcomeDefault,
    OutcomeFraudConfirmed,
    RepaymentFailed,
    RepaymentReceived,
    TransactionPosted,
)
from schemas.outputs import CollectionsTask, DeadLetter, LoanSummary, RiskAlert, RiskState

__all__ = [
    "EVENT_MODELS",
    "AlertFeedback",
    "BaseEvent",
    "CollectionsTask",
    "CustomerLinked",
    "CustomerUnlinked",
    "CustomerUpdated",
    "DeadLetter",
    "InputEvent",
    "InstallmentDue",
    "InvalidEvent",
    "LoanClosed",
    "LoanOpened",
    "LoanRestructured",
    "LoanSummary",
    "LoanWrittenOff",
    "OutcomeDefault",
    "OutcomeFraudConfirmed",
    "RepaymentFailed",
    "RepaymentReceived",
    "RiskAlert",
    "RiskState",
    "TransactionPosted",
    "dead_letter",
    "decode_event",
    "encode",
    "encode_event",
]
