"""Configuration of the alert path: routes, inhibition, grouping, dedup, breaker, retries.

Frozen pydantic models, like ``config.settings``: a bad route, matcher or
duration fails when the worker starts, with a message naming the field. The
defaults are what the risk desk gets without configuring anything, and each
says why it is what it is. The composition root builds :class:`AlertConfig`
(from settings when the service's settings grow an ``alert_delivery``
section; see :func:`AlertConfig.model_validate` for a dict from YAML/env).

>>> cfg = AlertConfig()
>>> cfg.receivers_for("both"), cfg.receivers_for("collections")
(('risk_desk',), ())
>>> AlertConfig(routes={"risk_desk": ["desk"]}, default_route="nowhere")
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for AlertConfig
  Value error, default_route 'nowhere' is not one of the routes ['risk_desk'] ...
"""

from __future__ import annotations

import re
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from alerts.matchers import Matcher
from alerts.model import is_known_label

__all__ = [
    "DEFAULT_INHIBIT_RULES",
    "AlertConfig",
    "BreakerConfig",
    "DeliveryConfig",
    "InhibitRule",
]

_NAME = r"^[a-z][a-z0-9_-]{0,63}$"
_NAME_RE = re.compile(_NAME)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InhibitRule(_Frozen):
    """While a warning matching ``source`` fires, warnings matching ``target`` stay quiet.

    Only when the two agree on every label in ``equal`` (by default the same
    customer and the same loan), and, with ``stronger_only``, only when the
    source's severity is strictly higher than the target's.
    """

    name: str = Field(pattern=_NAME)
    source: tuple[Matcher, ...] = Field(min_length=1)
    target: tuple[Matcher, ...] = Field(min_length=1)
    equal: tuple[str, ...] = ("customer_id", "loan_id")
    stronger_only: bool = False

    @field_validator("equal")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if not is_known_label(name)]
        if unknown:
            raise ValueError(f"inhibit rule equal: unknown label(s) {unknown}")
        return value


DEFAULT_INHIBIT_RULES: tuple[InhibitRule, ...] = (
    # A loan classified doubtful or loss is already the desk's top concern;
    # its arrears buckets and failed collections add nothing but noise.
    InhibitRule(
        name="severe-class-mutes-arrears",
        source=(
            Matcher.parse("source=classification"),
            Matcher.parse("severity=critical"),
        ),
        target=(
            Matcher.parse("code=~dpd_[0-9]+|repeated_failed_collections|failed_collections"),
            Matcher.parse("severity!=critical"),
        ),
    ),
    # A loan 60 or 90 days past due does not also page for 1 or 30 days.
    InhibitRule(
        name="deeper-arrears-mutes-shallower",
        source=(Matcher.parse("code=~dpd_[0-9]+"),),
        target=(Matcher.parse("code=~dpd_[0-9]+"),),
        stronger_only=True,
    ),
)


class BreakerConfig(_Frozen):
    """When one rule fires for an unusual share of customers, hold its warnings.

    The trip point is ``max(min_customers, ceil(max_share * population))``
    distinct customers within ``window``; the population is what the
    composition root reports (e.g. customers with a risk score), or just
    ``min_customers`` when it reports none. The breaker closes again by
    itself once the count falls to ``release_ratio`` of the trip point and it
    has been open for at least ``min_open`` (hysteresis, so it does not
    flap); an operator can close it at any time.
    """

    enabled: bool = True
    window: timedelta = timedelta(hours=1)
    max_share: float = Field(default=0.05, gt=0, le=1)
    min_customers: int = Field(default=50, ge=1)
    release_ratio: float = Field(default=0.5, gt=0, lt=1)
    min_open: timedelta = timedelta(minutes=15)
    exempt_codes: tuple[str, ...] = ()
    population_refresh: timedelta = timedelta(minutes=1)
    deliver_on_auto_release: bool = False
    """Whether warnings held while open go out when the breaker closes by itself.

    Off by default: a flood that stopped on its own was most often a broken
    feed or a bad threshold, and the held warnings are the flood. Operations
    is told how many are held either way and decides.
    """

    @field_validator("window", "min_open")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration")
        return value


