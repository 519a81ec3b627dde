"""The pure core: ``(customer state, event) -> (new state, outputs)``.

No I/O happens here: the same engine runs inside a Faust agent and inside
``creditwatch replay``. Time is event time. Before an event is applied the
customer is first moved forward to the event's time, so any DPD threshold
crossed in between fires with the exact instant it was crossed (local
midnight of the day the DPD reached it, in the customer's time zone), whatever
moment the crossing is noticed at. That makes the warnings independent of how
often the daily DPD tick runs, and identical between the worker and replay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from config.settings import Settings
from risk import signals
from risk.classification import RANK, class_boundaries, loan_class, worst
from risk.contact import ContactPolicy, next_lawful_contact
from risk.customer import CustomerState
from risk.ids import stable_id
from risk.loans import ZERO, Loan
from risk.score import DELINQUENCY_POINTS, score_components, score_total, tier_for
from schemas.events import (
    AlertFeedback,
    CustomerLinked,
    CustomerUnlinked,
    CustomerUpdated,
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
from schemas.outputs import CollectionsTask, LoanSummary, RiskAlert, RiskState

DPD_SEVERITY = {1: "warning", 30: "warning", 60: "high", 90: "critical"}
CLASS_SEVERITY = {
    "normal": "info",
    "special_mention": "warning",
    "substandard": "high",
    "doubtful": "critical",
    "loss": "critical",
}
STAGE_CHANNELS: dict[str, tuple[str, ...]] = {
    "reminder": ("sms", "email", "letter"),
    "call": ("phone", "sms", "letter"),
    "visit": ("visit", "letter"),
    "legal_review": ("letter",),
}
STAGE_PRIORITY = {"reminder": 1, "call": 2, "visit": 3, "legal_review": 4}


@dataclass(slots=True)
class Outcome:
    """What one step produced, in the order it happened."""

    alerts: list[RiskAlert] = field(default_factory=list)
    tasks: list[CollectionsTask] = field(default_factory=list)
    states: list[RiskState] = field(default_factory=list)
    internal: list[dict[str, Any]] = field(default_factory=list)  # for related customers
    scores: dict[str, float] = field(default_factory=dict)  # detector scores of the event
    rule_errors: list[Any] = field(default_factory=list)  # rules that raised while judging

    def __bool__(self) -> bool:
        return bool(self.alerts or self.tasks or self.states or self.internal)


class Engine:
    """Applies events and the passage of time to a customer's state."""

    def __init__(
        self,
        settings: Settings,
        *,
        rule_set_version: str = "builtin-1",
        builtin_rules: bool = True,
    ) -> None:
        self.settings = settings
        self.rule_set_version = rule_set_version
        # True: the engine raises its own threshold and contagion warnings. A
        # rule set in charge (risk.judge) turns them off; classification stays.
        self.builtin_rules = builtin_rules
        self._bands = settings.classification
        self._thresholds = tuple(settings.alerts.dpd_thresholds)
        self._stages = settings.collections.stage_starts
        self._tiers = settings.tiers
        self._diversion_share = Decimal(str(settings.features.diversion_alert_share))
        cfg = settings.collections
        self._contact = ContactPolicy(
            quiet_start=cfg.quiet_start_hour,
            quiet_end=cfg.quiet_end_hour,
            skip_weekends=cfg.skip_weekends,
            skip_holidays=cfg.skip_public_holidays,
        )
        self._marks = tuple(
            sorted(
                set(self._thresholds)
                | set(class_boundaries(self._bands))
                | {start for start, _ in self._stages}
                | {start for start, _ in DELINQUENCY_POINTS}
            )
        )
        self._handlers: dict[str, Callable[[CustomerState, Any, datetime, Outcome], str | None]] = {
            "transaction.posted": self._on_transaction,
            "installment.due": self._on_installment_due,
            "repayment.received": self._on_repayment,
            "repayment.failed": self._on_repayment_failed,
            "loan.opened": self._on_loan_opened,
            "loan.restructured": self._on_loan_restructured,
            "loan.closed": self._on_loan_closed,
            "loan.written_off": self._on_loan_written_off,
            "customer.updated": self._on_customer_updated,
            "customer.linked": self._on_customer_linked,
            "customer.unlinked": self._on_customer_unlinked,
            "outcome.default": self._on_default,
            "outcome.fraud_confirmed": self._on_fraud_confirmed,
            "alert.feedback": self._on_feedback,
            "related.exposure": self._on_related_exposure,
            "related.default": self._on_related_default,
        }

    # -- public API -----------------------------------------------------------

    def apply(self, state: CustomerState | None, event: Any) -> tuple[CustomerState, Outcome]:
        """Apply one validated input event; ``state`` is mutated and returned.

        Only servicing events (instalments and repayments, the system of record
        for arrears) move the customer's DPD clock forward: a card payment dated
        next week says nothing about whether a repayment is still in flight, so
        it must not age arrears. Other events are applied at the customer's
        current instant and their warnings carry their own event time.
        """
        st = state if state is not None else CustomerState(customer_id=event.customer_id)
        out = Outcome()
        at: datetime = event.occurred_at
        now = at
        if event.type in CLOCK_EVENTS:
            if st.as_of is None or at > st.as_of:
                self._progress(st, at, out)
            # A late servicing event is applied at the customer's current instant:
            # time does not run backwards for arrears already reported.
            now = st.as_of or at
        dpd_at = st.as_of or at
        override = self._handlers[event.type](st, event, now, out)
        reason = override or REASONS.get(event.type, "repayment activity")
        self._reassess(
            st,
            now,
            out,
            evidence=(event.event_id,),
            reason=reason,
            dpd_at=dpd_at,
            cause=event.type,
        )
        if st.last_event_at is None or at > st.last_event_at:
            st.last_event_at = at
        signals.check_income(self, st, at, out)
        signals.announce(self, st, now, event.event_id, out)
        return st, out

    def advance(self, state: CustomerState, to: datetime, out: Outcome | None = None) -> Outcome:
        """Let time pass for a customer with no event: DPD grows, thresholds fire.

        What it produces is appended to ``out`` when given (and returned).
        """
        if out is None:
            out = Outcome()
        if state.as_of is None or to > state.as_of:
            self._progress(state, to, out)
            # A salary that fails to arrive is news even when nothing else happens.
            signals.check_income(self, state, to, out)
            signals.announce(self, state, to, None, out)  # cause: the tick at ``to``
        return out

    def at_rest(self, st: CustomerState, to: datetime) -> bool:
        """Whether :meth:`advance` to ``to`` would change nothing but the state's instant.

        For a state whose last step was this engine's (its announcements are
        as that step left them: a warning raised since moves only counts of
        warnings, which they do not read) and whose summary is
        :meth:`settled`: when, at ``to``, no open loan is past due nor was
        (DPD 0 before and after: no mark is crossed) and the primary income
        does not turn late, the step only recomputes the same summary and
        the same announcements, and publishes nothing.
        """
        if st.as_of is None or to <= st.as_of:
            return False
        on = to.astimezone(st.tz).date()
        for loan in st.loans.values():
            if loan.status == "open" and (loan.dpd_seen or loan.oldest_unpaid(on) is not None):
                return False
        income = st.income
        if income.primary is not None:
            late = income.overdue_since(signals.epoch(to), self.settings.features.salary_grace_days)
            if late is not None and late != income.late_alerted_for:
                return False
        return True

    def summary(self, st: CustomerState) -> RiskState:
        """The customer's risk state in the contract's shape."""
        as_of = st.as_of or st.last_event_at
        local = self.local_date(st, as_of) if as_of else None
        loans = {
            loan.loan_id: LoanSummary(
                loan_id=loan.loan_id,
                dpd=loan.dpd_seen,
                overdue_amount=loan.overdue_amount(local) if local else ZERO,
                currency=loan.currency,
                loan_class=loan.loan_class,
                outstanding_principal=loan.outstanding_principal,
                status=loan.status,
            )
            for loan in st.loans.values()
        }
        exposure = sum((loan.outstanding_principal for loan in st.loans.values()), start=ZERO)
        return RiskState(
            customer_id=st.customer_id,
            risk_score=st.risk_score,
            risk_tier=st.risk_tier,
            loan_class=st.loan_class,
            loans=loans,
            max_dpd=self._max_dpd(st),
            total_exposure=exposure,
            open_alerts=st.open_alerts,
            features=self.features(st),
            last_event_at=st.last_event_at,
        )

    def features(self, st: CustomerState) -> dict[str, Any]:
        """The rolling values the score rests on, with each score component."""
        components = self._components(st)
        as_of = st.as_of or st.last_event_at
        local = self.local_date(st, as_of) if as_of else None
        now = int(as_of.timestamp()) if as_of else 0
        window = self.settings.features.on_time_instalments
        loans: dict[str, Any] = {}
        for ln in st.loans.values():
            ratio = ln.on_time_ratio(local) if local else None
            recent = ln.history[-window:]
            loans[ln.loan_id] = {
                "on_time_ratio": None if ratio is None else round(ratio, 4),
                "recent_instalments": recent,
                "partial_payments": ln.partial_payments,
                "failed_collections_30d": ln.failed_within(30, now),
                "failed_in_a_row": ln.failed_streak,
                "months_since_delinquency": self._months_since(ln.last_delinquent, local),
                "diverted_share": (
                    float(round(ln.diverted / ln.principal, 4)) if ln.principal else 0.0
                ),
                "restructured": ln.restructured,
                "cure_progress": ln.cure_streak if ln.restructured else None,
                "class_migrations": ln.migrations,
            }
        ratios = [v["on_time_ratio"] for v in loans.values() if v["on_time_ratio"] is not None]
        months = [
            v["months_since_delinquency"]
            for v in loans.values()
            if v["months_since_delinquency"] is not None
        ]
        return {
            "score_components": components,
            "max_dpd": self._max_dpd(st),
            "max_failed_streak": max((ln.failed_streak for ln in st.loans.values()), default=0),
            "worst_on_time_ratio": min(ratios) if ratios else None,
            "partial_payments": sum(v["partial_payments"] for v in loans.values()),
            "failed_collections_30d": sum(v["failed_collections_30d"] for v in loans.values()),
            "months_since_delinquency": min(months) if months else None,
            "max_diverted_share": max((v["diverted_share"] for v in loans.values()), default=0.0),
            "open_loans": sum(1 for ln in st.loans.values() if ln.status == "open"),
            "restructured_loans": sum(1 for ln in st.loans.values() if ln.restructured),
            "defaulted": st.defaulted_at is not None,
            "as_of": as_of.astimezone(st.tz).isoformat() if as_of else None,
            "loans": loans,
            **st.tx.features(),
            **signals.features(st, as_of),
            **{f"count_{k}": v for k, v in sorted(st.counters.items())},
        }

    @staticmethod
    def _months_since(iso: str | None, local: date | None) -> float | None:
        if iso is None or local is None:
            return None
        return round(max((local - date.fromisoformat(iso)).days, 0) / 30.4, 1)

    @staticmethod
    def local_date(st: CustomerState, at: datetime) -> date:
        """The calendar date in the customer's own time zone at instant ``at``."""
        return at.astimezone(st.tz).date()

    def _clock_date(self, st: CustomerState, now: datetime) -> date:
        """The local date of the customer's DPD clock (what arrears are judged at)."""
        return self.local_date(st, st.as_of or now)

    # -- time passing ---------------------------------------------------------

    def _progress(self, st: CustomerState, to: datetime, out: Outcome) -> None:
        """Fire every DPD mark crossed between ``st.as_of`` and ``to``, in time order."""
        to_date = to.astimezone(st.tz).date()
        crossings: list[tuple[datetime, str, int]] = []
        for loan in st.loans.values():
            if loan.status != "open":
                continue
            inst = loan.oldest_unpaid(to_date)
            if inst is None:
                continue
            new_dpd = (to_date - inst.due_date).days
            seen = loan.dpd_seen
            if new_dpd <= seen:
                continue  # no mark lies in (seen, new_dpd]
            for mark in self._marks:
                if seen < mark <= new_dpd:
                    when = datetime.combine(
                        inst.due_date + timedelta(days=mark), time(0), tzinfo=st.tz
                    )
                    crossings.append((when, loan.loan_id, mark))
        if crossings:
            crossings.sort()
            for when, loan_id, mark in crossings:
                st.as_of = max(st.as_of, when) if st.as_of else when
                self._sync_dpd(st, when.date(), but=loan_id)
                self._move_loan(st, st.loans[loan_id], mark, when, out, (), "days past due")
        st.as_of = to
        for loan in st.loans.values():
            if loan.status == "open":
                inst = loan.oldest_unpaid(to_date)  # Loan.dpd of an open loan
                loan.dpd_seen = (to_date - inst.due_date).days if inst else 0
        self._summarize(st, to, out)

    def _sync_dpd(self, st: CustomerState, on: date, *, but: str) -> None:
        """Bring the other loans' DPD up to ``on`` without stepping over an unfired mark.

        A crossing is judged with every loan as it stood at that instant, so the
        score on a warning does not depend on when the last tick happened to run.
        """
        for loan in st.loans.values():
            if loan.status != "open" or loan.loan_id == but:
                continue
            next_mark = next((m for m in self._marks if m > loan.dpd_seen), None)
            dpd = loan.dpd(on)
            if next_mark is not None:
                dpd = min(dpd, next_mark - 1)
            loan.dpd_seen = max(loan.dpd_seen, dpd)

    def _reassess(
        self,
        st: CustomerState,
        at: datetime,
        out: Outcome,
        *,
        evidence: tuple[str, ...],
        reason: str,
        dpd_at: datetime,
        cause: str = "",
    ) -> None:
        """After an event changed a loan: move each loan to its DPD and class.

        DPD is judged at ``dpd_at`` (the customer's DPD clock); warnings are
        stamped ``at`` (the event's own time). ``cause`` is the event type.
        """
        local = self.local_date(st, dpd_at)
        for loan in st.loans.values():
            new_dpd = loan.dpd(local) if loan.status == "open" else loan.dpd_seen
            self._move_loan(
                st,
                loan,
                new_dpd,
                at,
                out,
                evidence,
                reason,
                dpd_at=dpd_at,
                cause=cause,
                local=local,
            )
        self._summarize(st, at, out)

    def _move_loan(
        self,
        st: CustomerState,
        loan: Loan,
        new_dpd: int,
        at: datetime,
        out: Outcome,
        evidence: tuple[str, ...],
        reason: str,
        *,
        dpd_at: datetime | None = None,
        cause: str = "",
        local: date | None = None,
    ) -> None:
        """``local``, when given, is the local date of ``dpd_at or at`` (worked out already)."""
        old_dpd = loan.dpd_seen
        old_class = loan.loan_class
        if local is None:
            local = self.local_date(st, dpd_at or at)
        if old_dpd == 0 and new_dpd > 0:
            first = loan.oldest_unpaid(local)
            loan.episode = first.due_date.isoformat() if first else local.isoformat()
        loan.dpd_seen = new_dpd
        new_class = loan_class(
            new_dpd,
            self._bands,
            written_off=loan.status == "written_off",
            restructured=loan.restructured,
        )
        if loan.status == "closed":
            new_class = "normal"
        loan.loan_class = new_class
        if new_dpd > 0 or (old_dpd > 0 and new_dpd == 0):
            loan.last_delinquent = local.isoformat()
        if new_class != old_class:
            loan.migrate(at.astimezone(st.tz).isoformat(), old_class, new_class, reason)

        dpd_mark = 0
        stage: tuple[int, str] | None = None
        if loan.status == "open" and new_dpd > old_dpd:
            crossed = [m for m in self._thresholds if old_dpd < m <= new_dpd]
            if crossed and crossed[-1] > loan.alerted_dpd:
                dpd_mark = crossed[-1]
                loan.alerted_dpd = dpd_mark
            started = [s for s in self._stages if old_dpd < s[0] <= new_dpd]
            if started and started[-1][0] > loan.stage_dpd:
                stage = started[-1]
                loan.stage_dpd = stage[0]
        if new_dpd == 0 and old_dpd > 0:
            loan.episode = None
            loan.alerted_dpd = 0
            loan.stage_dpd = 0
            cured = CURE_REASONS.get(cause, f"cured: loan back to 0 DPD ({reason})")
            self._cancel_task(st, out, loan, at, local, cured)
        if new_dpd == 0 and new_class == "normal":
            loan.open_alerts = 0
        if not (dpd_mark or stage or new_class != old_class):
            return

        self._summarize(st, at, out)
        episode = loan.episode or ""
        if dpd_mark:
            self._emit(
                st,
                out,
                code=f"dpd_{dpd_mark}",
                severity=DPD_SEVERITY.get(dpd_mark, "high"),
                title=f"Loan {loan.loan_id} is {_days(dpd_mark)} past due",
                loan=loan,
                at=at,
                evidence=evidence,
                dedup_key=f"{st.customer_id}:{loan.loan_id}:dpd_{dpd_mark}",
                id_parts=(episode,),
                explanation={
                    "threshold_days": dpd_mark,
                    "dpd": new_dpd,
                    "overdue_amount": str(loan.overdue_amount(local)),
                    "currency": loan.currency,
                    "oldest_unpaid_due_date": episode,
                },
            )
        if new_class != old_class:
            worse = RANK[new_class] > RANK[old_class]
            self._emit(
                st,
                out,
                code="loan_class_change",
                severity=CLASS_SEVERITY[new_class] if worse else "info",
                title=f"Loan {loan.loan_id} moved from {old_class} to {new_class}",
                loan=loan,
                at=at,
                evidence=evidence,
                dedup_key=f"{st.customer_id}:{loan.loan_id}:class",
                id_parts=(old_class, new_class, at.isoformat()),
                source="classification",
                explanation={
                    "from": old_class,
                    "to": new_class,
                    "reason": reason,
                    "dpd": new_dpd,
                    "restructured": loan.restructured,
                    "status": loan.status,
                },
            )
        if stage:
            self._task(st, out, loan, stage[1], new_dpd, at, local)

    # -- summary --------------------------------------------------------------

    def _max_dpd(self, st: CustomerState) -> int:
        return max((ln.dpd_seen for ln in st.loans.values() if ln.status == "open"), default=0)

    def _components(self, st: CustomerState) -> dict[str, int]:
        history = "".join(ln.history for ln in st.loans.values())
        share = self._diversion_share
        return score_components(
            max_dpd=self._max_dpd(st),
            loan_class=worst([ln.loan_class for ln in st.loans.values() if ln.status != "closed"]),
            failed_streak=max((ln.failed_streak for ln in st.loans.values()), default=0),
            defaulted=st.defaulted_at is not None,
            on_time_ratio=history.count("O") / len(history) if history else None,
            partial_payments=sum(ln.partial_payments for ln in st.loans.values()),
            income_late=st.income.late_alerted_for is not None,
            income_dropped=st.income.dropped_at is not None,
            diverted=any(
                ln.principal > ZERO and ln.diverted / ln.principal >= share
                for ln in st.loans.values()
            ),
            open_alerts=st.open_alerts,
            contagion=bool(st.contagion),
            detectors=st.detector_points,
        )

    def _summarize(self, st: CustomerState, at: datetime, out: Outcome) -> None:
        """Recompute score, tier and worst class; publish the state when tier or class moved.

        The score counts the warnings open before this call (``st.open_alerts``);
        the loans' count replaces it afterwards.
        """
        old_tier, old_class = st.risk_tier, st.loan_class
        worst_class, score, open_alerts = self._tally(st)
        st.loan_class = worst_class
        st.risk_score = score
        st.risk_tier = tier = tier_for(score, self._tiers)
        st.open_alerts = open_alerts
        if tier != old_tier or worst_class != old_class:
            out.states.append(self.summary(st))

    def settled(self, st: CustomerState) -> bool:
        """Whether :meth:`_summarize` would leave the state's summary exactly as it is.

        Not always so right after it ran: a warning raised without a loan
        counts in ``st.open_alerts`` until the next summary, whose score
        still counts it while the loans' count replaces it.
        """
        worst_class, score, open_alerts = self._tally(st)
        return (
            worst_class == st.loan_class
            and score == st.risk_score
            and open_alerts == st.open_alerts
            and tier_for(score, self._tiers) == st.risk_tier
        )

    def _tally(self, st: CustomerState) -> tuple[str, int, int]:
        """The worst class, the score and the warnings open on the loans.

        One pass over the loans gathers every input :meth:`_components` names
        (the score comes from :func:`risk.score.score_total`, the same total):
        this runs after every event and on every day a loan ages.
        """
        rank = RANK
        share = self._diversion_share
        worst_rank = -1
        worst_class = "normal"  # classification.worst of no loans
        max_dpd: int | None = None  # over open loans
        streak: int | None = None  # over every loan
        on_time = settled = partial = open_alerts = 0
        diverted = False
        for ln in st.loans.values():
            status = ln.status
            if status != "closed":
                cls = ln.loan_class
                r = rank[cls]
                if r > worst_rank:
                    worst_rank, worst_class = r, cls
                if status == "open" and (max_dpd is None or ln.dpd_seen > max_dpd):
                    max_dpd = ln.dpd_seen
            if streak is None or ln.failed_streak > streak:
                streak = ln.failed_streak
            history = ln.history
            if history:
                on_time += history.count("O")
                settled += len(history)
            partial += ln.partial_payments
            if not diverted and ln.principal > ZERO and ln.diverted / ln.principal >= share:
                diverted = True
            open_alerts += ln.open_alerts
        income = st.income
        score = score_total(
            0 if max_dpd is None else max_dpd,
            worst_class,
            0 if streak is None else streak,
            st.defaulted_at is not None,
            on_time / settled if settled else None,
            partial,
            income.late_alerted_for is not None,
            income.dropped_at is not None,
            diverted,
            st.open_alerts,
            bool(st.contagion),
            st.detector_points,
        )
        return worst_class, score, open_alerts

    # -- outputs --------------------------------------------------------------

    def _emit(
        self,
        st: CustomerState,
        out: Outcome,
        *,
        code: str,
        severity: str,
        title: str,
        loan: Loan | None,
        at: datetime,
        evidence: Iterable[str],
        dedup_key: str,
        id_parts: tuple[str, ...],
        explanation: dict[str, Any],
        source: str = "rule",
    ) -> None:
        if not self.builtin_rules and source != "classification":
            return
        if loan is not None:
            loan.open_alerts += 1
            st.open_alerts += 1
        out.alerts.append(
            RiskAlert(
                alert_id=stable_id("alert", st.customer_id, dedup_key, *id_parts),
                dedup_key=dedup_key,
                customer_id=st.customer_id,
                loan_id=loan.loan_id if loan else None,
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
                rule_set_version=self.rule_set_version,
                status="firing",
            )
        )

    def _task(
        self,
        st: CustomerState,
        out: Outcome,
        loan: Loan,
        stage: str,
        dpd: int,
        at: datetime,
        local: date,
    ) -> None:
        """Open the task of a new stage; the loan's previous stage task is cancelled first.

        One live task per loan: a team never works a reminder for a loan that
        has moved on to a call. The cancellation comes before the new task on
        the customer's (ordered) partition.
        """
        consent = st.contact_consent or {}
        channels = STAGE_CHANNELS[stage]
        channel = next((c for c in channels if consent.get(c, True)), channels[-1])
        task_id = stable_id("task", st.customer_id, loan.loan_id, loan.episode or "", stage)
        live = st.tasks.get(loan.loan_id)
        if live is not None and live[0] != task_id:
            self._cancel_task(st, out, loan, at, local, f"escalated to {stage}")
        not_before = self._schedule_contact(st, channel, at)
        out.tasks.append(
            CollectionsTask(
                task_id=task_id,
                customer_id=st.customer_id,
                loan_id=loan.loan_id,
                dpd=dpd,
                overdue_amount=loan.overdue_amount(local),
                currency=loan.currency,
                stage=stage,
                channel=channel,
                priority=STAGE_PRIORITY[stage],
                not_before=not_before,
                reason=f"loan {loan.loan_id} reached {dpd} days past due: {stage} stage",
                created_at=at.astimezone(st.tz),
                status="open",
            )
        )
        st.tasks[loan.loan_id] = [task_id, stage, channel, not_before.isoformat()]

    def _cancel_task(
        self,
        st: CustomerState,
        out: Outcome,
        loan: Loan,
        at: datetime,
        local: date,
        reason: str,
        *,
        keep: frozenset[str] = frozenset(),
    ) -> None:
        """Call off the loan's live task (unless its stage is in ``keep``) and forget it.

        The cancellation carries the task's id, stage, channel, priority and
        ``not_before`` as they were published, with the loan's DPD and overdue
        amount now, the reason, and ``created_at`` the instant it was cancelled.

        When a task is called off, and why (what a collections team expects):

        - cured, the loan back to 0 DPD (a repayment, or a new schedule that
          leaves nothing past due): every task ends, there is nothing to collect;
        - a partial payment that leaves the loan past due changes nothing: the
          stage reached stays in force;
        - escalated to the next stage: the previous stage's task is superseded;
        - closed: the loan is settled, every task ends;
        - written off: the debt moves to recoveries; the dunning tasks
          (reminder, call, visit) end, a ``legal_review`` stays open because
          legal action is how recoveries pursue a written-off debt (it ends if
          the loan is later closed);
        - restructured: nothing by itself; the new schedule cures the loan (and
          ends the task) once nothing under it is past due.

        A contact still ahead when its task is called off will not happen, so
        it no longer counts against the channel's caps.

        Tasks opened before the engine tracked them (a state without ``tk``)
        are not known, so no cancellation is published for them.
        """
        live = st.tasks.get(loan.loan_id)
        if live is None or live[1] in keep:
            return
        del st.tasks[loan.loan_id]
        task_id, stage, channel, not_before = live
        planned = datetime.fromisoformat(not_before)
        slot = [channel, planned.date().isoformat()]
        if planned > at and slot in st.contacts:
            st.contacts.remove(slot)
        out.tasks.append(
            CollectionsTask(
                task_id=task_id,
                customer_id=st.customer_id,
                loan_id=loan.loan_id,
                dpd=loan.dpd_seen,
                overdue_amount=loan.overdue_amount(local),
                currency=loan.currency,
                stage=stage,
                channel=channel,
                priority=STAGE_PRIORITY[stage],
                not_before=planned,
                reason=reason,
                created_at=at.astimezone(st.tz),
                status="cancelled",
            )
        )

    def _schedule_contact(self, st: CustomerState, channel: str, at: datetime) -> datetime:
        """The lawful time for one more contact on ``channel``, within the contact caps.

        A day (or ISO week) whose cap for the channel is used up moves the
        contact to the next lawful day with room: scheduled, never dropped.
        """
        cfg = self.settings.collections
        daily = cfg.daily_contact_caps.get(channel)  # type: ignore[call-overload]
        weekly = cfg.weekly_contact_caps.get(channel)  # type: ignore[call-overload]
        when = self.lawful_contact_time(st, at)
        for _ in range(60):
            day = when.date()
            week = day.isocalendar()[:2]
            same_day = sum(1 for c, d in st.contacts if c == channel and d == day.isoformat())
            same_week = sum(
                1
                for c, d in st.contacts
                if c == channel and date.fromisoformat(d).isocalendar()[:2] == week
            )
            if (daily is None or same_day < daily) and (weekly is None or same_week < weekly):
                break
            nxt = day + timedelta(days=1)
            if weekly is not None and same_week >= weekly:
                nxt = day + timedelta(days=7 - day.weekday())  # next Monday
            when = self.lawful_contact_time(st, datetime.combine(nxt, time(0), tzinfo=st.tz))
        horizon = (when.date() - timedelta(days=14)).isoformat()
        st.contacts = [c for c in st.contacts if c[1] >= horizon]
        st.contacts.append([channel, when.date().isoformat()])
        return when

    def lawful_contact_time(self, st: CustomerState, at: datetime) -> datetime:
        """The first instant at or after ``at`` a collector may contact the customer.

        Outside the customer's local quiet hours, and not on a public holiday
        of the customer's calendar (nor a weekend, where configured).
        """
        return next_lawful_contact(at, st.tz, st.holiday_calendar, self._contact)

    # -- event handlers -------------------------------------------------------

    @staticmethod
    def _loan(st: CustomerState, loan_id: str, currency: str) -> Loan:
        loan = st.loans.get(loan_id)
        if loan is None:
            loan = st.loans[loan_id] = Loan(loan_id=loan_id, currency=currency)
        return loan

    def _on_transaction(
        self, st: CustomerState, ev: TransactionPosted, now: datetime, out: Outcome
    ) -> None:
        signals.on_transaction(self, st, ev, out)

    def _on_installment_due(
        self, st: CustomerState, ev: InstallmentDue, now: datetime, out: Outcome
    ) -> None:
        self._loan(st, ev.loan_id, ev.currency).add_installment(
            ev.installment_no, ev.due_date, ev.amount_due, on=self.local_date(st, now)
        )

    def _on_repayment(
        self, st: CustomerState, ev: RepaymentReceived, now: datetime, out: Outcome
    ) -> None:
        loan = self._loan(st, ev.loan_id, ev.currency)
        loan.pay(ev.amount, on=self.local_date(st, ev.occurred_at))
        loan.failed_streak = 0
        loan.failed_streak_started = None
        loan.failed_alerted = False
        needed = self.settings.features.cure_on_time_instalments
        if loan.restructured and loan.cure_streak >= needed:
            loan.restructured = False
            loan.cure_streak = 0
            return f"cured after {needed} on-time instalments since restructuring"
        return None

    def _on_repayment_failed(
        self, st: CustomerState, ev: RepaymentFailed, now: datetime, out: Outcome
    ) -> None:
        loan = self._loan(st, ev.loan_id, ev.currency)
        loan.record_failure(int(ev.occurred_at.timestamp()))
        if loan.failed_streak == 0:
            loan.failed_streak_started = ev.event_id
        loan.failed_streak += 1
        threshold = self.settings.alerts.failed_repayments_threshold
        if loan.failed_streak >= threshold and not loan.failed_alerted:
            loan.failed_alerted = True
            self._summarize(st, now, out)
            first = loan.failed_streak_started or ev.event_id
            self._emit(
                st,
                out,
                code="repeated_failed_collections",
                severity="high",
                title=f"{loan.failed_streak} collections failed in a row on loan {loan.loan_id}",
                loan=loan,
                at=now,
                evidence=(first, ev.event_id) if first != ev.event_id else (ev.event_id,),
                dedup_key=f"{st.customer_id}:{loan.loan_id}:failed_collections",
                id_parts=(first,),
                explanation={
                    "failed_in_a_row": loan.failed_streak,
                    "threshold": threshold,
                    "last_reason": ev.reason,
                    "amount": str(ev.amount),
                    "currency": ev.currency,
                },
            )

    def _on_loan_opened(
        self, st: CustomerState, ev: LoanOpened, now: datetime, out: Outcome
    ) -> None:
        loan = self._loan(st, ev.loan_id, ev.currency)
        loan.principal = ev.principal
        loan.outstanding = ev.principal
        loan.annual_rate = ev.annual_rate
        loan.product = ev.product
        loan.opened_at = ev.occurred_at
        loan.currency = ev.currency
        for guarantor in ev.guarantor_ids:
            relations = st.links.setdefault(guarantor, [])
            if "guarantor" not in relations:
                relations.append("guarantor")
                relations.sort()
                signals.on_link_changed(
                    self, st, guarantor, "guarantor", True, now, ev.event_id, out
                )

    def _on_loan_restructured(
        self, st: CustomerState, ev: LoanRestructured, now: datetime, out: Outcome
    ) -> None:
        loan = self._loan(st, ev.loan_id, st.currency or "XXX")
        loan.restructured = True
        loan.cure_streak = 0

    def _on_loan_closed(
        self, st: CustomerState, ev: LoanClosed, now: datetime, out: Outcome
    ) -> None:
        loan = self._loan(st, ev.loan_id, st.currency or "XXX")
        loan.status = "closed"
        loan.dpd_seen = 0
        self._cancel_task(st, out, loan, now, self._clock_date(st, now), "loan closed")

    def _on_loan_written_off(
        self, st: CustomerState, ev: LoanWrittenOff, now: datetime, out: Outcome
    ) -> None:
        loan = self._loan(st, ev.loan_id, ev.currency)
        loan.status = "written_off"
        self._cancel_task(
            st,
            out,
            loan,
            now,
            self._clock_date(st, now),
            "written off: moved to recoveries",
            keep=RECOVERY_STAGES,
        )

    def _on_customer_updated(
        self, st: CustomerState, ev: CustomerUpdated, now: datetime, out: Outcome
    ) -> None:
        if ev.segment is not None:
            st.segment = ev.segment
        if ev.monthly_income is not None:
            st.monthly_income = ev.monthly_income
        if ev.currency is not None:
            st.currency = ev.currency
        if ev.timezone is not None:
            st.timezone = ev.timezone
        if ev.holiday_calendar is not None:
            st.holiday_calendar = ev.holiday_calendar
        if ev.contact_consent is not None:
            st.contact_consent = dict(ev.contact_consent)

    def _on_customer_linked(
        self, st: CustomerState, ev: CustomerLinked, now: datetime, out: Outcome
    ) -> None:
        relations = st.links.setdefault(ev.related_customer_id, [])
        if ev.relation not in relations:
            relations.append(ev.relation)
            relations.sort()
            signals.on_link_changed(
                self, st, ev.related_customer_id, ev.relation, True, now, ev.event_id, out
            )

    def _on_customer_unlinked(
        self, st: CustomerState, ev: CustomerUnlinked, now: datetime, out: Outcome
    ) -> None:
        relations = st.links.get(ev.related_customer_id, [])
        if ev.relation in relations:
            relations.remove(ev.relation)
            signals.on_link_changed(
                self, st, ev.related_customer_id, ev.relation, False, now, ev.event_id, out
            )
        if not relations:
            st.links.pop(ev.related_customer_id, None)

    def _on_default(
        self, st: CustomerState, ev: OutcomeDefault, now: datetime, out: Outcome
    ) -> None:
        if st.defaulted_at is None:
            st.defaulted_at = ev.occurred_at
        st.bump("defaults")

    def _on_fraud_confirmed(
        self, st: CustomerState, ev: OutcomeFraudConfirmed, now: datetime, out: Outcome
    ) -> None:
        st.bump("fraud_confirmed")

    def _on_related_exposure(self, st: CustomerState, ev: Any, now: datetime, out: Outcome) -> None:
        signals.on_related_exposure(self, st, ev, out)

    def _on_related_default(self, st: CustomerState, ev: Any, now: datetime, out: Outcome) -> None:
        signals.on_related_default(self, st, ev, out)

    def _on_feedback(
        self, st: CustomerState, ev: AlertFeedback, now: datetime, out: Outcome
    ) -> None:
        st.bump(f"feedback_{ev.verdict}")


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


CLOCK_EVENTS = frozenset({"installment.due", "repayment.received", "repayment.failed"})

RECOVERY_STAGES = frozenset({"legal_review"})
"""Stages whose task survives a write-off: recoveries take the debt to court."""

CURE_REASONS: dict[str, str] = {
    "repayment.received": "cured: loan repaid to 0 DPD",
    "installment.due": "cured: nothing past due under the instalment schedule (0 DPD)",
}
"""Why a loan's tasks end when it is back to 0 DPD, by the event that brought it back."""

REASONS: dict[str, str] = {
    "loan.restructured": "restructured",
    "loan.written_off": "written off",
    "loan.closed": "closed",
    "installment.due": "instalment announced",
    "repayment.received": "repayment received",
    "repayment.failed": "collection failed",
}
