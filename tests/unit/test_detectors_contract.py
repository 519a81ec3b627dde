"""The contract every registered detector keeps (after river's ``checks/common.py``).

Run over ``detectors.registry.REGISTRY``: a detector added there is checked
here without a line of test of its own.
"""

from __future__ import annotations

import copy
import math
import pickle
import random
from typing import Any

import orjson
import pytest

from detectors import persistence
from detectors.base import Bound, CustomerDetector, Detector
from detectors.registry import REGISTRY, Spec
from detectors.stack import Stack

NAMES = sorted(REGISTRY)
CHANNELS = ("card", "atm", "online", "transfer")
COUNTRIES = ("CN", "CN", "CN", "JP", "TH")


def stream(seed: int, n: int = 300) -> list[dict[str, Any]]:
    """Transaction-like and collection-like observations with every key any detector reads."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    ts = 1_767_225_600.0
    for i in range(n):
        ts += rng.expovariate(1 / 20_000)
        x: dict[str, Any] = {
            "ts": ts,
            "segment": rng.choice(("retail", "sme")),
            "amount": round(math.exp(rng.gauss(4, 1)), 2),
            "direction": "debit" if rng.random() < 0.85 else "credit",
            "channel": rng.choice(CHANNELS),
            "country": rng.choice(COUNTRIES),
            "mcc": str(5400 + rng.randrange(8)),
            "hour_of_week": rng.uniform(0, 168),
            "debit": 1.0,
            "cash": float(rng.random() < 0.1),
            "log_amount": rng.random(),
            "hour_sin": rng.random(),
            "hour_cos": rng.random(),
            "night": float(rng.random() < 0.1),
            "to_income": rng.random() / 4,
        }
        if i % 10 == 0:
            x.update(
                repaid=1.0, days_late=float(rng.randint(-3, 4)), paid_ratio=rng.uniform(0.5, 1)
            )
        if i % 37 == 0:
            x.update(failed=1.0)
        x.update(max_dpd=rng.random() / 3, failed_streak=rng.random(), late_share=rng.random())
        out.append(x)
    return out


def make(spec: Spec) -> Detector:
    """The river shape of any registered detector (customer ones bound to a fresh model)."""
    det = spec.build()
    return Bound(det) if isinstance(det, CustomerDetector) else det  # type: ignore[arg-type]


def run(det: Detector, xs: list[dict[str, Any]], seed: int = 0) -> list[float]:
    """Score then learn each x; every 7th gets a verdict (so supervised models learn too)."""
    scores = []
    for i, x in enumerate(xs):
        scores.append(det.score_one(x))
        det.learn_one(x)
        if i % 7 == 0:
            det.feedback(x, (i + seed) % 3 == 0)
    return scores


@pytest.fixture(params=NAMES)
def spec(request: pytest.FixtureRequest) -> Spec:
    return REGISTRY[request.param]


def test_registry_names_match_detectors(spec: Spec) -> None:
    assert spec.build().name == spec.name


def test_versions_are_distinct_and_track_params(spec: Spec) -> None:
    versions = {s.version for s in REGISTRY.values()}
    assert len(versions) == len(REGISTRY)
    assert spec.with_params(**spec.params).version == spec.version
    other = spec.with_params(seed=12345) if "seed" in spec.params else None
    if other is not None:
        assert other.version != spec.version


def test_input_is_not_mutated(spec: Spec) -> None:
    det = make(spec)
    for x in stream(1, 120):
        before = copy.deepcopy(x)
        det.score_one(x)
        det.learn_one(x)
        det.feedback(x, True)
        assert x == before


def test_scores_are_finite_floats(spec: Spec) -> None:
    det = make(spec)
    for score in run(det, stream(2)):
        assert isinstance(score, float)
        assert math.isfinite(score)


def test_same_seed_same_scores(spec: Spec) -> None:
    xs = stream(3)
    assert run(make(spec), xs) == run(make(spec), xs)


def test_pickle_round_trip_keeps_scoring_identically(spec: Spec) -> None:
    xs = stream(4)
    det = make(spec)
    run(det, xs[:200])
    clone = pickle.loads(pickle.dumps(det))
    assert run(clone, xs[200:]) == run(det, xs[200:])


def run_one_pass(
    det: Detector, xs: list[dict[str, Any]], refuse: set[int] = frozenset()
) -> list[float]:
    """The stack's form: ``begin``, then ``finish`` (learning unless ``i`` is refused)."""
    scores = []
    for i, x in enumerate(xs):
        score, memo = det.begin(x)
        scores.append(score)
        det.finish(memo, i not in refuse)
    return scores


def test_one_pass_form_equals_score_then_learn(spec: Spec) -> None:
    xs = stream(11, 400)
    two_pass, one_pass = make(spec), make(spec)
    expected = []
    for x in xs:
        expected.append(two_pass.score_one(x))
        two_pass.learn_one(x)
    assert run_one_pass(one_pass, xs) == expected
    probe = stream(12, 50)
    assert [one_pass.score_one(x) for x in probe] == [two_pass.score_one(x) for x in probe]


