"""How unusual a transaction's feature vector is within its segment (Half-Space Trees).

One set of Half-Space Trees per segment (retail, sme, corporate...), created
on the segment's first transaction with a seed derived from ``seed`` and the
segment name, so equal seeds give equal scores whatever order segments appear
in. Only debits are scored and learned (``direction`` credit is skipped:
salaries and disbursements are not the population whose oddities matter, and
mixing them in blurs it). Features are the fixed numeric set :data:`FEATURES`, each already scaled
to [0, 1] by :func:`detectors.features.transaction_x`; values are clipped to
[0, 1] here and anything else in ``x`` is ignored. A missing feature is
handled by the trees (they follow the heavier branch).

The trees are river's ``anomaly.HalfSpaceTrees`` (Tan, Ting & Liu 2011),
re-laid on flat lists (:class:`HalfSpaceTrees`): the same random splits from
the same seed, the same masses, the same scores (a unit test checks them
against river's on one stream) at a fraction of the cost. An observation's
path is walked once: it is scored and counted on the way down
(:meth:`PopulationAnomaly.begin`), and the count is taken back in the rare case
the threshold refuses to learn it (:meth:`PopulationAnomaly.finish`).

Cost grows with ``n_trees`` and steeply with ``height``; ``bench/detectors_cost.py``
measures the cost and ``bench/detectors_eval.py --hst-sweep`` the quality of
each choice. The defaults (5 trees of height 6, window 250) come from those:
on two seeded evaluation streams (50 confirmed-fraud transactions each) ROC
AUC against fraud was 0.96 / 0.97 for 5 x 6, 0.93 / 0.94 for 5 x 4 and 0.80 /
0.85 for 3 x 4; 10 x 6 reached 0.98 / 0.99 but cost about 10 µs more per
debit, which the 100 µs budget of the whole stack does not leave.

Scores are river's: 0 during a segment's first window, then in [0, 1], high =
anomalous.

>>> det = PopulationAnomaly(seed=3, window_size=50)
>>> normal = {"segment": "retail", "log_amount": 0.3, "cash": 0.0, "night": 0.0}
>>> for i in range(300):
...     det.learn_one({**normal, "log_amount": 0.28 + 0.01 * (i % 5)})
>>> odd = {"segment": "retail", "log_amount": 0.95, "cash": 1.0, "night": 1.0}
>>> det.score_one(odd) > det.score_one(normal)
True
"""

from __future__ import annotations

import random
import zlib
from typing import Any, ClassVar

from detectors.base import Detector, Features, text

FEATURES: tuple[str, ...] = (
    "log_amount",
    "hour_sin",
    "hour_cos",
    "weekend",
    "night",
    "cash",
    "online",
    "transfer",
    "new_country",
    "new_mcc",
    "to_income",
    "risky_counterparty",
)
ORDER: tuple[str, ...] = tuple(sorted(FEATURES))
"""Feature order inside the trees: river lays its trees over the sorted feature names."""

Vector = list[float | None]


