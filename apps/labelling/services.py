"""Writes of similarity labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

from apps.datasets.formats import PairRecord
from apps.datasets.models import Dataset
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
