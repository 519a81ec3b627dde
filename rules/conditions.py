"""The condition language: an all/any/not tree of comparisons, compiled once into closures.

A leaf compares one operand with a threshold::

    {feature: max_dpd, op: crosses, value: 30}
    {field: counterparty_type, op: in, value: [gambling, crypto]}
    {score: amount_outlier, op: ge, value: 0.9}

Operands are allowlisted (:mod:`rules.features`); every name, operator and
threshold is checked against the operand's type when the rule set loads, so a
typo never reaches a running worker. Nothing is ever passed to ``eval``.

Operators
---------
``eq ne``                 any scalar type
``lt le gt ge``           numbers, dates, ordered enumerations (``risk_tier``, ``loan_class``)
``between [lo, hi]``      inclusive at both ends; same types as ``lt``
``in not_in [v, ...]``    any scalar type
``contains``              a substring of a string, or an element of a list
``is_null not_null``      no value
``changed_by N``          features only: rose by at least N (N > 0) or fell by at least -N
                          (N < 0) since before the event; numbers and ordered enumerations
``changed_to V``          features only: is V now and was not before the event
``crosses T``             features only, numbers: was below T before the event, is at or
                          above it now (fires once per crossing, however large the jump)

Null and missing values
-----------------------
A missing event field, a score a detector did not report and a feature with
no value (``monthly_income`` never declared) are all *null*. Every comparison
with a null operand (now or before the event) is false, ``is_null`` is true,
``not_null`` false; ``not`` negates the result as usual (two-valued logic), so
write ``not_null`` explicitly when a negated condition must not fire on null.

Numbers
-------
``decimal`` operands (money, shares of money) are compared as
:class:`~decimal.Decimal`, never as floats: a threshold written as a string
(``"5000000.00"``), an integer, or a YAML number (taken by its decimal text,
``0.3`` is ``Decimal("0.3")``); a runtime value that is a decimal string is
converted, a float is refused (it is an error, reported, not a silent false).
``int`` operands take whole-number thresholds only.
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from rules.features import (
    _UNSET,
    NUMERIC,
    CapturedError,
    FeatureSpec,
    FeatureView,
    event_fields,
)
from rules.model import AllOf, AnyOf, Leaf, NotOf

Test = Callable[[Any, FeatureView, Mapping[str, float]], bool]
Source = tuple[Callable[[FeatureView], Any] | None, Mapping[str, FeatureSpec] | None]
Getter = Callable[[Any, FeatureView, Mapping[str, float]], Any]
SCORE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
ORDERED_OPS = frozenset({"lt", "le", "gt", "ge", "between"})
STATEFUL_OPS = frozenset({"changed_by", "changed_to", "crosses"})
# on an enumeration or a boolean these compare by equality or hashing, which never raises
_KEYABLE_OPS = frozenset({"eq", "ne", "in", "not_in", "is_null", "not_null"})
_PY_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a rule set, located as precisely as the source allows."""

    message: str
    rule_id: str | None = None
    path: tuple[str | int, ...] = ()
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based

    def where(self) -> str:
        return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in self.path).lstrip(".")

    def format(self, source: str = "") -> str:
        pos = f"{source}:" if source else ""
        if self.line is not None:
            pos += f"{self.line}:{self.column}:"
        rule = f" rule {self.rule_id}:" if self.rule_id else ""
        at = f" ({self.where()})" if self.path else ""
        return f"{pos}{rule} {self.message}{at}".strip()


@dataclass(slots=True)
class Operand:
    """What a leaf reads, resolved against the allowlist or the event models."""

    kind: str  # feature | field | score
    name: str
    type: str
    enum: tuple[str, ...] | None = None
    ordered: bool = False


@dataclass(slots=True)
class CompileContext:
    """What a condition is compiled against: the rule and the event types it judges."""

    rule_id: str
    event_types: tuple[str, ...]
    registry: Mapping[str, FeatureSpec]
    known_scores: frozenset[str] | None = None
    problems: list[Problem] = field(default_factory=list)
    features: set[str] = field(default_factory=set)  # features read after the event
    before: set[str] = field(default_factory=set)  # features whose prior value is read
    fields: set[str] = field(default_factory=set)  # event fields compared

    def problem(self, message: str, path: tuple[str | int, ...]) -> None:
        self.problems.append(Problem(message, self.rule_id, path))


