"""The allowlist: every name a rule may read, with its type and how to read it.

Three kinds of operand exist in a condition:

- ``feature``: a value derived from the customer's rolling risk state (DPD,
  income, exposure, transaction windows, tier...). Each is a
  :class:`FeatureSpec` in :data:`FEATURES` with a type and a getter.
- ``field``: a field of the event being judged; its type comes from the event
  model (:data:`EVENT_TYPES`), and a rule may only name a field that every
  event type it applies to carries.
- ``score``: a detector's score for this event (a float, missing when the
  detector did not score it).

Features are read through a :class:`FeatureView`, a lazy mapping: only the
features a rule set actually reads are computed, each at most once per event
(the full ``Engine.features`` dictionary costs about 100 µs, far too much per
event).

Some features compare the state before and after the event (``changed_by``,
``crosses``, ``changed_to``) or are only meaningful before the event is applied
(``country_is_new``: after the transaction, its country is known). Those values
are captured by :meth:`rules.engine.CompiledRuleSet.capture` before
``Engine.apply`` and handed to the view as ``before``.

>>> FEATURES["max_dpd"].type, FEATURES["risk_tier"].enum
('int', ('premium', 'low', 'medium', 'high'))
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from risk.classification import CLASSES
from risk.customer import CustomerState
from risk.signals import RISKY_COUNTERPARTIES, group_exposure, in_default, own_exposure
from risk.transactions import CENT, CHANNEL_CODE
from risk.windows import resolution_for
from schemas.events import EVENT_MODELS, BaseEvent
from schemas.internal import RelatedDefault, RelatedExposure

if TYPE_CHECKING:
    from risk.engine import Engine

FeatureType = Literal["int", "decimal", "float", "bool", "str", "enum", "date", "datetime", "list"]
NUMERIC: frozenset[str] = frozenset({"int", "decimal", "float"})
ZERO = Decimal("0")
SHARE = Decimal("0.0001")  # shares and ratios are kept to four decimal places
DAY = 86400
TIERS: tuple[str, ...] = ("premium", "low", "medium", "high")


class Tick(BaseEvent):
    """The passage of time for a customer with no event (``Engine.advance``).

    DPD grows on ticks, so rules about DPD buckets apply to ``tick`` as well as
    to servicing events; the processor judges a tick like an event.
    """

    type: Literal["tick"] = "tick"


EVENT_TYPES: dict[str, type[BaseModel]] = {
    **EVENT_MODELS,
    "related.exposure": RelatedExposure,
    "related.default": RelatedDefault,
    "tick": Tick,
}
"""Every event type a rule may apply to: public inputs, internal relations, ticks."""


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One allowlisted operand: its type and how to read it."""

    name: str
    type: FeatureType
    getter: Callable[[FeatureView], Any]
    doc: str
    enum: tuple[str, ...] | None = None
    ordered: bool = False  # enum values are listed from best to worst
    nullable: bool = False
    phase: Literal["after", "before"] = "after"  # "before": only known before the event
    # Reads the customer's state alone: not the event, its time, nor the state's
    # instant (``as_of``), so two views of one state at different instants agree.
    # ``risk.judge`` leaves out the days on which nothing such a feature reads can
    # change; a getter that starts reading the clock must drop the flag.
    state_only: bool = False


_UNSET: Any = object()


class CapturedError:
    """A feature that failed to compute before the event; reading it re-raises."""

    __slots__ = ("exc",)

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def fail(self, name: str) -> RuntimeError:
        return RuntimeError(f"computing {name!r} before the event failed: {self.exc!r}")


