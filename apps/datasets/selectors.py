"""Reads about datasets and items."""

from __future__ import annotations

import json
import math
import re
from typing import TypedDict

from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Coalesce

from apps.datasets.models import Dataset, Item
from apps.labelling.models import Pair

_FIELD_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


class DatasetStats(TypedDict):
    items: int
    pairs: int
    labels: int
    active_version: int | None


def _count(model: type[Item] | type[Pair], *, distinct_labels: bool = False) -> Coalesce:
    rows = model.objects.filter(dataset=OuterRef("pk"))
    if distinct_labels:
        rows = rows.exclude(label="")
        counted = rows.order_by().values("dataset").annotate(n=Count("label", distinct=True)).values("n")
    else:
        counted = rows.order_by().values("dataset").annotate(n=Count("id")).values("n")
    # Subqueries, not joins: joining items and pairs at once would multiply the counts.
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def dataset_list() -> QuerySet[Dataset]:
    """All datasets with ``item_count``, ``pair_count`` and ``label_count`` annotated."""
    return Dataset.objects.annotate(
        item_count=_count(Item), pair_count=_count(Pair), label_count=_count(Item, distinct_labels=True)
    ).order_by("slug")


def dataset_get(*, slug: str) -> Dataset | None:
    return dataset_list().filter(slug=slug).first()


def dataset_stats(*, dataset: Dataset) -> DatasetStats:
    return DatasetStats(
        items=Item.objects.filter(dataset=dataset).count(),
        pairs=Pair.objects.filter(dataset=dataset).count(),
        labels=Item.objects.filter(dataset=dataset).exclude(label="").values("label").distinct().count(),
        # The number of the model version that serves the dataset (the training app's ModelVersion).
        active_version=dataset.model_versions.filter(is_active=True).values_list("number", flat=True).first(),
    )


def dataset_label_counts(*, dataset: Dataset, limit: int = 50) -> list[tuple[str, int]]:
    rows = (
        Item.objects.filter(dataset=dataset)
        .exclude(label="")
        .values("label")
        .annotate(n=Count("id"))
        .order_by("-n", "label")[:limit]
    )
    return [(row["label"], row["n"]) for row in rows]


class InvalidFilter(ValueError):
    pass


def _json_scalar(raw: str) -> bool | int | float | None:
    """The JSON boolean or number ``raw`` spells, else None. Not NaN or infinity (which Python's json reads,
    and 1e400 overflows to): no stored JSON value holds them, and PostgreSQL refuses them in a query."""
    try:
        parsed = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return None
    if isinstance(parsed, bool | int) or (isinstance(parsed, float) and math.isfinite(parsed)):
        return parsed
    return None


def item_list(
    *, dataset: Dataset, label: str | None = None, metadata: dict[str, str] | None = None, search: str = ""
) -> QuerySet[Item]:
    """Items of ``dataset``, filtered by exact label, metadata field equality and a text search.

    Metadata values come from query strings, so ``"3"`` matches both the string "3" and the number 3.
    """
    items = Item.objects.filter(dataset=dataset)
    if label is not None:
        items = items.filter(label=label)
    for number, (name, raw) in enumerate((metadata or {}).items()):
        # "__" would let a query string reach Django lookups (e.g. "n__gt"): field names only.
        if not _FIELD_NAME.match(name) or "__" in name:
            raise InvalidFilter(
                f"metadata field '{name}' may use letters, digits, '_' and '-' only (no '__')"
            )
        # An explicit key, not "metadata__<name>": Django reads a name such as "contains", "in" or
        # "isnull" there as a lookup on the whole field, not as a key.
        field = f"metadata_filter_{number}"
        items = items.alias(**{field: KeyTransform(name, "metadata")})
        condition = Q(**{field: raw})
        parsed = _json_scalar(raw)
        if parsed is not None:
            condition |= Q(**{field: parsed})
        items = items.filter(condition)
    if search:
        items = items.filter(Q(text__icontains=search) | Q(key__icontains=search))
    return items.order_by("id")