@dataclass(frozen=True, slots=True)
class CompiledCondition:
    """A condition ready to run, and how to explain it."""

    test: Test
    leaves: tuple[Callable[[Any, FeatureView, Mapping[str, float]], dict[str, Any]], ...]
    # A necessary condition that reads only the event's fields (None: none known):
    # when it is false, ``test`` is false without reading any feature and without
    # raising, so work for this condition can be skipped, before the event is
    # applied (capture) and after; ``exact`` when it is the whole condition.
    pre: Test | None = None
    exact: bool = False
    # the conjuncts of an ``all`` (empty for any other node)
    parts: tuple[CompiledCondition, ...] = ()
    # an event field of a finite type (enumeration, boolean) compared by a test that
    # cannot raise on a valid event: rule sets key their per-event plans on these
    key_field: str | None = None


class _Invalid(Exception):
    """A leaf could not be compiled (the problem was already recorded)."""


def compile_condition(
    node: AllOf | AnyOf | NotOf | Leaf, ctx: CompileContext, path: tuple[str | int, ...]
) -> CompiledCondition | None:
    """Compile a validated condition tree; None when a problem was recorded in ``ctx``."""
    if isinstance(node, Leaf):
        try:
            return _compile_leaf(node, ctx, path)
        except _Invalid:
            return None
    if isinstance(node, NotOf):
        inner = compile_condition(node.not_, ctx, (*path, "not"))
        if inner is None:
            return None
        t = inner.test
        negated: Test = lambda ev, v, s: not t(ev, v, s)  # noqa: E731
        return CompiledCondition(
            negated, inner.leaves, negated if inner.exact else None, inner.exact
        )
    key = "all" if isinstance(node, AllOf) else "any"
    items = node.all if isinstance(node, AllOf) else node.any
    compiled = [compile_condition(c, ctx, (*path, key, i)) for i, c in enumerate(items)]
    parts = [p for p in compiled if p is not None]
    if len(parts) != len(compiled):
        return None
    tests = tuple(p.test for p in parts)
    leaves = tuple(leaf for p in parts for leaf in p.leaves)
    exact = all(p.exact for p in parts)
    if key == "all":
        return CompiledCondition(all_of(tests), leaves, leading_pre(parts), exact, tuple(parts))
    pres = tuple(p.pre for p in parts if p.pre is not None)
    whole = len(pres) == len(parts)  # a disjunction is ruled out only if every part is
    return CompiledCondition(_any(tests), leaves, _any(pres) if whole else None, exact)


def leading_pre(parts: Sequence[CompiledCondition]) -> Test | None:
    """The prefilter of a conjunction: the prefilters of its leading conjuncts.

    A conjunction runs its parts in order and stops at the first false one,
    so a part's prefilter may be used only if every part before it reads the
    event alone (is exact): otherwise that earlier part could read a feature,
    or raise, before this one is ever looked at.
    """
    pres: list[Test] = []
    for p in parts:
        if p.pre is None:
            break
        pres.append(p.pre)
        if not p.exact:
            break
    return all_of(tuple(pres)) if pres else None


def all_of(tests: tuple[Test, ...]) -> Test:
    """True when every test is, in order, stopping at the first false one."""
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        a, b = tests
        return lambda ev, v, s: a(ev, v, s) and b(ev, v, s)

    def test(ev: Any, v: FeatureView, s: Mapping[str, float]) -> bool:
        # a plain loop: all() over a generator costs a frame per event on the hot path
        for t in tests:  # noqa: SIM110
            if not t(ev, v, s):
                return False
        return True

    return test


def _any(tests: tuple[Test, ...]) -> Test:
    if len(tests) == 1:
        return tests[0]

    def test(ev: Any, v: FeatureView, s: Mapping[str, float]) -> bool:
        for t in tests:  # noqa: SIM110 - see all_of
            if t(ev, v, s):
                return True
        return False

    return test


