"""All detectors behind one call per event: what the engine (and replay) wires in.

Per event, *before* ``Engine.apply`` changes the state::

    findings = stack.observe(event, state, det)

``det`` is the customer's detector dict (``{detector name: customer model}``,
JSON-able, a few hundred bytes per detector): keep it in the customer's state
and persist it with it. ``observe`` creates or resets (on a version change)
the customer models it needs, scores every detector the event concerns, runs
each score through the adaptive threshold of that detector and segment, and
learns, unless the threshold refused to learn from what it flagged. A
detector an event does not concern (a credit, for all but the burst model
of collections) gives no finding and moves no threshold. Each :class:`Finding` carries the score,
the threshold and whether it flagged; a flagged one also carries the score's
parts for the warning's explanation (every finding does with
``explain_all=True``). Scores go to scores.jsonl.

Flagged events are remembered in ``det`` (:mod:`detectors.flags`, bounded) so
that feedback can reach the detector that flagged them: pass
``alert.feedback`` and ``outcome.fraud_confirmed`` events to
:meth:`Stack.feedback` (it is also safe to pass every event), after telling
the flag book which warning a flag became (:func:`detectors.flags.attach_alert`).
Late default outcomes train the default model through :meth:`Stack.label`,
which :meth:`Stack.observe` calls itself on ``outcome.default``,
``loan.written_off`` and the closing of a customer's last loan.

Shared models (population anomaly per segment, default probability, the
thresholds) live in the stack: :meth:`Stack.save` and :meth:`Stack.restore`
turn them into version-checked blobs (:mod:`detectors.redis_models` keeps them
in Redis).

>>> from risk.customer import CustomerState
>>> from schemas.events import TransactionPosted
>>> stack = Stack()
>>> st, det = CustomerState(customer_id="c1"), {}
>>> ev = TransactionPosted(event_id="e1", customer_id="c1",
...     occurred_at="2026-01-05T10:00:00+00:00", account_id="a1", amount="50.00",
...     currency="CNY", direction="debit", channel="card", country="CN")
>>> [f.detector for f in stack.observe(ev, st, det)]
['transaction_anomaly', 'spending_drift', 'velocity_burst', 'population_anomaly']
>>> salary = ev.model_copy(update={"event_id": "e2", "direction": "credit"})
>>> stack.observe(salary, st, det)
[]
>>> sorted(det)
['spending_drift', 'transaction_anomaly', 'velocity_burst']
>>> blobs = stack.save()
>>> Stack.restore(blobs).shared["population_anomaly"].models.keys() == (
...     stack.shared["population_anomaly"].models.keys())
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from detectors import flags, persistence
from detectors.base import CustomerDetector, CustomerModel, Detector
from detectors.default_probability import DefaultProbability
from detectors.features import repayment_x, risk_x, transaction_x
from detectors.registry import REGISTRY, Spec
from detectors.thresholds import Thresholds

TRANSACTION = ("transaction_anomaly", "spending_drift", "velocity_burst", "population_anomaly")
COLLECTION = ("repayment_drift", "velocity_burst")
COLLECTION_EVENTS = frozenset({"repayment.received", "repayment.failed"})
SERVICING = frozenset({"installment.due", "repayment.received", "repayment.failed"})
PD = "default_probability"
THRESHOLDS_VERSION = "thresholds@2"


@dataclass(slots=True)
class Finding:
    """One detector's verdict on one event."""

    detector: str
    score: float
    threshold: float | None
    flagged: bool
    explanation: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "score": round(self.score, 6),
            "threshold": None if self.threshold is None else round(self.threshold, 6),
            "flagged": self.flagged,
            "explanation": self.explanation,
        }