class FeatureView(Mapping[str, Any]):
    """The features of one customer at one event, computed lazily and cached.

    ``state`` is the customer's state (after the event, unless this view is
    capturing the state before it), ``engine`` supplies settings and local
    time, ``event`` is the event being judged, and ``before`` holds the values
    captured before the event was applied.

    Compiled conditions read a feature as ``v._cache.get(name)`` and fall back
    to :meth:`_miss` only the first time (see :mod:`rules.conditions`): a
    rule set judges every event, so each Python call saved on that path counts.
    """

    __slots__ = ("_cache", "_now", "before", "engine", "event", "registry", "state")

    def __init__(
        self,
        state: CustomerState,
        engine: Engine,
        event: Any,
        *,
        before: Mapping[str, Any] | None = None,
        registry: Mapping[str, FeatureSpec] | None = None,
        now: int | None = None,
    ) -> None:
        self.state = state
        self.engine = engine
        self.event = event
        self.before = before
        self.registry = FEATURES if registry is None else registry
        self._now = now
        self._cache: dict[str, Any] = {}

    @property
    def now(self) -> int:
        """The event's time in Unix seconds: the instant windows are read at.

        Computed on first use only (``datetime.timestamp`` on an aware time is
        one of the dearer steps of judging an event, and most rules never need
        it).
        """
        now = self._now
        if now is None:
            now = self._now = int(self.event.occurred_at.timestamp())
        return now

    def __getitem__(self, name: str) -> Any:
        value = self._cache.get(name, _UNSET)  # not try/except: a miss is the usual case
        if value is _UNSET:
            return self._miss(name)
        return value

    def _miss(self, name: str) -> Any:
        """Compute ``name`` (not cached yet), cache it and return it."""
        spec = self.registry[name]
        if spec.phase == "after":
            value = spec.getter(self)
        else:
            before = self.before
            value = _UNSET if before is None else before.get(name, _UNSET)
            if value is _UNSET:
                raise LookupError(
                    f"feature {name!r} is read before the event is applied: pass "
                    "before=CompiledRuleSet.capture(...) taken before Engine.apply"
                )
            if value.__class__ is CapturedError:
                raise value.fail(name)
        self._cache[name] = value
        return value

    def compute(self, name: str) -> Any:
        """The feature as this view's state has it, ignoring ``before`` (used to capture)."""
        return self.registry[name].getter(self)

    def previous(self, name: str) -> Any:
        """The feature's value before the event, or raise if it was not captured."""
        before = self.before
        value = _UNSET if before is None else before.get(name, _UNSET)
        if value is _UNSET:
            raise LookupError(
                f"the value of {name!r} before the event was not captured: pass "
                "before=CompiledRuleSet.capture(...) taken before Engine.apply"
            )
        if value.__class__ is CapturedError:
            raise value.fail(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.registry)

    def __len__(self) -> int:
        return len(self.registry)


# -- getters ---------------------------------------------------------------------


def _max_dpd(v: FeatureView) -> int:
    # a plain loop, not max() over a generator: read before and after every servicing
    # event and every day a loan ages
    worst: int | None = None
    for ln in v.state.loans.values():
        if ln.status == "open":
            dpd = ln.dpd_seen
            if worst is None or dpd > worst:
                worst = dpd
    return 0 if worst is None else worst


def _failed_30d(v: FeatureView) -> int:
    return sum(ln.failed_within(30, v.now) for ln in v.state.loans.values())


def _worst_on_time(v: FeatureView) -> float | None:
    st = v.state
    as_of = st.as_of or st.last_event_at or v.event.occurred_at
    local = as_of.astimezone(st.tz).date()
    ratios = [r for ln in st.loans.values() if (r := ln.on_time_ratio(local)) is not None]
    return min(ratios) if ratios else None


def _expected_income(v: FeatureView) -> Decimal | None:
    st = v.state
    if st.monthly_income is not None:
        return st.monthly_income
    cents = st.income.expected_cents()
    return None if cents is None else (Decimal(cents) * CENT)