# -- operands ----------------------------------------------------------------------


def _resolve(leaf: Leaf, ctx: CompileContext, path: tuple[str | int, ...]) -> Operand:
    given = [k for k in ("feature", "field", "score") if getattr(leaf, k) is not None]
    if len(given) != 1:
        ctx.problem(
            "a comparison names exactly one of feature, field or score"
            + (f" (got {', '.join(given)})" if given else ""),
            path,
        )
        raise _Invalid
    kind = given[0]
    name: str = getattr(leaf, kind)
    where = (*path, kind)
    if kind == "feature":
        spec = ctx.registry.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, list(ctx.registry), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            ctx.problem(f"unknown feature {name!r}{hint}", where)
            raise _Invalid
        return Operand("feature", name, spec.type, spec.enum, spec.ordered)
    if kind == "score":
        if not SCORE_NAME.match(name):
            ctx.problem(f"score name {name!r} must be lower_snake_case", where)
            raise _Invalid
        if ctx.known_scores is not None and name not in ctx.known_scores:
            ctx.problem(
                f"unknown score {name!r}; detectors: {', '.join(sorted(ctx.known_scores))}",
                where,
            )
            raise _Invalid
        return Operand("score", name, "float")
    found = None
    for event_type in ctx.event_types:
        ft = event_fields(event_type).get(name)
        if ft is None:
            ctx.problem(f"field {name!r} is not on event type {event_type!r}", where)
            raise _Invalid
        if found is not None and (found.type, found.enum) != (ft.type, ft.enum):
            ctx.problem(f"field {name!r} has different types across the event types", where)
            raise _Invalid
        found = ft
    if found is None:  # pragma: no cover - applies_to is never empty
        raise _Invalid
    return Operand("field", name, found.type, found.enum)


def _getter(operand: Operand) -> Getter:
    name = operand.name
    if operand.kind == "feature":
        return lambda ev, v, s: v[name]
    if operand.kind == "field":
        return lambda ev, v, s: getattr(ev, name, None)
    return lambda ev, v, s: s.get(name)


# -- thresholds --------------------------------------------------------------------


def _coerce(value: Any, op: Operand, ctx: CompileContext, path: tuple[str | int, ...]) -> Any:
    """The threshold in the operand's runtime type, or record a type mismatch."""
    t = op.type
    what = f"{op.kind} {op.name!r} is {t}"

    def bad(expected: str) -> _Invalid:
        ctx.problem(f"{what}; {value!r} is not {expected}", path)
        return _Invalid()

    if value is None:
        ctx.problem(f"{what}; a value is required", path)
        raise _Invalid
    if t == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("a whole number")
        return value
    if t == "decimal":
        if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
            raise bad("a decimal number")
        try:
            d = Decimal(str(value).strip())
        except InvalidOperation:
            raise bad("a decimal number") from None
        if not d.is_finite():
            raise bad("a finite decimal number")
        return d
    if t == "float":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise bad("a number")
        try:
            return float(value)
        except ValueError:
            raise bad("a number") from None
    if t == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if t == "enum":
        if value not in (op.enum or ()):
            raise bad(f"one of {', '.join(op.enum or ())}")
        return value
    if t == "date":
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            raise bad("a date (YYYY-MM-DD)") from None
    if t == "datetime":
        try:
            parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        except ValueError:
            raise bad("a timestamp with an offset") from None
        if parsed.tzinfo is None:
            raise bad("a timestamp with an offset")
        return parsed
    if not isinstance(value, str):  # str and list elements
        raise bad("a string")
    return value


def _runtime_norm(op: Operand) -> Callable[[Any], Any] | None:
    """How a runtime value is brought to the threshold's type (None: as it is)."""
    if op.type == "decimal":
        return to_decimal
    if op.type == "float":
        return to_float
    return None


def to_decimal(x: Any) -> Decimal:
    """A runtime money value as Decimal; floats are refused (money is never a float).

    >>> to_decimal("1250.00"), to_decimal(3)
    (Decimal('1250.00'), Decimal('3'))
    """
    if isinstance(x, Decimal):
        return x
    if isinstance(x, int) and not isinstance(x, bool):
        return Decimal(x)
    if isinstance(x, str):
        try:
            return Decimal(x)
        except InvalidOperation:
            raise ValueError(f"{x!r} is not a decimal number") from None
    raise TypeError(f"expected a decimal, got {type(x).__name__} {x!r}")


