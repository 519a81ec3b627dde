"""A compiled rule set and how one event is judged by it.

How the processor uses it, per event (``Engine.apply`` mutates the state)::

    rules = holder.current                       # one version for the whole event
    before = rules.capture(state, engine, event) # BEFORE Engine.apply (state may be None)
    state, out = engine.apply(state, event)
    view = rules.view(state, engine, event, before)
    result = rules.evaluate(event, view, scores) # Evaluation: hits, errors, version

and for the passage of time, with ``Tick(event_id=..., customer_id=..., occurred_at=to)``
in place of the event around ``Engine.advance``.

A rule that raises while it is judged is not a "no": the error is counted per
rule id (:attr:`CompiledRuleSet.error_counts`) and returned in
:attr:`Evaluation.errors`, and the other rules still run.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from risk.customer import CustomerState
from risk.ids import stable_id
from rules.conditions import (
    CompileContext,
    CompiledCondition,
    Problem,
    Test,
    all_of,
    compile_condition,
    leading_pre,
)
from rules.features import (
    EVENT_TYPES,
    FEATURES,
    CapturedError,
    FeatureSpec,
    FeatureView,
    event_fields,
)
from rules.model import Rule, RuleSet

if TYPE_CHECKING:
    from risk.engine import Engine

BUILTIN_PLACEHOLDERS = ("customer_id", "rule_id", "event_type", "event_id")
NO_VALUE = "-"
EMPTY: Mapping[str, float] = {}


@dataclass(frozen=True, slots=True)
class Hit:
    """A rule fired on an event: what the alert stage needs to raise a warning."""

    rule_id: str
    title: str
    severity: str
    route: str
    dedup_key: str
    cooldown_seconds: int
    alert_id: str  # stable: customer, rule, dedup key and event
    customer_id: str
    loan_id: str | None
    event_id: str
    rule_set_version: str
    explanation: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RuleFailure:
    """A rule raised while judging an event; it is reported, never taken as false."""

    rule_id: str
    error: str  # exception type
    message: str


@dataclass(slots=True)
class Evaluation:
    """The verdict of one rule-set version on one event."""

    version: str
    hits: list[Hit] = field(default_factory=list)
    errors: list[RuleFailure] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule: Rule
    condition: CompiledCondition
    dedup: Callable[[Any, FeatureView, str], str]
    event_types: frozenset[str]
    before: frozenset[str]
    # every feature the rule reads (condition and dedup key, now or before the
    # event) and every event field its condition compares; None: not known
    features: frozenset[str] | None = None
    fields: frozenset[str] | None = None

    @property
    def id(self) -> str:
        return self.rule.id


Getter = Callable[[FeatureView], Any]
Reads = tuple[tuple[str, Getter], ...]
MAX_KEYS = 1024
"""Plans kept per event type, one per combination of its key fields' values (bounded)."""


class _BeforeValues(dict[str, Any]):
    """What :meth:`CompiledRuleSet.capture` returns: feature values before the event.

    It also carries what judging the same event after the engine step reuses:
    the event's Unix time if capturing needed it (``now``: computed once per
    event), the view capturing used, which the view after the step takes over
    (one object fewer per event), and the plan the event's fields selected.
    Both are used only for the event (and the rule set) they were made for.
    """

    __slots__ = ("event", "now", "plan", "rules", "spare")

    def __getitem__(self, name: str) -> Any:
        value = super().__getitem__(name)
        if value.__class__ is CapturedError:
            raise value.fail(name)
        return value


@dataclass(frozen=True, slots=True)
class _Split:
    """One rule as an event type's plan runs it: its leading field tests set apart.

    ``keyed`` are the leading conjuncts that compare an enumerated field of
    the event (``direction``, ``channel``, ``relation``...); ``rest`` is what
    remains of the condition (None: nothing, the rule fires when ``keyed``
    holds) and ``pre`` the prefilter of ``rest``.
    """

    rule: CompiledRule
    keyed: tuple[Test, ...]
    fields: tuple[str, ...]
    rest: Test | None
    pre: Test | None
    reads: Reads  # features whose value before the event ``rest`` compares with


