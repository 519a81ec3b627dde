"""The five-category loan classification (normal to loss) driven by DPD bands.

Bands are configuration (``ClassificationSettings``); qualitative overrides
sit on top: a written-off loan is ``loss`` whatever its DPD, and a
restructured loan is at least ``substandard``.

>>> from config.settings import ClassificationSettings
>>> bands = ClassificationSettings()
>>> [class_for_dpd(d, bands) for d in (0, 1, 90, 91, 181, 361)]
['normal', 'special_mention', 'special_mention', 'substandard', 'doubtful', 'loss']
>>> class_boundaries(bands)
(1, 91, 181, 361)
"""

from __future__ import annotations

from config.settings import ClassificationSettings

CLASSES: tuple[str, ...] = ("normal", "special_mention", "substandard", "doubtful", "loss")
RANK: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}


def class_for_dpd(dpd: int, bands: ClassificationSettings) -> str:
    """The class a loan's DPD alone puts it in."""
    if dpd <= bands.normal_max_dpd:
        return "normal"
    if dpd <= bands.special_mention_max_dpd:
        return "special_mention"
    if dpd <= bands.substandard_max_dpd:
        return "substandard"
    if dpd <= bands.doubtful_max_dpd:
        return "doubtful"
    return "loss"


def class_boundaries(bands: ClassificationSettings) -> tuple[int, ...]:
    """The DPD values at which the class steps up: where migrations can happen."""
    return (
        bands.normal_max_dpd + 1,
        bands.special_mention_max_dpd + 1,
        bands.substandard_max_dpd + 1,
        bands.doubtful_max_dpd + 1,
    )


def loan_class(
    dpd: int, bands: ClassificationSettings, *, written_off: bool, restructured: bool
) -> str:
    """DPD class with the qualitative overrides applied."""
    if written_off:
        return "loss"
    base = class_for_dpd(dpd, bands)
    if restructured and RANK[base] < RANK["substandard"]:
        return "substandard"
    return base


def worst(classes: list[str]) -> str:
    """The worst class of a customer's loans (``normal`` when there are none)."""
    return max(classes, key=RANK.__getitem__, default="normal")