def to_float(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float | Decimal):
        raise TypeError(f"expected a number, got {type(x).__name__} {x!r}")
    return float(x)


# -- leaves ------------------------------------------------------------------------


def _compile_leaf(
    leaf: Leaf, ctx: CompileContext, path: tuple[str | int, ...]
) -> CompiledCondition:
    operand = _resolve(leaf, ctx, path)
    op = leaf.op
    vpath = (*path, "value")
    t = operand.type
    get = _getter(operand)
    norm = _runtime_norm(operand)
    rank: dict[str, int] | None = None
    if operand.ordered and operand.enum:
        rank = {name: i for i, name in enumerate(operand.enum)}
    comparable = t in NUMERIC or t in ("date", "datetime") or rank is not None

    if op in STATEFUL_OPS and operand.kind != "feature":
        ctx.problem(f"{op} compares with the value before the event: features only", (*path, "op"))
        raise _Invalid
    if op in ORDERED_OPS and not comparable:
        ctx.problem(f"{op} needs a number, a date or an ordered enumeration; {t} is not", path)
        raise _Invalid

    threshold: Any = None
    if op in ("is_null", "not_null"):
        if leaf.value is not None:
            ctx.problem(f"{op} takes no value", vpath)
            raise _Invalid
    elif op in ("in", "not_in", "between"):
        if not isinstance(leaf.value, list) or not leaf.value:
            ctx.problem(f"{op} takes a non-empty list", vpath)
            raise _Invalid
        threshold = [_coerce(v, operand, ctx, (*vpath, i)) for i, v in enumerate(leaf.value)]
        if op == "between":
            if len(threshold) != 2:
                ctx.problem("between takes [low, high]", vpath)
                raise _Invalid
            lo, hi = (rank[x] for x in threshold) if rank else threshold
            if lo > hi:
                ctx.problem("between: low is above high", vpath)
                raise _Invalid
    elif op == "contains":
        if t not in ("str", "list"):
            ctx.problem(f"contains needs a string or a list; {t} is not", path)
            raise _Invalid
        if not isinstance(leaf.value, str):
            ctx.problem(f"contains takes a string; {leaf.value!r} is not", vpath)
            raise _Invalid
        threshold = leaf.value
    elif op == "changed_by":
        if t not in NUMERIC and rank is None:
            ctx.problem(f"changed_by needs a number or an ordered enumeration; {t} is not", path)
            raise _Invalid
        step = leaf.value
        if rank is not None:
            if isinstance(step, bool) or not isinstance(step, int):
                ctx.problem(f"changed_by takes a whole number of steps; {step!r} is not", vpath)
                raise _Invalid
            threshold = step
        else:
            threshold = _coerce(step, operand, ctx, vpath)
        if threshold == 0:
            ctx.problem("changed_by takes a non-zero change", vpath)
            raise _Invalid
    elif op == "crosses":
        if t not in NUMERIC:
            ctx.problem(f"crosses needs a number; {t} is not", path)
            raise _Invalid
        threshold = _coerce(leaf.value, operand, ctx, vpath)
    else:  # eq ne lt le gt ge changed_to
        if t == "list":
            ctx.problem(f"{op} cannot compare a list; use contains", path)
            raise _Invalid
        threshold = _coerce(leaf.value, operand, ctx, vpath)

    if operand.kind == "field":
        ctx.fields.add(operand.name)
    if operand.kind == "feature":
        spec = ctx.registry[operand.name]
        if spec.phase == "before" or op in STATEFUL_OPS:
            ctx.before.add(operand.name)
        if spec.phase == "after":
            ctx.features.add(operand.name)

    test = _make_test(op, operand, norm, rank, threshold, _source(operand, ctx))
    describe = _make_describe(leaf, operand, get, test, threshold)
    event_only = operand.kind == "field"
    keyable = event_only and t in ("enum", "bool") and op in _KEYABLE_OPS
    return CompiledCondition(
        test,
        (describe,),
        test if event_only else None,
        event_only,
        key_field=operand.name if keyable else None,
    )