@dataclass(frozen=True, slots=True)
class _Plan:
    """What judging an event runs, for one event type and one set of key field values."""

    rules: tuple[tuple[Test | None, CompiledRule], ...]  # (what is left to test, rule)
    always: Reads  # captured on every such event
    optional: tuple[tuple[Test, Reads], ...]  # captured when the prefilter holds


def _plan(splits: Sequence[_Split], whole: bool = False) -> _Plan:
    """The plan of the given rules; ``whole``: run each whole condition (nothing keyed)."""
    rules: list[tuple[Test | None, CompiledRule]] = []
    always: dict[str, Getter] = {}
    optional: list[tuple[Test, Reads]] = []
    for sp in splits:
        test, pre = (sp.rule.condition.test, sp.rule.condition.pre) if whole else (sp.rest, sp.pre)
        rules.append((test, sp.rule))
        if sp.reads and pre is None:
            for name, get in sp.reads:
                always.setdefault(name, get)
    for sp in splits:
        pre = sp.rule.condition.pre if whole else sp.pre
        if sp.reads and pre is not None:
            reads = tuple((name, get) for name, get in sp.reads if name not in always)
            if reads:
                optional.append((pre, reads))
    return _Plan(tuple(rules), tuple(always.items()), tuple(optional))


class _TypePlans:
    """The plans of one event type, keyed by the values of its key fields.

    The rules of a type often start with tests on the event's enumerated
    fields (a debit, a card payment, a guarantor). Their outcome depends on
    those values alone, so it is worked out once per combination seen (a
    few dozen at most) and remembered: an event then runs, and captures for,
    only the rules its fields leave in, each from its first feature test on.
    """

    __slots__ = ("_key", "_plans", "_splits", "capturing", "fixed", "generic")

    def __init__(self, splits: tuple[_Split, ...]) -> None:
        self._splits = splits
        fields = tuple(dict.fromkeys(f for sp in splits for f in sp.fields))
        self._key = attrgetter(*fields) if fields else None
        self._plans: dict[Any, _Plan] = {}
        self.generic = _plan(splits, whole=True)  # for an event whose key cannot be read
        self.fixed = _plan(splits) if not fields else None
        self.capturing = any(sp.reads for sp in splits)

    def get(self, event: Any) -> _Plan:
        if self.fixed is not None:
            return self.fixed
        try:
            key = self._key(event)  # type: ignore[misc]
            plan = self._plans.get(key)
        except Exception:  # a field missing, a value that cannot be hashed
            return self.generic
        if plan is None:
            plan = self._plan_for(event)
            if plan is not self.generic and len(self._plans) < MAX_KEYS:
                self._plans[key] = plan
        return plan

    def _plan_for(self, event: Any) -> _Plan:
        kept = []
        try:
            for sp in self._splits:
                for test in sp.keyed:
                    if not test(event, None, EMPTY):  # type: ignore[arg-type]
                        break
                else:
                    kept.append(sp)
        except Exception:
            return self.generic  # let each rule run whole and report what is wrong
        return _plan(kept)


def _split(rule: CompiledRule, registry: Mapping[str, FeatureSpec]) -> _Split:
    cond = rule.condition
    parts = cond.parts or ((cond,) if cond.key_field is not None else ())
    k = 0
    while k < len(parts) and parts[k].key_field is not None:
        k += 1
    reads = tuple((name, registry[name].getter) for name in sorted(rule.before))
    if k == 0:
        return _Split(rule, (), (), cond.test, cond.pre, reads)
    rest = parts[k:]
    return _Split(
        rule,
        tuple(p.test for p in parts[:k]),
        tuple(p.key_field for p in parts[:k] if p.key_field is not None),
        all_of(tuple(p.test for p in rest)) if rest else None,
        leading_pre(rest),
        reads,
    )


