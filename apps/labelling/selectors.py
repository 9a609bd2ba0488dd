"""Reads about similarity-labelled pairs."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from apps.datasets.models import Dataset
from apps.labelling.models import Pair


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
