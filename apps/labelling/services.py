"""Writes of similarity labels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.datasets.formats import PairRecord
from apps.datasets.models import Dataset, Item
from apps.datasets.services import ImportResult, dataset_records_save
from apps.labelling.models import Pair


class PairInput(TypedDict):
    a: str  # item key
    b: str  # item key
    score: float


def pairs_label(
    *, dataset: Dataset, pairs: Sequence[PairInput], annotator: Any, source: str = Pair.Source.MANUAL
) -> ImportResult:
    """Store ``annotator``'s scores for pairs of items (by key), all or nothing.

    Labelling a pair again replaces that annotator's earlier score. Errors (unknown key, an item paired
    with itself, a score outside [0, 1], the same pair twice) raise ``DataFormatError`` naming the entry.
    """
    records = [
        PairRecord(a=row["a"], b=row["b"], score=float(row["score"]), line=number)
        for number, row in enumerate(pairs, start=1)
    ]
    return dataset_records_save(
        slug=dataset.slug,
        records=records,
        source_name="pairs",
        pair_source=source,
        annotator=annotator,
        unit="entry",
    )


class LabelError(ValueError):
    """A label that cannot be stored; the message says why. Nothing was written."""


@dataclass(frozen=True)
class Labelled:
    pair: Pair
    previous_score: float | None  # the annotator's earlier score for this pair; None when it is new


def pair_label(
    *,
    dataset: Dataset,
    item_ids: tuple[int, int],
    score: float,
    annotator: Any,
    source: str = Pair.Source.MANUAL,
) -> Labelled:
    """Store ``annotator``'s score for one pair of items (by id, either order) of ``dataset``.

    The single-pair path of the labelling page: a few indexed queries, whatever the size of the dataset
    (``pairs_label`` reads every item and pair of the dataset to validate a batch). Labelling a pair
    again replaces the score, so a double submit stores one row. ``LabelError`` when the items are not
    two different items of ``dataset`` or the score is outside [0, 1].
    """
    a, b = sorted(int(i) for i in item_ids)
    if a == b:
        raise LabelError("a pair needs two different items")
    if not (math.isfinite(score) and 0.0 <= score <= 1.0):
        raise LabelError(f"the score {score!r} is not in [0, 1]")
    if Item.objects.filter(dataset=dataset, pk__in=(a, b)).count() != 2:
        raise LabelError(f"items {a} and {b} are not both items of dataset '{dataset.slug}'")
    with transaction.atomic():
        mine = Pair.objects.select_for_update().filter(item_a_id=a, item_b_id=b, annotator=annotator)
        pair = mine.first()
        if pair is None:
            try:
                with transaction.atomic():  # a savepoint: a concurrent twin request may insert first
                    pair = Pair.objects.create(
                        dataset=dataset,
                        item_a_id=a,
                        item_b_id=b,
                        score=score,
                        annotator=annotator,
                        source=source,
                    )
                return Labelled(pair=pair, previous_score=None)
            except IntegrityError:
                pair = mine.get()
        previous = pair.score
        pair.score, pair.source = score, source
        pair.save(update_fields=["score", "source", "updated_at"])
    return Labelled(pair=pair, previous_score=previous)


def pair_label_undo(*, dataset: Dataset, pair_id: int, annotator: Any, previous_score: float | None) -> bool:
    """Take back ``annotator``'s answer ``pair_id``: delete the pair, or restore ``previous_score`` when the
    answer replaced an earlier one. Only that annotator's own pair of ``dataset`` is touched; returns
    whether one was."""
    mine = Pair.objects.filter(pk=pair_id, dataset=dataset, annotator=annotator)
    if previous_score is None:
        return mine.delete()[0] > 0
    return mine.update(score=previous_score, updated_at=timezone.now()) > 0