class HalfSpaceTrees:
    """river's Half-Space Trees with every tree in flat lists.

    Node ``j`` of the tree rooted at ``root`` has children ``left[j]`` (that is
    ``2j - root + 1``) and ``left[j] + 1``; leaves have feature -1. Splits are drawn exactly as
    river's ``make_padded_tree`` draws them (feature weighted by the width of
    its range, split point uniform inside the range padded by 15 %), from
    ``random.Random(seed)``, on the first :meth:`learn`. ``l_mass`` counts the
    current window, ``r_mass`` the previous one (the reference the score
    reads); they swap every ``window_size`` observations.

    A vector is a list in :data:`ORDER`, each value in [0, 1] or None (missing).
    """

    __slots__ = (
        "feature",
        "first_window",
        "height",
        "l_mass",
        "left",
        "max_score",
        "n_features",
        "n_trees",
        "r_mass",
        "rng",
        "roots",
        "size_limit",
        "threshold",
        "window",
        "window_size",
    )

    def __init__(
        self, n_features: int, *, n_trees: int, height: int, window_size: int, seed: int
    ) -> None:
        self.n_features = n_features
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.rng = random.Random(seed)
        self.size_limit = 0.1 * window_size
        self.max_score = n_trees * window_size * (2 ** (height + 1) - 1)
        self.feature: list[int] = []
        self.threshold: list[float] = []
        self.l_mass: list[int] = []
        self.left: list[int] = []
        self.r_mass: list[int] = []
        self.roots: tuple[int, ...] = ()
        self.window = 0
        self.first_window = True

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    @property
    def built(self) -> bool:
        return bool(self.roots)

    def _build(self) -> None:
        size = 2 ** (self.height + 1) - 1
        for _ in range(self.n_trees):
            feature = [-1] * size
            threshold = [0.0] * size
            limits = [(0.0, 1.0)] * self.n_features
            self._grow(limits, self.height, 0, feature, threshold)
            self.feature += feature
            self.threshold += threshold
        self.l_mass = [0] * (size * self.n_trees)
        self.r_mass = [0] * (size * self.n_trees)
        self.roots = tuple(range(0, size * self.n_trees, size))
        self.left = [root + 2 * i + 1 for root in self.roots for i in range(size)]

    def _grow(
        self,
        limits: list[tuple[float, float]],
        height: int,
        i: int,
        feature: list[int],
        threshold: list[float],
    ) -> None:
        """river's ``make_padded_tree`` (same draws, same order) into heap-indexed lists."""
        if height == 0:
            return
        rng = self.rng
        on = rng.choices(range(len(limits)), weights=[hi - lo for lo, hi in limits])[0]
        a, b = limits[on]
        at = rng.uniform(a + 0.15 * (b - a), b - 0.15 * (b - a))
        feature[i] = on
        threshold[i] = at
        limits[on] = (a, at)
        self._grow(limits, height - 1, 2 * i + 1, feature, threshold)
        limits[on] = (at, b)
        self._grow(limits, height - 1, 2 * i + 2, feature, threshold)
        limits[on] = (a, b)

    def score(self, v: Vector) -> float:
        """River's score of ``v`` (0 in the first window), changing nothing."""
        if not self.roots:
            return 0.0
        score = self.walk(v)
        self.unwalk(v)
        return score

    def learn(self, v: Vector) -> None:
        """Count ``v`` along its path in every tree; swap windows when one is full."""
        if not self.roots:
            self._build()
        self.walk(v)
        self.close()

    def walk(self, v: Vector) -> float:
        """River's score of ``v``, counting ``v`` in the current window on the way down.

        One walk serves scoring and learning: at a missing feature both go to
        the child with more mass in the current window, and a node is counted
        before its children are compared, exactly as river's ``learn_one``
        does. The score reads the previous window's masses down the path until
        one is below ``size_limit`` (river's early stop), then the leaf. Follow
        with :meth:`close` to keep the count or :meth:`unwalk` to take it back.
        """
        feat, thr, left, lm = self.feature, self.threshold, self.left, self.l_mass
        height = self.height
        scoring = not self.first_window
        rm, limit = self.r_mass, self.size_limit
        total = 0
        for j in self.roots:
            depth = 0
            if scoring:
                weight = 1
                while depth < height:
                    r = rm[j]
                    total += r * weight
                    lm[j] += 1
                    value = v[feat[j]]
                    c = left[j]
                    if value is None:
                        j = c + 1 if lm[c] < lm[c + 1] else c
                    elif value < thr[j]:
                        j = c
                    else:
                        j = c + 1
                    depth += 1
                    if r < limit:
                        break
                    weight <<= 1
                else:
                    total += rm[j] * weight
            while depth < height:
                lm[j] += 1
                value = v[feat[j]]
                c = left[j]
                if value is None:
                    j = c + 1 if lm[c] < lm[c + 1] else c
                elif value < thr[j]:
                    j = c
                else:
                    j = c + 1
                depth += 1
            lm[j] += 1
        return 1.0 - total / self.max_score if scoring else 0.0

    def unwalk(self, v: Vector) -> None:
        """Take back the count of the :meth:`walk` just made with ``v``.

        The same path comes out: at a missing feature the child taken has
        only grown heavier.
        """
        feat, thr, left, lm = self.feature, self.threshold, self.left, self.l_mass
        height = self.height
        for j in self.roots:
            for _ in range(height):
                lm[j] -= 1
                value = v[feat[j]]
                c = left[j]
                if value is None:
                    j = c + 1 if lm[c] < lm[c + 1] else c
                elif value < thr[j]:
                    j = c
                else:
                    j = c + 1
            lm[j] -= 1

    def close(self) -> None:
        """Keep the count of the last :meth:`walk`; swap windows when one is full."""
        self.window += 1
        if self.window == self.window_size:
            self.r_mass = self.l_mass
            self.l_mass = [0] * len(self.r_mass)
            self.first_window = False
            self.window = 0