def _source(operand: Operand, ctx: CompileContext) -> Source:
    """How a view over ``ctx.registry`` computes this operand (see :func:`_make_test`)."""
    if operand.kind != "feature":
        return (None, None)
    spec = ctx.registry[operand.name]
    if spec.phase != "after":
        return (None, None)  # read from the values captured before the event
    return (spec.getter, ctx.registry)


def _make_test(
    op: str,
    operand: Operand,
    norm: Callable[[Any], Any] | None,
    rank: dict[str, int] | None,
    threshold: Any,
    src: Source = (None, None),
) -> Test:
    """The leaf as one closure.

    Every event runs these, so each reads its operand inline (a feature from
    the view's cache, computed on first use by ``FeatureView._miss``) and
    compares with a C-level operator where it can, instead of calling a
    getter, a normaliser and a comparison in turn. Values that already have
    the threshold's type (the usual case) skip normalisation altogether.

    ``src`` is the feature's getter and the registry it comes from: a view
    over that same registry (every view a rule set makes) computes a missing
    feature by calling the getter directly.
    """
    name = operand.name
    if rank is not None:
        r = rank

        def by_rank(x: Any) -> int:
            try:
                return r[x]
            except KeyError:
                raise ValueError(f"{name}: {x!r} is not one of {', '.join(r)}") from None

        norm = by_rank
        if op in ORDERED_OPS or op == "changed_by":
            threshold = (
                [r[x] for x in threshold]
                if op == "between"
                else (threshold if op == "changed_by" else r[threshold])
            )
        elif op not in ("is_null", "not_null"):
            norm = None  # eq, ne, in, not_in, changed_to compare the names
    # values of this class need no normalisation (Decimal for decimal operands...)
    exact: type | None = None
    if norm is to_decimal:
        exact = Decimal
    elif norm is to_float:
        exact = float
    n: Callable[[Any], Any] = norm or _identity

    if op in STATEFUL_OPS:
        return _stateful(op, name, src, norm, exact, rank if norm is not None else None, threshold)
    if op in ("is_null", "not_null"):
        return _null_test(operand.kind, name, src, op == "is_null")
    if op in _PY_OPS and (norm is None or exact is not None):
        return _cmp_test(operand.kind, name, src, _PY_OPS[op], threshold, norm, exact)
    if op in ("in", "not_in") and norm is None:
        return _in_test(operand.kind, name, src, frozenset(threshold), op == "in")
    return _pred_test(operand.kind, name, src, _predicate(op, n, threshold))


def _predicate(op: str, n: Callable[[Any], Any], threshold: Any) -> Callable[[Any], bool]:
    """What a non-null value must satisfy, for the operators without a fast path."""
    if op in _PY_OPS:
        cmp = _PY_OPS[op]
        return lambda x: cmp(n(x), threshold)
    if op == "between":
        lo, hi = threshold
        return lambda x: lo <= n(x) <= hi
    if op in ("in", "not_in"):
        members = frozenset(threshold)
        inside = op == "in"
        return lambda x: (n(x) in members) is inside
    if op == "contains":
        return lambda x: threshold in x
    raise AssertionError(f"no predicate for {op}")  # pragma: no cover - ops are validated


def _null_test(kind: str, name: str, src: Source, is_null: bool) -> Test:
    get, reg = src
    if kind == "feature":

        def feature(ev: Any, v: FeatureView, s: Mapping[str, float]) -> bool:
            c = v._cache
            x = c.get(name, _UNSET)
            if x is _UNSET:
                x = c[name] = get(v) if v.registry is reg else v._miss(name)
            return (x is None) is is_null

        return feature
    if kind == "field":
        return lambda ev, v, s: (getattr(ev, name, None) is None) is is_null
    return lambda ev, v, s: (s.get(name) is None) is is_null


