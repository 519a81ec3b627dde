"""The customer's risk score (0-1000, higher is riskier) and tier.

Every point comes from a named component so an analyst can see why a customer
sits where they do; the components are returned with the total and kept in the
state's ``features``.

Components (each kept by name in ``features.score_components``):
- ``delinquency``: by the DPD bucket of the worst loan: 1-7 days 150, 8-29
  days 200, 30-59 days 300, 60-89 days 450, 90-180 days 600, over 180 days
  700. Buckets rather than a slope keep the score constant between the DPD
  marks the engine fires at, so a score (and a tier) only moves at an exact,
  reproducible instant.
- ``repayment_behaviour``: 75 per failed collection in the current unbroken
  run of failures on any loan (capped at 225), plus 100 when fewer than half
  and 50 when fewer than four in five of the last settled instalments were
  paid on time, plus 50 for two or more partial payments.
- ``income``: 150 while the primary income is later than its grace period,
  100 after a sharp cut of it.
- ``transaction_behaviour``: 150 when loan money was diverted to securities,
  real estate, gambling or crypto over the alert share.
- ``detectors``: the anomaly detectors' contribution; 0 until they report.
- ``rule_hits``: 10 per warning open on the customer's loans, capped at 100.
- ``contagion``: 200 while a guarantor or group member is in default.
- ``classification``: a floor for the worst loan class (substandard 600,
  doubtful 800, loss 950), so a restructured or written-off loan weighs even
  without arrears.
- ``default``: a floor of 800 once the customer has a recorded default.
The total is the sum of the additive components, raised to the largest floor
and capped at 1000. Every input changes only when an event is applied or a
DPD mark is crossed, never by the mere passing of time between them.

>>> from config.settings import TierSettings
>>> tier_for(0, TierSettings()), tier_for(300, TierSettings()), tier_for(600, TierSettings())
('premium', 'medium', 'high')
"""

from __future__ import annotations

from config.settings import TierSettings

DELINQUENCY_POINTS: tuple[tuple[int, int], ...] = (
    (1, 150),
    (8, 200),
    (30, 300),
    (60, 450),
    (90, 600),
    (181, 700),
)
CLASS_FLOOR: dict[str, int] = {"substandard": 600, "doubtful": 800, "loss": 950}
DEFAULT_FLOOR = 800


def score_components(
    *,
    max_dpd: int,
    loan_class: str,
    failed_streak: int,
    defaulted: bool,
    on_time_ratio: float | None = None,
    partial_payments: int = 0,
    income_late: bool = False,
    income_dropped: bool = False,
    diverted: bool = False,
    open_alerts: int = 0,
    contagion: bool = False,
    detectors: int = 0,
) -> dict[str, int]:
    """The named contributions that make up the score."""
    behaviour = min(225, 75 * failed_streak)
    if on_time_ratio is not None:
        behaviour += 100 if on_time_ratio < 0.5 else 50 if on_time_ratio < 0.8 else 0
    behaviour += 50 if partial_payments >= 2 else 0
    return {
        "delinquency": delinquency_points(max_dpd),
        "repayment_behaviour": behaviour,
        "income": (150 if income_late else 0) + (100 if income_dropped else 0),
        "transaction_behaviour": 150 if diverted else 0,
        "detectors": detectors,
        "rule_hits": min(100, 10 * open_alerts),
        "contagion": 200 if contagion else 0,
        "classification": CLASS_FLOOR.get(loan_class, 0),
        "default": DEFAULT_FLOOR if defaulted else 0,
    }


FLOORS = ("classification", "default")


def score_total(
    max_dpd: int,
    loan_class: str,
    failed_streak: int,
    defaulted: bool,
    on_time_ratio: float | None,
    partial_payments: int,
    income_late: bool,
    income_dropped: bool,
    diverted: bool,
    open_alerts: int,
    contagion: bool,
    detectors: int,
) -> int:
    """``total_score(score_components(...))`` without building the components.

    The engine recomputes the score after every event and on every day a loan
    ages, where only the total is kept; the arguments are those of
    :func:`score_components`, positional, and the additive parts are summed in
    the order :func:`total_score` sums them.

    >>> args = dict(max_dpd=45, loan_class="special_mention", failed_streak=2,
    ...             defaulted=False, on_time_ratio=0.6, partial_payments=3,
    ...             income_late=True, income_dropped=False, diverted=False,
    ...             open_alerts=4, contagion=False, detectors=30)
    >>> score_total(*args.values()) == total_score(score_components(**args))
    True
    """
    behaviour = min(225, 75 * failed_streak)
    if on_time_ratio is not None:
        behaviour += 100 if on_time_ratio < 0.5 else 50 if on_time_ratio < 0.8 else 0
    behaviour += 50 if partial_payments >= 2 else 0
    additive = (
        0
        + delinquency_points(max_dpd)
        + behaviour
        + ((150 if income_late else 0) + (100 if income_dropped else 0))
        + (150 if diverted else 0)
        + detectors
        + min(100, 10 * open_alerts)
        + (200 if contagion else 0)
    )
    floor = max(CLASS_FLOOR.get(loan_class, 0), DEFAULT_FLOOR if defaulted else 0)
    return min(1000, max(additive, floor))


def delinquency_points(max_dpd: int) -> int:
    """Points for the worst loan's DPD bucket.

    >>> [delinquency_points(d) for d in (0, 1, 8, 30, 60, 90, 181)]
    [0, 150, 200, 300, 450, 600, 700]
    """
    points = 0
    for start, value in DELINQUENCY_POINTS:
        if max_dpd >= start:
            points = value
    return points


def total_score(components: dict[str, int]) -> int:
    """Additive parts summed, raised to the floors, capped at 1000.

    >>> total_score({"delinquency": 300, "repayment_behaviour": 75,
    ...              "classification": 0, "default": 0})
    375
    """
    additive = sum(v for k, v in components.items() if k not in FLOORS)
    floor = max(components.get(k, 0) for k in FLOORS)
    return min(1000, max(additive, floor))


def tier_for(score: int, tiers: TierSettings) -> str:
    """The tier a score falls in."""
    if score <= tiers.premium_max:
        return "premium"
    if score <= tiers.low_max:
        return "low"
    if score <= tiers.medium_max:
        return "medium"
    return "high"