class DeliveryConfig(_Frozen):
    """How the outbox retries a channel that fails, and how long a sender owns a message."""

    initial_backoff: timedelta = timedelta(seconds=5)
    max_backoff: timedelta = timedelta(minutes=10)
    multiplier: float = Field(default=2.0, ge=1.0, le=10.0)
    lease: timedelta = timedelta(minutes=2)
    """Longer than one send can take (the SMTP timeout), so a slow send is never doubled."""
    batch: int = Field(default=20, ge=1, le=1000)
    max_attempts: int | None = Field(default=None, ge=1)
    """None: a retryable failure is retried until it succeeds (nothing is lost while a
    relay is down); a number: after that many attempts the message is parked as dead."""

    @model_validator(mode="after")
    def _order(self) -> DeliveryConfig:
        if self.initial_backoff <= timedelta(0) or self.max_backoff < self.initial_backoff:
            raise ValueError("delivery: 0 < initial_backoff <= max_backoff is required")
        if self.lease <= timedelta(0):
            raise ValueError("delivery.lease must be positive")
        return self


class AlertConfig(_Frozen):
    """Everything the notification pipeline decides by."""

    routes: dict[str, tuple[str, ...]] = Field(
        default_factory=lambda: {
            "risk_desk": ("risk_desk",),
            "both": ("risk_desk",),
            # Collections teams take their work from the collections-tasks topic.
            "collections": (),
        }
    )
    """Route (the ``route`` of a warning's explanation) -> receivers that are told."""
    default_route: str = "risk_desk"
    """Route of a warning whose explanation names none (classification changes)."""
    group_by: tuple[str, ...] = ("route", "customer_id")
    group_wait: timedelta = timedelta(seconds=30)
    """How long a new group collects before its first digest: a DPD tick that moves
    several loans of one customer gives one email, not five."""
    group_interval: timedelta = timedelta(minutes=5)
    """Least time between two digests of one group."""
    repeat_interval: timedelta = timedelta(hours=24)
    """One notification per dedup key per this interval, unless it escalates."""
    forget_after: timedelta = timedelta(days=180)
    """A dedup key not seen for this long is forgotten (its next firing is new)."""
    send_resolved: bool = True
    inhibit_rules: tuple[InhibitRule, ...] = DEFAULT_INHIBIT_RULES
    breaker: BreakerConfig = BreakerConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    ops_receiver: str | None = "ops"
    """Receiver of operational notices (a circuit breaker tripped or closed); None: log only."""

    @field_validator("routes")
    @classmethod
    def _names(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for route, receivers in value.items():
            if not _NAME_RE.match(route):
                raise ValueError(f"route name {route!r} must match {_NAME}")
            for receiver in receivers:
                if not _NAME_RE.match(receiver):
                    raise ValueError(f"receiver name {receiver!r} must match {_NAME}")
        return value

    @field_validator("group_by")
    @classmethod
    def _group_labels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if not is_known_label(name)]
        if unknown:
            raise ValueError(f"group_by: unknown label(s) {unknown}")
        return value

    @model_validator(mode="after")
    def _cross(self) -> AlertConfig:
        if self.default_route not in self.routes:
            raise ValueError(
                f"default_route {self.default_route!r} is not one of the routes "
                f"{sorted(self.routes)}"
            )
        names = [rule.name for rule in self.inhibit_rules]
        if len(names) != len(set(names)):
            raise ValueError("inhibit_rules: names must be unique")
        for field in ("group_wait", "group_interval", "repeat_interval", "forget_after"):
            if getattr(self, field) < timedelta(0):
                raise ValueError(f"{field} must not be negative")
        return self

    def receivers_for(self, route: str) -> tuple[str, ...]:
        """Receivers of a route; an unknown route goes where the default route goes."""
        return self.routes.get(route, self.routes[self.default_route])