def _cmp_test(
    kind: str,
    name: str,
    src: Source,
    cmp: Callable[[Any, Any], bool],
    t: Any,
    norm: Callable[[Any], Any] | None,
    exact: type | None,
) -> Test:
    """``eq ne lt le gt ge``; ``norm`` only for values not already of class ``exact``."""
    get, reg = src
    if norm is None:
        if kind == "feature":

            def feature(ev: Any, v: FeatureView, s: Mapping[str, float]) -> bool:
                c = v._cache
                x = c.get(name, _UNSET)
                if x is _UNSET:
                    x = c[name] = get(v) if v.registry is reg else v._miss(name)
                return x is not None and cmp(x, t)

            return feature
        if kind == "field":

            def field_(ev: Any, v: FeatureView, s: Mapping[str, float]) -> bool:
                x = getattr(ev, name, None)
                return x is not None and cmp(x, t)

            return field_

        def score(ev: Any, v: FeatureView, s: Mapping[str, float]) -> bool:
            x = s.get(name)
            return x is not None and cmp(x, t)

        return score
    n = norm
    if kind == "feature":

        def feature_n(ev: Any, v: FeatureView, s: Mapping[str, float]) -> bool:
            c = v._cache
            x = c.get(name, _UNSET)
            if x is _UNSET:
                x = c[name] = get(v) if v.registry is reg else v._miss(name)
            if x is None:
                return False
            return cmp(x if x.__class__ is exact else n(x), t)

        return feature_n
    if kind == "field":

        def field_n(ev: Any, v: FeatureView, s: Mapping[str, float]) -> bool:
            x = getattr(ev, name, None)
            if x is None:
                return False
            return cmp(x if x.__class__ is exact else n(x), t)

        return field_n

    def score_n(ev: Any, v: FeatureView, s: Mapping[str, float]) -> bool:
        x = s.get(name)
        if x is None:
            return False
        return cmp(x if x.__class__ is exact else n(x), t)

    return score_n


def _in_test(kind: str, name: str, src: Source, members: frozenset[Any], inside: bool) -> Test:
    get, reg = src
    if kind == "feature":

        def feature(ev: Any, v: FeatureView, s: Mapping[str, float]) -> bool:
            c = v._cache
            x = c.get(name, _UNSET)
            if x is _UNSET:
                x = c[name] = get(v) if v.registry is reg else v._miss(name)
            return x is not None and (x in members) is inside

        return feature
    if kind == "field":

        def field_(ev: Any, v: FeatureView, s: Mapping[str, float]) -> bool:
            x = getattr(ev, name, None)
            return x is not None and (x in members) is inside

        return field_

    def score(ev: Any, v: FeatureView, s: Mapping[str, float]) -> bool:
        x = s.get(name)
        return x is not None and (x in members) is inside

    return score


def _pred_test(kind: str, name: str, src: Source, pred: Callable[[Any], bool]) -> Test:
    get, reg = src
    if kind == "feature":

        def feature(ev: Any, v: FeatureView, s: Mapping[str, float]) -> bool:
            c = v._cache
            x = c.get(name, _UNSET)
            if x is _UNSET:
                x = c[name] = get(v) if v.registry is reg else v._miss(name)
            return x is not None and pred(x)

        return feature
    if kind == "field":

        def field_(ev: Any, v: FeatureView, s: Mapping[str, float]) -> bool:
            x = getattr(ev, name, None)
            return x is not None and pred(x)

        return field_

    def score(ev: Any, v: FeatureView, s: Mapping[str, float]) -> bool:
        x = s.get(name)
        return x is not None and pred(x)

    return score