class CompiledRuleSet:
    """A validated rule set, compiled once, ready to judge events.

    Everything that depends only on the event type (and on its enumerated
    fields) is worked out ahead, once: which rules judge it, in file order,
    from which test on; which features must be captured before the engine
    step; whether the event carries a loan. Judging an event then runs flat
    loops over that plan.
    """

    def __init__(
        self,
        model: RuleSet,
        rules: list[CompiledRule],
        *,
        registry: Mapping[str, FeatureSpec] = FEATURES,
    ) -> None:
        self.model = model
        self.name = model.name
        self.version = model.content_version()
        self.rules = tuple(rules)
        self.registry = registry
        self.error_counts: Counter[str] = Counter()
        by_type: dict[str, list[CompiledRule]] = {}
        for r in self.rules:
            if r.rule.enabled:
                for t in sorted(r.event_types):
                    by_type.setdefault(t, []).append(r)
        self._by_type = {t: tuple(rs) for t, rs in by_type.items()}
        self._plans = {
            t: _TypePlans(tuple(_split(r, registry) for r in rs)) for t, rs in self._by_type.items()
        }
        self._has_loan = {t: "loan_id" in event_fields(t) for t in self._by_type}
        self.quiet_ticks = all(
            r.features is not None
            and not r.fields
            and all(registry[name].state_only for name in r.features)
            for r in self._by_type.get("tick", ())
        )
        """Whether a tick is judged on the customer's state alone.

        True when every rule that judges a ``tick`` reads only features of the
        state (:attr:`~rules.features.FeatureSpec.state_only`) and scores (a
        tick has none), and no field of the tick. Judging a tick then depends
        on the state before and after it and on nothing else, not on the
        tick's instant: when :meth:`finds_nothing` holds for a state, a tick
        at any later instant that leaves that state as it was (only its
        instant moved) finds nothing and fails nothing either.
        """

    def rules_for(self, event_type: str) -> tuple[CompiledRule, ...]:
        return self._by_type.get(event_type, ())

    def finds_nothing(self, state: CustomerState, engine: Engine, event: Any) -> bool:
        """Whether judging ``event`` on ``state`` unchanged by it finds and fails nothing.

        The state is read before and after alike, as if the event had changed
        nothing: with :attr:`quiet_ticks`, what any tick that changes nothing
        a rule reads would make of this state. Nothing is recorded (errors
        included): the answer is only a yes or a no.
        """
        before = self.capture(state, engine, event)
        view = self.view(state, engine, event, before)
        plan = before.plan  # type: ignore[attr-defined]
        if plan is None:
            return True  # no rule judges this event type
        for test, _rule in plan.rules:
            try:
                if test is None or test(event, view, EMPTY):
                    return False
            except Exception:
                return False
        return True

    def capture(self, state: CustomerState | None, engine: Engine, event: Any) -> dict[str, Any]:
        """The values some rules compare with, read BEFORE ``Engine.apply``/``advance``.

        Only what the rules left in by the event's own fields need is
        computed (usually nothing or a few integers). A feature that fails
        here fails the rule that reads it, at evaluation, where it is reported.
        """
        out = _BeforeValues()
        out.now = out.spare = out.plan = None
        out.event, out.rules = event, self
        plans = self._plans.get(event.type)
        if plans is None:
            return out
        plan = out.plan = plans.fixed or plans.get(event)  # evaluating follows it too
        if not plans.capturing:
            return out
        view: FeatureView | None = None
        if plan.always:
            st = state if state is not None else CustomerState(customer_id=event.customer_id)
            view = FeatureView(st, engine, event, registry=self.registry)
            for name, get in plan.always:
                try:
                    out[name] = get(view)
                except Exception as exc:
                    out[name] = CapturedError(exc)
        for pre, reads in plan.optional:
            try:
                wanted = pre(event, None, EMPTY)  # type: ignore[arg-type]
            except Exception:
                wanted = True  # let the rule itself run and report what is wrong
            if not wanted:
                continue  # the event's own fields rule this rule out: nothing to capture
            if view is None:
                st = state if state is not None else CustomerState(customer_id=event.customer_id)
                view = FeatureView(st, engine, event, registry=self.registry)
            for name, get in reads:
                if name in out:
                    continue
                try:
                    out[name] = get(view)
                except Exception as exc:
                    out[name] = CapturedError(exc)
        if view is not None:
            out.now = view._now  # computed only if a captured feature needed it
            out.spare = view
        return out

    def view(
        self,
        state: CustomerState,
        engine: Engine,
        event: Any,
        before: Mapping[str, Any] | None = None,
    ) -> FeatureView:
        """The lazy feature view of the state AFTER the event."""
        if before.__class__ is _BeforeValues:
            spare: FeatureView | None = before.spare  # type: ignore[union-attr]
            if spare is not None and spare.event is event:
                before.spare = None  # type: ignore[union-attr]  # taken over, once
                spare.state = state
                spare.engine = engine
                spare.before = before
                spare.registry = self.registry
                if spare._cache:  # values of the state before the event: not these
                    spare._cache = {}
                return spare
            now = before.now  # type: ignore[union-attr]
        else:
            now = None
        return FeatureView(state, engine, event, before=before, registry=self.registry, now=now)

    def evaluate(
        self, event: Any, view: FeatureView, scores: Mapping[str, float] | None = None
    ) -> Evaluation:
        """Judge one event with every enabled rule that applies to its type."""
        hits: list[Hit] = []
        result = Evaluation(self.version, hits, [])
        before: Any = view.before
        if (
            before.__class__ is _BeforeValues
            and before.plan is not None
            and before.event is event
            and before.rules is self
        ):
            plan: _Plan = before.plan  # chosen while capturing for this very event
        else:
            plans = self._plans.get(event.type)
            if plans is None:
                return result
            plan = plans.fixed or plans.get(event)
        s = EMPTY if scores is None else scores
        for test, rule in plan.rules:
            try:
                if test is None or test(event, view, s):
                    hits.append(self._hit(rule, event, view, s))
            except Exception as exc:
                self.error_counts[rule.rule.id] += 1
                result.errors.append(RuleFailure(rule.rule.id, type(exc).__name__, str(exc)))
        return result

    def _hit(
        self, rule: CompiledRule, event: Any, view: FeatureView, scores: Mapping[str, float]
    ) -> Hit:
        """The hit with its explanation: built only for a rule that fired."""
        r = rule.rule
        rid = r.id
        dedup = rule.dedup(event, view, rid)
        customer_id = event.customer_id
        event_id = event.event_id
        # getattr with a default on a pydantic model that lacks the field costs
        # microseconds (it raises inside): ask only events whose type has a loan
        loan_id = getattr(event, "loan_id", None) if self._has_loan.get(event.type, True) else None
        return Hit(  # positional: twelve keywords cost more to bind
            rid,
            r.description,
            r.severity,
            r.route,
            dedup,
            r.cooldown,
            stable_id("alert", customer_id, rid, dedup, event_id),
            customer_id,
            loan_id,
            event_id,
            self.version,
            {
                "rule": rid,
                "why": r.why,
                "conditions": [d(event, view, scores) for d in rule.condition.leaves],
            },
        )


