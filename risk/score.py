"""The customer's risk score (0-1000, higher is riskier) and tier.

Every point comes from a named component so an analyst can see why a customer
sits where they do; the components are returned with the total and kept in the
state's ``features``.

Components:
- ``delinquency``: by the DPD bucket of the worst loan: 1-7 days 150, 8-29
  days 200, 30-59 days 300, 60-89 days 450, 90-180 days 600, over 180 days
  700. Buckets rather than a slope keep the score constant between the DPD
  marks the engine fires at, so a score (and a tier) only moves at an exact,
  reproducible instant.
- ``classification``: a floor for the worst loan class (substandard 600,
  doubtful 800, loss 950), so a restructured or written-off loan weighs even
  without arrears.
- ``failed_collections``: 75 per failed collection in the current unbroken
  run of failures on any loan, capped at 225.
- ``default``: 800 once the customer has a recorded default.
The total is the sum of the additive components, raised to the largest floor
and capped at 1000.

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
    *, max_dpd: int, loan_class: str, failed_streak: int, defaulted: bool
) -> dict[str, int]:
    """The named contributions that make up the score."""
    return {
        "delinquency": delinquency_points(max_dpd),
        "failed_collections": min(225, 75 * failed_streak),
        "classification": CLASS_FLOOR.get(loan_class, 0),
        "default": DEFAULT_FLOOR if defaulted else 0,
    }


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

    >>> total_score({"delinquency": 300, "failed_collections": 75,
    ...              "classification": 0, "default": 0})
    375
    """
    additive = components["delinquency"] + components["failed_collections"]
    floor = max(components["classification"], components["default"])
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
