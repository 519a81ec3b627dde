"""The engine, the rule set and the detectors together: what judges each event.

:class:`risk.engine.Engine` keeps the books (DPD, classes, features, score,
collections tasks); this layer decides which of it the desk hears about.
Per event, the order is fixed, because every part must see the customer as
it stood *before* the event while the rules compare with the state *after*:

1. for a servicing event, the customer is first walked day by day (local
   midnights) up to the event's time, each day judged as a ``tick``;
2. the detectors score the event against the customer's models, then learn
   (:meth:`detectors.stack.Stack.observe`); the default probability feeds the
   risk score the engine computes next;
3. the rule set captures what its rules compare with, the engine applies the
   event, and the rules judge the state after it, with the detectors' scores;
4. hits become warnings unless the rule's cooldown for that dedup key is
   still running; flagged detector findings become warnings of their own.

Why day by day: DPD changes only at the customer's local midnight, so judging
each midnight (and never the odd instant a worker's tick happens to run at)
stamps every DPD warning with the exact day it became true and gives the
worker and ``creditwatch replay`` the same warnings whatever their tick
cadence. The rule-set version is read once per event, so an event is judged
wholly by one version even while a new one is being installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, time, timedelta
from typing import Any

from config.settings import Settings
from detectors import flags
from detectors.stack import Finding, Stack
from risk.customer import CustomerState
from risk.engine import CLOCK_EVENTS, Engine, Outcome
from risk.ids import stable_id
from rules.engine import CompiledRuleSet, Hit
from rules.features import Tick
from schemas.outputs import RiskAlert, RiskState

RuleSource = Callable[[], CompiledRuleSet | None]
MAX_FIRED = 64
"""Dedup keys remembered per customer for cooldowns; the oldest go first."""
DETECTOR_SEVERITY = {"default_probability": "high"}


class Judge:
    """Engine + rules + detectors behind the engine's own interface.

    The processor (worker and replay alike) calls :meth:`apply`,
    :meth:`advance` and :meth:`summary` as it would on the engine.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        rules: RuleSource | None = None,
        stack: Stack | None = None,
    ) -> None:
        self.engine = engine
        self.settings: Settings = engine.settings
        self.rules = rules
        self.stack = stack
        # With a rule set in charge, the engine's own threshold warnings would
        # repeat what the rules say: it keeps classification warnings only.
        engine.builtin_rules = rules is None
        det = self.settings.detectors
        self._detector_cooldown = int(det.alert_cooldown_hours * 3600)
        self._pd_points = det.default_probability_points

    # -- the engine's interface -------------------------------------------------------

    def summary(self, st: CustomerState) -> RiskState:
        return self.engine.summary(st)

    def features(self, st: CustomerState) -> dict[str, Any]:
        return self.engine.features(st)

    def apply(self, state: CustomerState | None, event: Any) -> tuple[CustomerState, Outcome]:
        """Judge one validated input event; ``state`` is mutated and returned."""
        st = state if state is not None else CustomerState(customer_id=event.customer_id)
        rs = self._current()
        walked: Outcome | None = None
        if rs is not None and event.type in CLOCK_EVENTS:
            walked = Outcome()
            self._walk_days(st, event.occurred_at, rs, walked)
        findings: list[Finding] = []
        if self.stack is not None:
            findings = self.stack.observe(event, st, st.det)
            self._take_default_probability(st, findings)
            # An analyst's verdict or a confirmed fraud teaches the detector that flagged it.
            self.stack.feedback(event, st.det)
        scores = {f.detector: f.score for f in findings}
        before = rs.capture(st, self.engine, event) if rs is not None else None
        st, out = self.engine.apply(st, event)
        if walked is not None and (walked or walked.rule_errors):
            _extend(walked, out)  # what the days walked produced comes first
            out = walked
        if rs is not None:
            view = rs.view(st, self.engine, event, before)
            verdict = rs.evaluate(event, view, scores)
            if verdict.errors:
                out.rule_errors.extend(verdict.errors)
            if verdict.hits:
                self._raise(
                    st, out, verdict.hits, event.occurred_at, (event.event_id,), scores, event
                )
        for finding in findings:
            if finding.flagged:
                self._detector_alert(st, out, event, finding, rs)
        out.scores = scores
        return st, out

    def advance(self, state: CustomerState, to: datetime) -> Outcome:
        """Let time pass: each local midnight on the way is judged as a ``tick``."""
        rs = self._current()
        if rs is None:
            return self.engine.advance(state, to)
        out = Outcome()
        if self._walk_days(state, to, rs, out, then=True) and self.engine.at_rest(state, to):
            state.as_of = to  # the one thing the step would change
        else:
            self.engine.advance(state, to, out)
        return out

    def _current(self) -> CompiledRuleSet | None:
        """The version that judges this step; the engine's own warnings carry it too."""
        rs = self.rules() if self.rules is not None else None
        if rs is not None:
            self.engine.rule_set_version = rs.version
        return rs

    # -- time -------------------------------------------------------------------------

    def _walk_days(
        self,
        st: CustomerState,
        to: datetime,
        rs: CompiledRuleSet,
        out: Outcome,
        *,
        then: bool = False,
    ) -> bool:
        """Advance to each local midnight in ``(as_of, to]``, judging each as a tick.

        Most days change nothing: no loan is past due, no income turns late.
        After a day stepped and judged in full that raised no warning, the
        state is *at rest* when its summary is settled
        (:meth:`risk.engine.Engine.settled`) and a tick judged on it, before
        and after alike, finds nothing
        (:meth:`rules.engine.CompiledRuleSet.finds_nothing`). Each following
        day on which the engine's step would change nothing but the instant
        (:meth:`risk.engine.Engine.at_rest`) then only moves the instant:
        with a rule set whose ticks read the state alone
        (:attr:`rules.engine.CompiledRuleSet.quiet_ticks`), that day's tick
        would be judged on this very state before and after, and find
        nothing. The first day that can change something is stepped and
        judged in full again.

        With ``then`` (the engine steps to ``to`` next), returns whether the
        last day left the summary settled and raised no warning; else False.
        """
        if st.as_of is None or to <= st.as_of:
            return False
        if not any(ln.status == "open" for ln in st.loans.values()):
            return False  # nothing ages: no day needs judging
        engine = self.engine
        judged = bool(rs.rules_for("tick"))  # else a day is the engine's step alone
        tz = st.tz
        one_day = timedelta(days=1)
        day = st.as_of.astimezone(tz).date() + one_day
        midnight = datetime.combine(day, time(0), tzinfo=tz)
        settled = False  # the summary as the last step left it, settled, no warning since
        at_rest = False  # and a tick judged on the state finds nothing
        while midnight <= to:
            following = datetime.combine(day + one_day, time(0), tzinfo=tz)
            more = following <= to  # another day to walk
            if at_rest and engine.at_rest(st, midnight):
                st.as_of = midnight  # the one thing the day's step and tick would change
            elif not judged:
                engine.advance(st, midnight, out)
                settled = (more or then) and engine.settled(st)
                at_rest = more and settled
            else:
                tick = Tick.model_construct(  # already valid: skip validation per day
                    event_id=f"tick:{midnight.isoformat()}",
                    customer_id=st.customer_id,
                    occurred_at=midnight,
                )
                before = rs.capture(st, engine, tick)
                engine.advance(st, midnight, out)
                view = rs.view(st, engine, tick, before)
                verdict = rs.evaluate(tick, view)
                if verdict.errors:
                    out.rule_errors.extend(verdict.errors)
                if verdict.hits:
                    self._raise(st, out, verdict.hits, midnight, (), {}, None)
                settled = (more or then) and not verdict.hits and engine.settled(st)
                at_rest = more and settled and rs.quiet_ticks and rs.finds_nothing(st, engine, tick)
            day += one_day
            midnight = following
        return settled

    # -- warnings ---------------------------------------------------------------------

    def _raise(
        self,
        st: CustomerState,
        out: Outcome,
        hits: Iterable[Hit],
        at: datetime,
        evidence: tuple[str, ...],
        scores: Mapping[str, float],
        event: Any,
    ) -> None:
        now = int(at.timestamp())
        # A warning caused by a related party's news (a guarantor or group
        # member defaulting, the group's exposure) is contagion, named as such.
        related = event is not None and event.type.startswith("related.")
        for hit in hits:
            if not self._cooled(st, hit.dedup_key, now, hit.cooldown_seconds):
                continue
            loan_id = hit.loan_id or _worst_loan(st)
            explanation = dict(hit.explanation)
            explanation["route"] = hit.route
            if scores:
                explanation["detector_scores"] = {k: round(v, 6) for k, v in scores.items()}
            if related:
                explanation["source_customer_id"] = event.related_customer_id
                explanation["relation"] = event.relation
            self._alert(
                st,
                out,
                alert_id=hit.alert_id,
                dedup_key=hit.dedup_key,
                loan_id=loan_id,
                severity=hit.severity,
                source="contagion" if related else "rule",
                code=hit.rule_id,
                title=hit.title,
                explanation=explanation,
                at=at,
                evidence=evidence,
                version=hit.rule_set_version,
            )

    def _detector_alert(
        self,
        st: CustomerState,
        out: Outcome,
        event: Any,
        finding: Finding,
        rs: CompiledRuleSet | None,
    ) -> None:
        dedup = f"{st.customer_id}:detector:{finding.detector}"
        now = int(event.occurred_at.timestamp())
        if not self._cooled(st, dedup, now, self._detector_cooldown):
            return
        alert_id = stable_id("alert", st.customer_id, dedup, event.event_id)
        self._alert(
            st,
            out,
            alert_id=alert_id,
            dedup_key=dedup,
            loan_id=getattr(event, "loan_id", None),
            severity=DETECTOR_SEVERITY.get(finding.detector, "warning"),
            source="detector",
            code=finding.detector,
            title=f"Unusual activity: {finding.detector.replace('_', ' ')}",
            explanation={"route": "risk_desk", **finding.to_dict()},
            at=event.occurred_at,
            evidence=(event.event_id,),
            version=rs.version if rs is not None else self.engine.rule_set_version,
        )
        flags.attach_alert(st.det, event.event_id, finding.detector, alert_id)

    def _alert(
        self,
        st: CustomerState,
        out: Outcome,
        *,
        alert_id: str,
        dedup_key: str,
        loan_id: str | None,
        severity: str,
        source: str,
        code: str,
        title: str,
        explanation: dict[str, Any],
        at: datetime,
        evidence: tuple[str, ...],
        version: str,
    ) -> None:
        loan = st.loans.get(loan_id) if loan_id else None
        if loan is not None:
            loan.open_alerts += 1
        st.open_alerts += 1
        out.alerts.append(
            RiskAlert(
                alert_id=alert_id,
                dedup_key=dedup_key,
                customer_id=st.customer_id,
                loan_id=loan_id,
                severity=severity,
                source=source,
                code=code,
                title=title,
                explanation=explanation,
                risk_score=st.risk_score,
                risk_tier=st.risk_tier,
                loan_class=st.loan_class,
                triggered_at=at.astimezone(st.tz),
                evidence_event_ids=list(evidence),
                rule_set_version=version,
                status="firing",
            )
        )

    @staticmethod
    def _cooled(st: CustomerState, key: str, now: int, cooldown: int) -> bool:
        """Whether ``key`` may fire at ``now``; records the firing when it may."""
        last = st.fired.get(key)
        if last is not None and now - last < cooldown:
            return False
        st.fired.pop(key, None)
        st.fired[key] = now
        while len(st.fired) > MAX_FIRED:
            st.fired.pop(next(iter(st.fired)))
        return True

    # -- detectors --------------------------------------------------------------------

    def _take_default_probability(self, st: CustomerState, findings: list[Finding]) -> None:
        """The default model's probability, as score points the engine adds next."""
        for f in findings:
            if f.detector == "default_probability":
                st.pd = round(min(max(f.score, 0.0), 1.0), 4)
                st.detector_points = round(st.pd * self._pd_points)