# -- compiling ----------------------------------------------------------------------


def compile_rule_set(
    model: RuleSet,
    *,
    registry: Mapping[str, FeatureSpec] = FEATURES,
    known_scores: frozenset[str] | None = None,
) -> tuple[CompiledRuleSet | None, list[Problem]]:
    """Compile every rule; the rule set, or None and every problem found."""
    problems: list[Problem] = []
    compiled: list[CompiledRule] = []
    seen: set[str] = set()
    for i, rule in enumerate(model.rules):
        path: tuple[str | int, ...] = ("rules", i)
        if rule.id in seen:
            problems.append(Problem(f"duplicate rule id {rule.id!r}", rule.id, (*path, "id")))
            continue
        seen.add(rule.id)
        types: list[str] = []
        for j, t in enumerate(rule.applies_to):
            if t == "*":
                types.extend(EVENT_TYPES)
            elif t in EVENT_TYPES:
                types.append(t)
            else:
                problems.append(
                    Problem(f"unknown event type {t!r}", rule.id, (*path, "applies_to", j))
                )
        if not types:
            continue
        event_types = tuple(dict.fromkeys(types))
        ctx = CompileContext(rule.id, event_types, registry, known_scores)
        condition = compile_condition(rule.condition, ctx, (*path, "condition"))
        dedup = _dedup_template(rule, ctx, (*path, "dedup_key"))
        problems.extend(ctx.problems)
        if condition is None or dedup is None:
            continue
        compiled.append(
            CompiledRule(
                rule,
                condition,
                dedup,
                frozenset(event_types),
                frozenset(ctx.before),
                frozenset(ctx.features | ctx.before),
                frozenset(ctx.fields),
            )
        )
    if problems:
        return None, problems
    return CompiledRuleSet(model, compiled, registry=registry), []


