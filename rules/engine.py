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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from risk.customer import CustomerState
from risk.ids import stable_id
from rules.conditions import CompileContext, CompiledCondition, Problem, compile_condition
from rules.features import EVENT_TYPES, FEATURES, FeatureSpec, FeatureView, event_fields
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

    @property
    def id(self) -> str:
        return self.rule.id


class CapturedError:
    """A feature that failed to compute before the event; reading it re-raises."""

    __slots__ = ("exc",)

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


class _BeforeValues(dict[str, Any]):
    now: int | None = None  # the event's Unix time, computed once for both views

    def __getitem__(self, name: str) -> Any:
        value = super().__getitem__(name)
        if isinstance(value, CapturedError):
            raise RuntimeError(f"computing {name!r} before the event failed: {value.exc!r}")
        return value


class CompiledRuleSet:
    """A validated rule set, compiled once, ready to judge events."""

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
        self._before = {
            t: tuple((r.condition.pre, tuple(sorted(r.before))) for r in rs if r.before)
            for t, rs in self._by_type.items()
        }

    def rules_for(self, event_type: str) -> tuple[CompiledRule, ...]:
        return self._by_type.get(event_type, ())

    def capture(self, state: CustomerState | None, engine: Engine, event: Any) -> dict[str, Any]:
        """The values some rules compare with, read BEFORE ``Engine.apply``/``advance``.

        Only what this event type's rules need is computed (usually nothing
        or a few integers). A feature that fails here fails the rule that
        reads it, at evaluation, where it is reported.
        """
        out = _BeforeValues()
        view: FeatureView | None = None
        for pre, names in self._before.get(event.type, ()):
            if pre is not None and not pre(event, None, EMPTY):  # type: ignore[arg-type]
                continue  # the event's own fields rule this rule out: nothing to capture
            if view is None:
                st = state if state is not None else CustomerState(customer_id=event.customer_id)
                view = FeatureView(st, engine, event, registry=self.registry)
                out.now = view.now
            for name in names:
                if name in out:
                    continue
                try:
                    out[name] = view.compute(name)
                except Exception as exc:
                    out[name] = CapturedError(exc)
        return out

    def view(
        self,
        state: CustomerState,
        engine: Engine,
        event: Any,
        before: Mapping[str, Any] | None = None,
    ) -> FeatureView:
        """The lazy feature view of the state AFTER the event."""
        now = getattr(before, "now", None)
        return FeatureView(state, engine, event, before=before, registry=self.registry, now=now)

    def evaluate(
        self, event: Any, view: FeatureView, scores: Mapping[str, float] | None = None
    ) -> Evaluation:
        """Judge one event with every enabled rule that applies to its type."""
        s = EMPTY if scores is None else scores
        result = Evaluation(self.version)
        for rule in self._by_type.get(event.type, ()):
            try:
                if rule.condition.test(event, view, s):
                    result.hits.append(self._hit(rule, event, view, s))
            except Exception as exc:
                self.error_counts[rule.id] += 1
                result.errors.append(RuleFailure(rule.id, type(exc).__name__, str(exc)))
        return result

    def _hit(
        self, rule: CompiledRule, event: Any, view: FeatureView, scores: Mapping[str, float]
    ) -> Hit:
        r = rule.rule
        dedup = rule.dedup(event, view, r.id)
        return Hit(
            rule_id=r.id,
            title=r.description,
            severity=r.severity,
            route=r.route,
            dedup_key=dedup,
            cooldown_seconds=r.cooldown,
            alert_id=stable_id("alert", event.customer_id, r.id, dedup, event.event_id),
            customer_id=event.customer_id,
            loan_id=getattr(event, "loan_id", None),
            event_id=event.event_id,
            rule_set_version=self.version,
            explanation={
                "rule": r.id,
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
            CompiledRule(rule, condition, dedup, frozenset(event_types), frozenset(ctx.before))
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
    parts: list[Callable[[Any, FeatureView, str], str]] = []
    ok = True
    for literal, name, spec, conversion in parsed:
        if literal:
            parts.append(lambda ev, v, rid, text=literal: text)
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
    fixed = tuple(parts)
    return lambda ev, v, rid: "".join(p(ev, v, rid) for p in fixed)


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
