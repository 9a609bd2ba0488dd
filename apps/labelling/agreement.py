"""Inter-annotator agreement statistics, in plain Python (no Django): Cohen's kappa and Krippendorff's alpha.

A *unit* is one labelled pair of items; its *ratings* map an annotator to the score that annotator gave.
``apps.labelling.selectors.agreement`` reads the units of a dataset and picks the statistic.

- Binary labels: **Cohen's kappa** between two annotators over the units both rated,
  ``(p_o - p_e) / (1 - p_e)``; with more than two annotators, the mean of the kappas of every two
  annotators who share enough units (Light's kappa). Scores are categories: similar when >= 0.5.
- Graded labels: **Krippendorff's alpha with the interval metric**, ``1 - D_o / D_e``, over every unit
  with at least two ratings (any number of annotators, missing ratings allowed), from Krippendorff (2011),
  "Computing Krippendorff's Alpha-Reliability".

Each returns ``None`` where the statistic is undefined: too few shared units, or no variation at all
(every rating the same, so chance agreement is already perfect).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

MIN_UNITS = 2  # shared units below which no agreement is reported

Ratings = Mapping[Hashable, float]  # annotator -> score of one unit


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two annotators' categories for the same units, in order; None if undefined."""
    if len(first) != len(second):
        raise ValueError(f"{len(first)} and {len(second)} ratings: both annotators must rate the same units")
    n = len(first)
    if n < MIN_UNITS:
        return None
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    categories = set(first) | set(second)
    expected = sum((first.count(c) / n) * (second.count(c) / n) for c in categories)
    if expected >= 1.0:  # both gave one and the same category throughout: chance explains everything
        return None
    return (observed - expected) / (1.0 - expected)


@dataclass(frozen=True)
class MeanKappa:
    value: float
    units: int  # units rated by at least two annotators of the pairs that count
    annotator_pairs: int  # pairs of annotators whose kappa is averaged


def mean_pairwise_kappa(units: Sequence[Mapping[Hashable, Hashable]]) -> MeanKappa | None:
    """The mean Cohen's kappa over every two annotators who rated at least ``MIN_UNITS`` units in common.

    ``units``: for each unit, annotator -> category. With two annotators this is their Cohen's kappa.
    """
    annotators = sorted({a for unit in units for a in unit}, key=str)
    kappas: list[float] = []
    counted: set[int] = set()
    for u, v in combinations(annotators, 2):
        shared = [i for i, unit in enumerate(units) if u in unit and v in unit]
        kappa = cohen_kappa([units[i][u] for i in shared], [units[i][v] for i in shared])
        if kappa is not None:
            kappas.append(kappa)
            counted.update(shared)
    if not kappas:
        return None
    return MeanKappa(value=sum(kappas) / len(kappas), units=len(counted), annotator_pairs=len(kappas))


@dataclass(frozen=True)
class Alpha:
    value: float
    units: int  # units with at least two ratings (the pairable ones)


def krippendorff_alpha_interval(units: Sequence[Ratings]) -> Alpha | None:
    """Krippendorff's alpha, interval metric ``(v - v')^2``, over the units with two or more ratings.

    ``alpha = 1 - (n - 1) * sum_u [sum_{i != j in u} (v_i - v_j)^2 / (m_u - 1)] / sum_{i != j} (v_i - v_j)^2``
    where ``n`` is the number of pairable ratings and the last sum runs over all of them.
    """
    pairable = [list(unit.values()) for unit in units if len(unit) >= 2]
    if len(pairable) < MIN_UNITS:
        return None
    values = [v for unit in pairable for v in unit]
    n = len(values)
    observed = sum(_squared_differences(unit) / (len(unit) - 1) for unit in pairable)
    expected = _squared_differences(values)
    if expected <= 1e-12:  # no variation at all
        return None
    return Alpha(value=1.0 - (n - 1) * observed / expected, units=len(pairable))


def _squared_differences(values: Sequence[float]) -> float:
    """``sum over ordered pairs i != j of (v_i - v_j)^2`` in O(m): ``2 m sum (v - mean)^2``."""
    mean = sum(values) / len(values)
    return 2.0 * len(values) * sum((v - mean) ** 2 for v in values)