def _worst_loan(st: CustomerState) -> str | None:
    """The open loan furthest past due: what a customer-level DPD warning is about."""
    open_loans = [ln for ln in st.loans.values() if ln.status == "open"]
    if not open_loans:
        return None
    return max(open_loans, key=lambda ln: (ln.dpd_seen, ln.loan_id)).loan_id


def _extend(out: Outcome, step: Outcome) -> None:
    out.alerts.extend(step.alerts)
    out.tasks.extend(step.tasks)
    out.states.extend(step.states)
    out.internal.extend(step.internal)
    out.rule_errors.extend(step.rule_errors)


def build_judge(
    settings: Settings,
    *,
    rule_set: CompiledRuleSet | None = None,
    rules: RuleSource | None = None,
    stack: Stack | None = None,
) -> Judge:
    """The judge the settings ask for.

    ``rules`` (a callable returning the current version, e.g. a worker's holder)
    wins over ``rule_set`` (one fixed version, e.g. a backtest's candidate);
    with neither, the configured file (or the shipped default pack) is loaded.
    With rules disabled in the settings, the engine's built-in warnings remain.
    """
    source: RuleSource | None = None
    if settings.rules.enabled:
        if rules is not None:
            source = rules
        else:
            fixed = rule_set if rule_set is not None else load_configured_rules(settings)
            source = lambda: fixed  # noqa: E731 - one fixed version
    if stack is None and settings.detectors.enabled:
        stack = Stack(flags_kept=settings.detectors.explained_alerts_per_customer)
    return Judge(Engine(settings, builtin_rules=source is None), rules=source, stack=stack)


def load_configured_rules(settings: Settings) -> CompiledRuleSet:
    """The rule set file the settings name, or the shipped default pack."""
    from rules.loader import DEFAULT_PACK, load_file

    return load_file(settings.rules.file or DEFAULT_PACK)
