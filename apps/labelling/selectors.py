"""Reads about similarity-labelled pairs."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Q, QuerySet

from apps.datasets.models import Dataset
from apps.labelling.agreement import Alpha, MeanKappa, krippendorff_alpha_interval, mean_pairwise_kappa
from apps.labelling.models import Pair
from apps.labelling.options import LabellingOptions


def pair_list(
    *, dataset: Dataset, annotator: str | None = None, source: str | None = None, key: str | None = None
) -> QuerySet[Pair]:
    """Pairs of ``dataset``; ``key`` keeps pairs with that item at either end."""
    pairs = Pair.objects.filter(dataset=dataset).select_related("item_a", "item_b", "annotator")
    if annotator is not None:
        pairs = pairs.filter(annotator__username=annotator)
    if source is not None:
        pairs = pairs.filter(source=source)
    if key is not None:
        pairs = pairs.filter(Q(item_a__key=key) | Q(item_b__key=key))
    return pairs.order_by("id")


def pair_count(*, dataset: Dataset, annotator: Any) -> int:
    """How many pairs of ``dataset`` ``annotator`` has labelled."""
    return Pair.objects.filter(dataset=dataset, annotator=annotator).count()


def annotator_counts(*, dataset: Dataset, limit: int = 20) -> list[tuple[str, int]]:
    """(username, pairs labelled) of the dataset's annotators, most first; imported pairs without an
    annotator are not counted."""
    rows = (
        Pair.objects.filter(dataset=dataset, annotator__isnull=False)
        .values("annotator__username")
        .annotate(n=Count("id"))
        .order_by("-n", "annotator__username")[:limit]
    )
    return [(row["annotator__username"], row["n"]) for row in rows]


@dataclass(frozen=True)
class Agreement:
    """How far the dataset's annotators agree, by the statistic that fits its ``label_mode``."""

    statistic: str  # "cohen_kappa" (binary labels) or "krippendorff_alpha" (graded, interval metric)
    value: float
    pairs: int  # labelled pairs it is computed on: those with two or more annotators
    annotators: int  # annotators with a rating among those pairs

    @property
    def name(self) -> str:
        return "Cohen's kappa" if self.statistic == "cohen_kappa" else "Krippendorff's alpha (interval)"


def agreement(dataset: Dataset, *, label_mode: str | None = None) -> Agreement | None:
    """Agreement between the annotators of ``dataset``, or None when too few pairs overlap.

    Binary labels (``label_mode`` "binary", the default): Cohen's kappa over the pairs that two annotators
    both labelled, a score of 0.5 or more counting as "similar"; with more than two annotators, the mean
    kappa of every two who share at least two pairs. Graded labels: Krippendorff's alpha with the interval
    metric over every pair with two or more annotators. Pairs without an annotator (imports) do not
    count. ``label_mode`` defaults to the dataset's setting. See ``apps.labelling.agreement``.
    """
    mode = label_mode or LabellingOptions.of(dataset).label_mode
    shared = (
        Pair.objects.filter(dataset=dataset, annotator__isnull=False)
        .values("item_a_id", "item_b_id")
        .annotate(n=Count("id"))
        .filter(n__gte=2)
    )
    rows = Pair.objects.filter(
        dataset=dataset,
        annotator__isnull=False,
        item_a_id__in=shared.values("item_a_id"),
    ).values_list("item_a_id", "item_b_id", "annotator_id", "score")
    units: dict[tuple[int, int], dict[int, float]] = defaultdict(dict)
    for a, b, annotator, score in rows:
        units[(a, b)][annotator] = score
    overlapping = [unit for unit in units.values() if len(unit) >= 2]
    found: Alpha | MeanKappa | None
    if mode == "graded":
        statistic, found = "krippendorff_alpha", krippendorff_alpha_interval(overlapping)
    else:
        binary = [{a: s >= 0.5 for a, s in unit.items()} for unit in overlapping]
        statistic, found = "cohen_kappa", mean_pairwise_kappa(binary)
    if found is None:
        return None
    return Agreement(
        statistic=statistic,
        value=found.value,
        pairs=found.units,
        annotators=len({a for unit in overlapping for a in unit}),
    )