def _income_days_late(v: FeatureView) -> int | None:
    expected = v.state.income.expected_at()
    if expected is None:
        return None
    return max(0, (v.now - expected) // DAY)


def _codes_sum(v: FeatureView, codes: frozenset[str], seconds: int, size: int) -> tuple[int, int]:
    """(count, minor units) of ``codes`` over the window ending at the event.

    The same sum as ``Windows.total``/``totals`` (same buckets of ``size``
    seconds, same edges), in one pass over the buckets of the window with a
    set lookup per code a bucket holds (a day bucket holds a handful):
    several times cheaper than ``totals`` with its prefix matching, and this
    runs on every debit.
    """
    now = v.now
    first = (now - seconds) // size
    last = now // size
    n = amount = 0
    buckets = v.state.tx.windows.buckets[size]
    if last - first < len(buckets):
        get = buckets.get
        for i in range(first, last + 1):
            bucket = get(i)
            if bucket is not None:
                for code, slot in bucket.items():
                    if code in codes:
                        n += slot[0]
                        amount += slot[1]
    else:
        for i, bucket in buckets.items():
            if first <= i <= last:
                for code, slot in bucket.items():
                    if code in codes:
                        n += slot[0]
                        amount += slot[1]
    return n, amount


def _window(codes: Iterable[str], seconds: int) -> Callable[[FeatureView], tuple[int, int]]:
    """(count, minor units) of ``codes`` over a window, summed once per view.

    A window's count and amount are two features read from one pass over its
    buckets (a rule on cash withdrawals reads both): the pass is kept in the
    view's cache under a name no feature can have.
    """
    wanted, size = frozenset(codes), resolution_for(seconds)
    key = f"\0window:{seconds}:{','.join(sorted(wanted))}"

    def pair(v: FeatureView) -> tuple[int, int]:
        cache = v._cache
        both = cache.get(key)
        if both is None:
            both = cache[key] = _codes_sum(v, wanted, seconds, size)
        return both

    return pair


def _window_count(codes: Iterable[str], seconds: int) -> Callable[[FeatureView], int]:
    pair = _window(codes, seconds)
    return lambda v: pair(v)[0]


def _window_amount(codes: Iterable[str], seconds: int) -> Callable[[FeatureView], Decimal]:
    pair = _window(codes, seconds)
    return lambda v: Decimal(pair(v)[1]) * CENT


def _spend_to_income(days: int) -> Callable[[FeatureView], Decimal | None]:
    debits = f"tx_{days}d_debit_sum"
    seconds = days * DAY
    wanted, size = frozenset(f"-{c}" for c in CHANNEL_CODE.values()), resolution_for(seconds)

    def get(v: FeatureView) -> Decimal | None:
        # Both parts are features of their own, cached in the view. This runs on every
        # debit, so over the standard allowlist they are computed here directly rather
        # than through ``v[...]`` (the same getters, two calls fewer each).
        cache = v._cache
        own = v.registry is FEATURES
        income = cache.get("expected_income", _UNSET)
        if income is _UNSET:
            income = _expected_income(v) if own else v._miss("expected_income")
            cache["expected_income"] = income
        if income is None or income <= ZERO:
            return None
        spent = cache.get(debits, _UNSET)
        if spent is _UNSET:
            if own:
                spent = cache[debits] = Decimal(_codes_sum(v, wanted, seconds, size)[1]) * CENT
            else:
                spent = v._miss(debits)
        return (spent / income).quantize(SHARE)

    return get


def _max_diverted_share(v: FeatureView) -> Decimal:
    shares = [ln.diverted / ln.principal for ln in v.state.loans.values() if ln.principal > ZERO]
    return max(shares, default=ZERO).quantize(SHARE)


def _days_since_disbursement(v: FeatureView) -> int | None:
    opened = [ln.opened_at for ln in v.state.loans.values() if ln.status == "open" and ln.opened_at]
    if not opened:
        return None
    return max(0, (v.now - int(max(opened).timestamp())) // DAY)


def _local_hour(v: FeatureView) -> int:
    return v.event.occurred_at.astimezone(v.state.tz).hour


def _at_night(v: FeatureView) -> bool:
    cfg = v.engine.settings.features
    hour = v["event_local_hour"]
    start, end = cfg.night_start_hour, cfg.night_end_hour
    return (hour >= start or hour < end) if start > end else (start <= hour < end)


def _country_is_new(v: FeatureView) -> bool | None:
    """Judged on the state before the transaction: is its country new for the customer?"""
    country = getattr(v.event, "country", None)
    if country is None:
        return None
    tx = v.state.tx
    warm_up = v.engine.settings.features.novelty_warm_up_transactions
    return country not in tx.countries and tx.seen >= warm_up


def _links(relation: str) -> Callable[[FeatureView], int]:
    return lambda v: sum(1 for rels in v.state.links.values() if relation in rels)


def _balance_trend(v: FeatureView) -> Decimal | None:
    levels = v.state.tx.windows.levels("b", 30 * DAY, v.now)
    trend = v.state.tx._trend(levels)
    return None if trend is None else Decimal(trend)


def _build() -> dict[str, FeatureSpec]:
    specs: list[FeatureSpec] = [
        # arrears and servicing
        FeatureSpec(
            "max_dpd", "int", _max_dpd, "Worst days past due over open loans.", state_only=True
        ),
        FeatureSpec(
            "max_failed_streak",
            "int",
            lambda v: max((ln.failed_streak for ln in v.state.loans.values()), default=0),
            "Longest current run of failed collections on any loan.",
            state_only=True,
        ),
        FeatureSpec(
            "failed_collections_30d", "int", _failed_30d, "Failed collections, last 30 days."
        ),
        FeatureSpec(
            "partial_payments",
            "int",
            lambda v: sum(ln.partial_payments for ln in v.state.loans.values()),
            "Repayments that left a past-due instalment part-paid, all loans.",
            state_only=True,
        ),
        FeatureSpec(
            "worst_on_time_ratio",
            "float",
            _worst_on_time,
            "Lowest share of recent instalments paid on time over the loans.",
            nullable=True,
        ),
        FeatureSpec(
            "open_loans",
            "int",
            lambda v: sum(1 for ln in v.state.loans.values() if ln.status == "open"),
            "Open loans.",
            state_only=True,
        ),
        FeatureSpec(
            "restructured_loans",
            "int",
            lambda v: sum(1 for ln in v.state.loans.values() if ln.restructured),
            "Loans under restructuring.",
            state_only=True,
        ),
        FeatureSpec(
            "defaulted",
            "bool",
            lambda v: v.state.defaulted_at is not None,
            "A default recorded.",
            state_only=True,
        ),
        FeatureSpec(
            "in_default",
            "bool",
            lambda v: in_default(v.state),
            "Default or substandard.",
            state_only=True,
        ),
        FeatureSpec(
            "max_diverted_share",
            "decimal",
            _max_diverted_share,
            "Largest share of a loan's principal moved to securities, real estate, gambling "
            "or crypto soon after disbursement.",
            state_only=True,
        ),
        FeatureSpec(
            "days_since_disbursement",
            "int",
            _days_since_disbursement,
            "Days since the most recent open loan was disbursed.",
            nullable=True,
        ),
        # summary
        FeatureSpec(
            "risk_score",
            "int",
            lambda v: v.state.risk_score,
            "Risk score, 0-1000.",
            state_only=True,
        ),
        FeatureSpec(
            "risk_tier",
            "enum",
            lambda v: v.state.risk_tier,
            "Risk tier.",
            enum=TIERS,
            ordered=True,
            state_only=True,
        ),
        FeatureSpec(
            "loan_class",
            "enum",
            lambda v: v.state.loan_class,
            "Worst loan class.",
            enum=CLASSES,
            ordered=True,
            state_only=True,
        ),
        FeatureSpec(
            "open_alerts", "int", lambda v: v.state.open_alerts, "Open warnings.", state_only=True
        ),
        FeatureSpec(
            "segment",
            "enum",
            lambda v: v.state.segment,
            "Customer segment.",
            enum=("retail", "sme", "corporate"),
            nullable=True,
            state_only=True,
        ),
        # income
        FeatureSpec(
            "monthly_income",
            "decimal",
            lambda v: v.state.monthly_income,
            "Declared monthly income.",
            nullable=True,
            state_only=True,
        ),
        FeatureSpec(
            "expected_income",
            "decimal",
            _expected_income,
            "Declared monthly income, else the recognised income's usual amount.",
            nullable=True,
            state_only=True,
        ),
        FeatureSpec(
            "income_recognised",
            "bool",
            lambda v: v.state.income.primary is not None,
            "A recurring income is recognised.",
            state_only=True,
        ),
        FeatureSpec(
            "income_late",
            "bool",
            lambda v: v.state.income.late_alerted_for is not None,
            "The primary income is later than its grace period.",
            state_only=True,
        ),
        FeatureSpec(
            "income_dropped",
            "bool",
            lambda v: v.state.income.dropped_at is not None,
            "The last primary income credit was a sharp cut.",
            state_only=True,
        ),
        FeatureSpec(
            "income_days_late",
            "int",
            _income_days_late,
            "Whole days since the primary income was expected (0 when not yet due).",
            nullable=True,
        ),
        # exposure and relations
        FeatureSpec(
            "own_exposure",
            "decimal",
            lambda v: own_exposure(v.state),
            "Outstanding principal.",
            state_only=True,
        ),
        FeatureSpec(
            "group_exposure",
            "decimal",
            lambda v: group_exposure(v.state),
            "Own exposure plus that of guarantors and group members.",
            state_only=True,
        ),
        FeatureSpec(
            "related_defaults",
            "int",
            lambda v: len(v.state.contagion),
            "Guarantors or group members known to be in default.",
            state_only=True,
        ),
        FeatureSpec("guarantors", "int", _links("guarantor"), "Guarantor links.", state_only=True),
        FeatureSpec(
            "group_members", "int", _links("group_member"), "Group member links.", state_only=True
        ),
        FeatureSpec(
            "fraud_confirmed",
            "int",
            lambda v: v.state.counters.get("fraud_confirmed", 0),
            "Confirmed frauds.",
            state_only=True,
        ),
        # transactions
        FeatureSpec(
            "night_tx_30d_count",
            "int",
            lambda v: v.state.tx.windows.total("n", 30 * DAY, v.now)[0],
            "Transactions at the customer's local night, 30 days.",
        ),
        FeatureSpec(
            "new_countries_30d",
            "int",
            lambda v: v.state.tx.windows.total("nc", 30 * DAY, v.now)[0],
            "Transactions in a country new for the customer, 30 days.",
        ),
        FeatureSpec(
            "new_merchant_categories_30d",
            "int",
            lambda v: v.state.tx.windows.total("nm", 30 * DAY, v.now)[0],
            "Transactions in a merchant category new for the customer, 30 days.",
        ),
        FeatureSpec(
            "spend_to_income_30d",
            "decimal",
            _spend_to_income(30),
            "Debits over 30 days divided by the expected monthly income.",
            nullable=True,
        ),
        FeatureSpec(
            "spend_to_income_7d",
            "decimal",
            _spend_to_income(7),
            "Debits over 7 days divided by the expected monthly income.",
            nullable=True,
        ),
        FeatureSpec(
            "balance_trend_30d_per_day",
            "decimal",
            _balance_trend,
            "Least-squares slope of the daily closing balance, per day.",
            nullable=True,
        ),
        # the event itself, in the customer's frame
        FeatureSpec(
            "event_local_hour", "int", _local_hour, "Hour of the event, customer's local time."
        ),
        FeatureSpec("event_at_night", "bool", _at_night, "The event is at the customer's night."),
        FeatureSpec(
            "country_is_new",
            "bool",
            _country_is_new,
            "The transaction's country is new for the customer (after the novelty warm-up); "
            "null when it carries no country.",
            nullable=True,
            phase="before",
        ),
    ]
    for label, seconds in (("1h", 3600), ("24h", DAY), ("7d", 7 * DAY), ("30d", 30 * DAY)):
        for sign, direction in (("-", "debit"), ("+", "credit")):
            codes = [sign + c for c in CHANNEL_CODE.values()]  # channel codes: "-k", "+t"...
            specs.append(
                FeatureSpec(
                    f"tx_{label}_{direction}_count",
                    "int",
                    _window_count(codes, seconds),
                    f"{direction.title()} transactions, {label}.",
                )
            )
            specs.append(
                FeatureSpec(
                    f"tx_{label}_{direction}_sum",
                    "decimal",
                    _window_amount(codes, seconds),
                    f"{direction.title()} amount, {label}.",
                )
            )
        cash = ("-a", "-h")
        specs.append(
            FeatureSpec(
                f"cash_withdrawals_{label}_count",
                "int",
                _window_count(cash, seconds),
                f"ATM/cash out, {label}.",
            )
        )
        specs.append(
            FeatureSpec(
                f"cash_withdrawals_{label}_sum",
                "decimal",
                _window_amount(cash, seconds),
                f"ATM/cash withdrawn, {label}.",
            )
        )
    risky = tuple(f"-p:{kind}" for kind in sorted(RISKY_COUNTERPARTIES))
    specs.append(
        FeatureSpec(
            "risky_debits_30d_sum",
            "decimal",
            _window_amount(risky, 30 * DAY),
            "Paid to securities, real estate, gambling or crypto, 30 days.",
        )
    )
    for kind in sorted(RISKY_COUNTERPARTIES):
        specs.append(
            FeatureSpec(
                f"debits_to_{kind}_30d_sum",
                "decimal",
                _window_amount((f"-p:{kind}",), 30 * DAY),
                f"Paid to {kind.replace('_', ' ')} counterparties, 30 days.",
            )
        )
    return {s.name: s for s in specs}


FEATURES: dict[str, FeatureSpec] = _build()
"""Every feature a rule may name."""


# -- event fields ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldType:
    """The type of an event field, as conditions see it."""

    type: FeatureType
    enum: tuple[str, ...] | None = None
    nullable: bool = False


def _field_type(annotation: Any) -> FieldType:
    nullable = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(annotation))
        if len(args) == 1:
            inner = _field_type(args[0])
            return FieldType(inner.type, inner.enum, nullable or inner.nullable)
        literals = [v for a in args for v in typing.get_args(a)]
        if all(typing.get_origin(a) is Literal for a in args):
            return FieldType("enum", tuple(literals), nullable)
        return FieldType("str", None, nullable)
    if origin is typing.Annotated:
        return _field_type(typing.get_args(annotation)[0])
    if origin is Literal:
        return FieldType("enum", tuple(typing.get_args(annotation)), nullable)
    if origin in (tuple, list):
        return FieldType("list", None, nullable)
    if annotation is Decimal:
        return FieldType("decimal")
    if annotation is bool:
        return FieldType("bool")
    if annotation is int:
        return FieldType("int")
    if annotation is float:
        return FieldType("float")
    if annotation is datetime:
        return FieldType("datetime")
    if annotation is date:
        return FieldType("date")
    return FieldType("str")


def event_fields(event_type: str) -> dict[str, FieldType]:
    """The fields of one event type and their condition types.

    >>> event_fields("transaction.posted")["amount"]
    FieldType(type='decimal', enum=None, nullable=False)
    >>> event_fields("transaction.posted")["channel"].enum[:2]
    ('card', 'atm')
    """
    cached = _FIELDS.get(event_type)
    if cached is None:
        model = EVENT_TYPES[event_type]
        cached = {name: _field_type(info.annotation) for name, info in model.model_fields.items()}
        _FIELDS[event_type] = cached
    return cached


_FIELDS: dict[str, dict[str, FieldType]] = {}