class PopulationAnomaly(Detector):
    """Half-Space Trees per segment over :data:`FEATURES`."""

    name: ClassVar[str] = "population_anomaly"
    code_version: ClassVar[str] = "2"

    def __init__(
        self, *, n_trees: int = 5, height: int = 6, window_size: int = 250, seed: int = 42
    ) -> None:
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self.models: dict[str, HalfSpaceTrees] = {}

    @staticmethod
    def _vector(x: Features) -> Vector:
        """``x``'s features in :data:`ORDER`, clipped to [0, 1]; None where missing."""
        out: Vector = list(map(x.get, ORDER))
        for i, value in enumerate(out):
            if value.__class__ is float and 0.0 <= value <= 1.0:
                continue
            if isinstance(value, int | float) and value == value:  # not NaN
                out[i] = 0.0 if value < 0.0 else 1.0 if value > 1.0 else float(value)
            else:
                out[i] = None
        return out

    def _model(self, segment: str) -> HalfSpaceTrees:
        model = self.models.get(segment)
        if model is None:
            seed = self.seed + zlib.crc32(segment.encode()) % 1_000_003
            model = self.models[segment] = HalfSpaceTrees(
                len(ORDER),
                n_trees=self.n_trees,
                height=self.height,
                window_size=self.window_size,
                seed=seed,
            )
        return model

    def score_one(self, x: Features) -> float:
        model = self.models.get(text(x, "segment") or "unknown")
        if model is None or not model.roots or x.get("direction") == "credit":
            return 0.0
        return model.score(self._vector(x))

    def learn_one(self, x: Features) -> None:
        self.finish(self.begin(x)[1], True)

    def feedback(self, x: Features, label: bool) -> None:
        """A false positive: learn the observation the threshold kept out of the trees."""
        if not label and any(key in x for key in FEATURES):
            self.learn_one(x)

    def begin(self, x: Features) -> tuple[float, Any]:
        if x.get("direction") == "credit":
            return 0.0, None  # money coming in: not what this population is made of
        segment = text(x, "segment") or "unknown"
        vector = self._vector(x)
        model = self.models.get(segment)
        if model is None or not model.roots:
            return 0.0, (segment, vector, None)
        return model.walk(vector), (segment, vector, model)

    def finish(self, memo: Any, learn: bool) -> None:
        if memo is None:
            return
        segment, vector, model = memo
        if model is not None:
            # begin's walk counted the observation already: keep it, or take it back
            if learn:
                model.close()
            else:
                model.unwalk(vector)
        elif learn:
            # The segment's first observation: the trees are laid out now, and it
            # counts with every feature present (a missing one as 0).
            self._model(segment).learn([0.0 if v is None else v for v in vector])
