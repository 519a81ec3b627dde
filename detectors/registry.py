"""Every detector by name, with its parameters and a version that changes with them.

The version is what persisted state is checked against: a customer model or a
pickled population model written under another version is not trusted (fresh
start with warm-up). It combines the detector's ``code_version`` (bumped when
the state layout or meaning changes) with a hash of its parameters.

>>> spec = REGISTRY["velocity_burst"]
>>> spec.kind
'customer'
>>> spec.version == Spec("velocity_burst", spec.factory, "customer").version
True
>>> spec.version != spec.with_params(debit_window_s=60.0).version
True
>>> sorted(REGISTRY)  # doctest: +NORMALIZE_WHITESPACE
['default_probability', 'population_anomaly', 'repayment_drift',
 'spending_drift', 'transaction_anomaly', 'velocity_burst']
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson

from detectors.base import CustomerDetector, Detector
from detectors.default_probability import DefaultProbability
from detectors.population import PopulationAnomaly
from detectors.repayment import RepaymentDrift
from detectors.spending import SpendingDrift
from detectors.transaction import TransactionAnomaly
from detectors.velocity import VelocityBurst

Kind = Literal["customer", "shared"]


@dataclass(frozen=True, slots=True)
class Spec:
    """How to build one detector: its name, factory, kind and parameters."""

    name: str
    factory: Callable[..., Detector | CustomerDetector]
    kind: Kind
    params: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Detector | CustomerDetector:
        return self.factory(**self.params)

    def with_params(self, **params: Any) -> Spec:
        return replace(self, params={**self.params, **params})

    @property
    def version(self) -> str:
        code = getattr(self.factory, "code_version", "0")
        blob = orjson.dumps(self.params, option=orjson.OPT_SORT_KEYS, default=str)
        digest = hashlib.blake2b(blob + code.encode(), digest_size=4).hexdigest()
        return f"{self.name}@{code}.{digest}"

    @property
    def tag(self) -> str:
        """A short form of the version (8 hex digits) kept inside each customer model."""
        return hashlib.blake2b(self.version.encode(), digest_size=4).hexdigest()


def _specs() -> dict[str, Spec]:
    specs = (
        Spec("transaction_anomaly", TransactionAnomaly, "customer"),
        Spec("velocity_burst", VelocityBurst, "customer"),
        Spec("repayment_drift", RepaymentDrift, "customer"),
        Spec("spending_drift", SpendingDrift, "customer"),
        Spec("population_anomaly", PopulationAnomaly, "shared", {"seed": 42}),
        Spec("default_probability", DefaultProbability, "shared", {"seed": 42}),
    )
    return {s.name: s for s in specs}


REGISTRY: dict[str, Spec] = _specs()
"""All detectors, by name (the contract test runs over every one)."""