def _stateful(
    op: str,
    name: str,
    src: Source,
    norm: Callable[[Any], Any] | None,
    exact: type | None,
    rank: dict[str, int] | None,
    threshold: Any,
) -> Test:
    """``crosses``, ``changed_to``, ``changed_by``: the feature now and before the event.

    The value now is read first and decides most events on its own (a
    feature that is not at or past its threshold cannot have crossed it), so
    the captured value is looked up only when it can matter. Values are
    normalised (``norm``) only when they are not already of class ``exact``;
    ranks of an ordered enumeration are looked up directly, ``norm`` raising
    for a name that is not one of them.
    """
    get, reg = src
    missing = (
        f"the value of {name!r} before the event was not captured: pass "
        "before=CompiledRuleSet.capture(...) taken before Engine.apply"
    )

    def prior(v: FeatureView) -> Any:
        """The value captured before the event (None: it had none); raises what it raised."""
        b = v.before
        before = _UNSET if b is None else b.get(name, _UNSET)
        if before is _UNSET:
            raise LookupError(missing)
        if before.__class__ is CapturedError:
            raise before.fail(name)
        return before

    if op == "crosses":

        def crosses(ev: Any, v: FeatureView, s: Mapping[str, float]) -> bool:
            c = v._cache
            now = c.get(name, _UNSET)
            if now is _UNSET:
                now = c[name] = get(v) if v.registry is reg else v._miss(name)
            if now is None:
                return False
            if norm is not None and now.__class__ is not exact:
                now = norm(now)
            if now < threshold:
                return False
            before = prior(v)
            if before is None:
                return False
            if norm is not None and before.__class__ is not exact:
                before = norm(before)
            return before < threshold

        return crosses
    if op == "changed_to":

        def changed_to(ev: Any, v: FeatureView, s: Mapping[str, float]) -> bool:
            c = v._cache
            now = c.get(name, _UNSET)
            if now is _UNSET:
                now = c[name] = get(v) if v.registry is reg else v._miss(name)
            if now is None:
                return False
            if norm is not None and now.__class__ is not exact:
                now = norm(now)
            if now != threshold:
                return False
            before = prior(v)
            if before is None:
                return False
            if norm is not None and before.__class__ is not exact:
                before = norm(before)
            return before != threshold

        return changed_to

    step = threshold  # changed_by
    up = step > 0

    def changed_by(ev: Any, v: FeatureView, s: Mapping[str, float]) -> bool:
        c = v._cache
        now = c.get(name, _UNSET)
        if now is _UNSET:
            now = c[name] = get(v) if v.registry is reg else v._miss(name)
        before = prior(v)
        if now is None or before is None:
            return False
        if rank is not None:
            a, z = rank.get(now), rank.get(before)
            if a is None or z is None:
                a, z = norm(now), norm(before)  # type: ignore[misc]  # raises: not a rank
            delta = a - z
        elif norm is None:
            delta = now - before
        else:
            if now.__class__ is not exact:
                now = norm(now)
            if before.__class__ is not exact:
                before = norm(before)
            delta = now - before
        return delta >= step if up else delta <= step

    return changed_by


def _identity(x: Any) -> Any:
    return x


def jsonable(x: Any) -> Any:
    """A value as it appears in an explanation (decimals as strings, dates ISO)."""
    if isinstance(x, Decimal):
        return str(x)
    if isinstance(x, date | datetime):
        return x.isoformat()
    if isinstance(x, list | tuple | frozenset | set):
        return [jsonable(i) for i in x]
    return x


_AS_IS: frozenset[type] = frozenset({str, int, float, bool, type(None)})
"""Classes :func:`jsonable` returns unchanged (looked up first: explanations are built per hit)."""


def _make_describe(
    leaf: Leaf, operand: Operand, get: Getter, test: Test, threshold: Any
) -> Callable[[Any, FeatureView, Mapping[str, float]], dict[str, Any]]:
    raw_threshold = jsonable(threshold if operand.ordered is False else leaf.value)
    stateful = leaf.op in STATEFUL_OPS
    name = operand.name
    head: dict[str, Any] = {operand.kind: name, "op": leaf.op}
    if leaf.op not in ("is_null", "not_null"):
        head["threshold"] = raw_threshold

    def describe(ev: Any, v: FeatureView, s: Mapping[str, float]) -> dict[str, Any]:
        out = head.copy()
        try:
            x = get(ev, v, s)
            out["value"] = x if x.__class__ in _AS_IS else jsonable(x)
            if stateful:
                out["before"] = jsonable(v.previous(name))
            out["result"] = bool(test(ev, v, s))
        except Exception as exc:  # explaining must not hide the value that failed
            out["error"] = f"{type(exc).__name__}: {exc}"
        return out

    return describe