def test_one_pass_refusal_leaves_the_norm_as_if_unseen(spec: Spec) -> None:
    """A refused observation is not learned (a customer detector may still count a run)."""
    xs = stream(13, 300)
    refused = set(range(150, 300, 7))
    skipping, refusing = make(spec), make(spec)
    for i, x in enumerate(xs):
        if i in refused:
            if isinstance(skipping, Bound):
                skipping.detector.observe_flagged(x, skipping.model)
            continue
        skipping.score_one(x)
        skipping.learn_one(x)
    run_one_pass(refusing, xs, refused)
    probe = stream(14, 50)
    assert [refusing.score_one(x) for x in probe] == [skipping.score_one(x) for x in probe]


def test_one_pass_does_not_mutate_the_input(spec: Spec) -> None:
    det = make(spec)
    for i, x in enumerate(stream(15, 150)):
        before = copy.deepcopy(x)
        _, memo = det.begin(x)
        det.finish(memo, i % 5 != 0)
        assert x == before


CUSTOMER_NAMES = [n for n in NAMES if isinstance(REGISTRY[n].build(), CustomerDetector)]


@pytest.mark.parametrize("name", CUSTOMER_NAMES)
def test_customer_model_is_small_json_and_round_trips(name: str) -> None:
    """Per-customer models live in the customer's state (shared ones in detectors.persistence)."""
    det = REGISTRY[name].build()
    assert isinstance(det, CustomerDetector)
    bound = Bound(det)
    xs = stream(5, 2000)
    run(bound, xs[:1500])
    blob = orjson.dumps(bound.model)
    assert len(blob) <= 400, len(blob)
    clone = Bound(det, orjson.loads(blob))
    assert run(clone, xs[1500:]) == run(bound, xs[1500:])


def test_persistence_round_trip_and_version_guard(spec: Spec) -> None:
    det = make(spec)
    xs = stream(6)
    run(det, xs[:200])
    blob = persistence.dumps(det, spec.version)
    restored = persistence.loads(blob, spec.version)
    assert run(restored, xs[200:]) == run(det, xs[200:])
    assert persistence.loads(blob, spec.version + "x") is None
    assert persistence.loads(blob[: len(blob) // 2], spec.version) is None
    assert persistence.loads(b"\x80\x04junk", spec.version) is None


@pytest.mark.parametrize(
    "x",
    [
        {},
        {"segment": "retail"},
        {"ts": 1_767_225_600.0},
        {"amount": 50.0, "unheard_of": "yes", "also_new": 3.0},
        {"days_late": 3.0},
    ],
)
def test_missing_and_new_features_are_tolerated(spec: Spec, x: dict[str, Any]) -> None:
    det = make(spec)
    run(det, stream(7, 150))
    score = det.score_one(x)
    det.learn_one(x)
    assert math.isfinite(score)
    assert math.isfinite(det.score_one(stream(8, 1)[0]))


@pytest.mark.parametrize(
    "patch",
    [
        {"amount": 1e15, "log_amount": 1e9, "to_income": 1e9},
        {"amount": 0.0, "log_amount": -5.0},
        {"amount": -10.0, "days_late": -1e9, "paid_ratio": -3.0},
        {"amount": float("nan"), "ts": float("nan"), "hour_of_week": float("nan")},
        {"amount": float("inf"), "days_late": float("inf"), "max_dpd": float("inf")},
        {"ts": 1e15, "hour_of_week": 1e6, "days_late": 1e9, "paid_ratio": 1e9},
        {"amount": "lots", "channel": 7, "country": None, "segment": 3, "debit": "yes"},
        {"ts": 0.0, "failed": 1.0, "cash": 1.0},
    ],
)
def test_scores_are_finite_on_extreme_inputs(spec: Spec, patch: dict[str, Any]) -> None:
    det = make(spec)
    xs = stream(9, 150)
    run(det, xs)
    x = {**xs[-1], **patch}
    for _ in range(3):
        assert math.isfinite(det.score_one(x))
        det.learn_one(x)
    assert math.isfinite(det.score_one(xs[0]))


def test_fresh_detector_scores_before_learning(spec: Spec) -> None:
    assert math.isfinite(make(spec).score_one(stream(10, 1)[0]))


def test_a_customer_model_of_another_version_is_replaced() -> None:
    stack = Stack()
    det = {"velocity_burst": {"_v": "old", "d": "whatever the old layout held"}}
    model = stack.model(det, "velocity_burst")
    assert model["_v"] == REGISTRY["velocity_burst"].tag
    assert "d" not in model


def test_stack_restore_survives_changed_params_and_garbage() -> None:
    stack = Stack()
    blobs = stack.save()
    changed = {
        **REGISTRY,
        "population_anomaly": REGISTRY["population_anomaly"].with_params(height=7),
    }
    restored = Stack.restore({**blobs, "default_probability": b"garbage"}, specs=changed)
    assert restored.shared["population_anomaly"].height == 7  # type: ignore[attr-defined]
    assert restored.shared["default_probability"].labels == 0  # type: ignore[attr-defined]