def _dedup_template(
    rule: Rule, ctx: CompileContext, path: tuple[str | int, ...]
) -> Callable[[Any, FeatureView, str], str] | None:
    """Compile ``{customer_id}:{loan_id}:dpd30`` into a function; check each placeholder."""
    try:
        parsed = list(string.Formatter().parse(rule.dedup_key))
    except ValueError as exc:
        ctx.problem(f"dedup_key is not a valid template: {exc}", path)
        return None
    parts: list[str | Callable[[Any, FeatureView, str], str]] = []  # text, or how to read
    ok = True
    for literal, name, spec, conversion in parsed:
        if literal:
            parts.append(literal)
        if name is None:
            continue
        if spec or conversion or not name.isidentifier():
            ctx.problem(f"dedup_key placeholder {{{name}}} must be a plain name", path)
            ok = False
            continue
        if name in BUILTIN_PLACEHOLDERS:
            parts.append(_builtin(name))
        elif all(name in event_fields(t) for t in ctx.event_types):
            parts.append(lambda ev, v, rid, n=name: _text(getattr(ev, n, None)))
        elif name in ctx.registry and ctx.registry[name].phase == "after":
            ctx.features.add(name)
            parts.append(lambda ev, v, rid, n=name: _text(v[n]))
        else:
            ctx.problem(
                f"dedup_key placeholder {{{name}}} is neither {', '.join(BUILTIN_PLACEHOLDERS)}, "
                "a field of every event type the rule applies to, nor a feature",
                path,
            )
            ok = False
    if not ok:
        return None
    return _join(tuple(parts))


def _join(
    parts: tuple[str | Callable[[Any, FeatureView, str], str], ...],
) -> Callable[[Any, FeatureView, str], str]:
    """The dedup key function; the usual shapes (a placeholder and a text) directly."""
    if len(parts) == 2 and not isinstance(parts[0], str) and isinstance(parts[1], str):
        read, text = parts
        return lambda ev, v, rid: read(ev, v, rid) + text
    if len(parts) == 1 and not isinstance(parts[0], str):
        return parts[0]
    return lambda ev, v, rid: "".join(
        [p if p.__class__ is str else p(ev, v, rid) for p in parts]  # type: ignore[operator]
    )


def _builtin(name: str) -> Callable[[Any, FeatureView, str], str]:
    if name == "customer_id":
        return lambda ev, v, rid: ev.customer_id
    if name == "rule_id":
        return lambda ev, v, rid: rid
    if name == "event_type":
        return lambda ev, v, rid: ev.type
    return lambda ev, v, rid: ev.event_id


def _text(value: Any) -> str:
    return NO_VALUE if value is None else str(value)