class Stack:
    """The registry's detectors, their thresholds, and the per-event flow."""

    def __init__(
        self,
        *,
        specs: Mapping[str, Spec] = REGISTRY,
        thresholds: Thresholds | None = None,
        shared: dict[str, Detector] | None = None,
        explain_all: bool = False,
        flags_kept: int = flags.DEFAULT_KEEP,
    ) -> None:
        self.specs = dict(specs)
        self.thresholds = thresholds or Thresholds()
        self.explain_all = explain_all
        self.flags_kept = flags_kept
        self.customer: dict[str, CustomerDetector] = {}
        self.shared: dict[str, Detector] = dict(shared or {})
        for name, spec in self.specs.items():
            if spec.kind == "customer":
                self.customer[name] = cast(CustomerDetector, spec.build())
            elif name not in self.shared:
                self.shared[name] = cast(Detector, spec.build())
        self._tags = {name: self.specs[name].tag for name in self.specs}
        self._transaction = tuple(n for n in TRANSACTION if n in self.specs)
        self._collection = tuple(n for n in COLLECTION if n in self.specs)
        self.restored: list[str] = []  # what :meth:`restore` found in its blobs

    # -- customer models ---------------------------------------------------------

    def model(self, det: dict[str, CustomerModel], name: str) -> CustomerModel:
        """The customer's model for ``name``: fresh when missing or of another version."""
        model = det.get(name)
        if model is None or model.get("_v") != self._tags[name]:
            if name == PD:
                model = cast(DefaultProbability, self.shared[PD]).new_book()
            else:
                model = self.customer[name].init()
            model["_v"] = self._tags[name]
            det[name] = model
        return model

    # -- per event ---------------------------------------------------------------

    def observe(self, event: Any, st: Any, det: dict[str, CustomerModel]) -> list[Finding]:
        """Score, threshold and learn one event (call before the engine applies it)."""
        etype = event.type
        if etype == "transaction.posted":
            x: dict[str, Any] | None = transaction_x(event, st)
            names = self._transaction
        elif etype in COLLECTION_EVENTS:
            x = repayment_x(event, st)
            names = self._collection
        else:
            x, names = None, ()
        findings: list[Finding] = []
        segment = st.segment or "unknown"
        if x is not None:
            customer = self.customer
            for name in names:
                if name in customer:
                    finding = self._customer_step(name, x, det, segment)
                    if finding is not None:
                        findings.append(finding)
                else:
                    finding = self._shared_step(name, x, segment)
                    if finding is not None:
                        findings.append(finding)
            if self.flags_kept:
                for f in findings:
                    if f.flagged:
                        flags.remember(det, event.event_id, f.detector, x, keep=self.flags_kept)
        if etype in SERVICING:
            if PD in self.shared:
                findings.append(self._pd_step(event, st, det, segment))
        elif etype in ("outcome.default", "loan.written_off"):
            self.label(det, defaulted=True)
        elif etype == "loan.closed":
            still_open = [
                ln
                for ln in st.loans.values()
                if ln.status == "open" and ln.loan_id != event.loan_id
            ]
            if not still_open:
                self.label(det, defaulted=False)
        return findings

    def _customer_step(
        self, name: str, x: dict[str, Any], det: dict[str, CustomerModel], segment: str
    ) -> Finding | None:
        detector = self.customer[name]
        model = det.get(name)
        if model is None or model.get("_v") != self._tags[name]:
            model = self.model(det, name)
        score, memo = detector.begin(x, model)
        if memo is None:
            return None  # not this detector's kind of event (a credit for a spending model)
        decision = self.thresholds.observe(name, segment, score)
        flagged = decision.flagged
        parts = detector.parts(memo, model) if flagged or self.explain_all else {}
        detector.finish(memo, model, decision.learn)
        return Finding(name, score, decision.threshold, flagged, parts)

    def _shared_step(self, name: str, x: dict[str, Any], segment: str) -> Finding | None:
        detector = self.shared[name]
        score, memo = detector.begin(x)
        if memo is None:
            return None
        decision = self.thresholds.observe(name, segment, score)
        detector.finish(memo, decision.learn)
        return Finding(name, score, decision.threshold, decision.flagged)

    def _pd_step(self, event: Any, st: Any, det: dict[str, CustomerModel], segment: str) -> Finding:
        pd_model = cast(DefaultProbability, self.shared[PD])
        at = event.occurred_at.timestamp()
        drift = det.get("repayment_drift")
        x = risk_x(st, int(at), drift_score=sum(drift["c"]) if drift else 0.0)
        score = pd_model.score_one(x)
        decision = self.thresholds.observe(PD, segment, score)
        for snapshot, label in pd_model.remember(x, at, self.model(det, PD)):
            pd_model.feedback(snapshot, label)
        return Finding(PD, score, decision.threshold, decision.flagged, {"features": x})

    # -- labels and verdicts -------------------------------------------------------

    def label(self, det: dict[str, CustomerModel], *, defaulted: bool) -> None:
        """A late outcome: teach the default model the customer's snapshots, as they were."""
        if PD not in self.shared or PD not in det:
            return
        pd_model = cast(DefaultProbability, self.shared[PD])
        for snapshot, label in pd_model.resolve(self.model(det, PD), defaulted=defaulted):
            pd_model.feedback(snapshot, label)

    def verdict(
        self, name: str, x: Mapping[str, Any], det: dict[str, CustomerModel], true_positive: bool
    ) -> None:
        """An analyst's verdict (alert.feedback) or a confirmed fraud on what ``name`` flagged.

        ``x`` is what the detector saw (:func:`detectors.flags.find` keeps it);
        with an empty ``x`` only what needs no features happens (e.g. a drift's
        CUSUMs are emptied on a false positive). The default model learns from
        outcomes only (:meth:`label`): an opinion on its warning is not a default.
        """
        if name == PD:
            return
        if name in self.customer:
            self.customer[name].feedback(x, self.model(det, name), true_positive)
        elif name in self.shared:
            self.shared[name].feedback(x, true_positive)

    def feedback(self, event: Any, det: dict[str, CustomerModel]) -> list[flags.Flag]:
        """Route ``alert.feedback`` / ``outcome.fraud_confirmed`` to the detectors that flagged.

        Returns the flags the verdict reached (none for a warning no detector
        raised, or a transaction no detector flagged). Each flag takes one
        verdict: it is forgotten once taught. Other event types are ignored.
        """
        etype = event.type
        if etype == "alert.feedback":
            found = flags.find(det, alert_id=event.alert_id)
            true_positive = event.verdict == "true_positive"
        elif etype == "outcome.fraud_confirmed":
            found = flags.find(det, event_id=event.transaction_event_id)
            true_positive = True
        else:
            return []
        for flag in found:
            self.verdict(flag.detector, flag.x, det, true_positive)
            flags.forget(det, flag)
        return found

    # -- persistence -------------------------------------------------------------

    def save(self) -> dict[str, bytes]:
        """Version-headed blobs of the shared models and thresholds, by name."""
        blobs = {
            name: persistence.dumps(m, self.specs[name].version) for name, m in self.shared.items()
        }
        blobs["thresholds"] = persistence.dumps(self.thresholds, THRESHOLDS_VERSION)
        return blobs

    @classmethod
    def restore(
        cls,
        blobs: Mapping[str, bytes | None],
        *,
        specs: Mapping[str, Spec] = REGISTRY,
        **options: Any,
    ) -> Stack:
        """A stack from saved blobs; any blob of another version (or unreadable) starts fresh.

        ``options`` are the constructor's (``explain_all``, ``flags_kept``);
        ``restored`` names what came back from its blob.
        """
        shared: dict[str, Detector] = {}
        for name, spec in specs.items():
            if spec.kind == "shared":
                model = persistence.loads(blobs.get(name), spec.version)
                if model is not None:
                    shared[name] = model
        thresholds = persistence.loads(blobs.get("thresholds"), THRESHOLDS_VERSION)
        stack = cls(specs=specs, thresholds=thresholds, shared=shared, **options)
        stack.restored = [*shared, *(["thresholds"] if thresholds is not None else [])]
        return stack
