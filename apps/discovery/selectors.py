"""Reads of anomaly scores and feedback, shaped for the API and the dashboard."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db.models import Count, Exists, F, OuterRef, Q

from apps.datasets.models import Dataset, Item
from apps.discovery.models import AnomalyFeedback, AnomalyScore
from apps.training.models import ModelVersion


@dataclass
class Page:
    count: int
    results: list[dict[str, Any]]


def _item(item: Item) -> dict[str, Any]:
    return {
        "id": item.pk,
        "key": item.key,
        "label": item.label or None,
        "text": item.text,
        "metadata": item.metadata,
    }


def anomaly_list(
    *,
    dataset: Dataset,
    version: ModelVersion,
    user: Any,
    verdict: str = "any",
    above: float | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Page:
    """Scored items of ``version``, highest score first, with each one's rank (1 = most anomalous), the
    verdict counts and the requesting user's own verdict. ``verdict``: any, unreviewed, or the majority
    verdict (anomaly / normal, a tie counting as normal). ``above``: only scores above this threshold."""
    scores = AnomalyScore.objects.filter(version=version).select_related("item")
    scores = scores.annotate(
        n_anomaly=Count("item__anomaly_feedback", filter=Q(item__anomaly_feedback__verdict="anomaly")),
        n_normal=Count("item__anomaly_feedback", filter=Q(item__anomaly_feedback__verdict="normal")),
    )
    if verdict == "unreviewed":
        scores = scores.filter(~Exists(AnomalyFeedback.objects.filter(item=OuterRef("item"))))
    elif verdict == "anomaly":
        scores = scores.filter(n_anomaly__gt=F("n_normal"))
    elif verdict == "normal":
        scores = scores.filter(n_normal__gt=0, n_normal__gte=F("n_anomaly"))
    if above is not None:
        scores = scores.filter(score__gt=above)
    scores = scores.order_by("-score", "item_id")
    count = scores.count()
    page = list(scores[offset : offset + limit])
    mine = dict(
        AnomalyFeedback.objects.filter(user=user, item_id__in=[s.item_id for s in page]).values_list(
            "item_id", "verdict"
        )
    )
    results = []
    for s in page:
        results.append(
            {
                "item": _item(s.item),
                "score": round(s.score, 6),
                "rank": AnomalyScore.objects.filter(version=version, score__gt=s.score).count() + 1,
                "feedback": {"anomaly": s.n_anomaly, "normal": s.n_normal},
                "my_verdict": mine.get(s.item_id),
            }
        )
    return Page(count, results)


def anomaly_count_above(*, version: ModelVersion, threshold: float | None) -> int | None:
    if threshold is None:
        return None
    return AnomalyScore.objects.filter(version=version, score__gt=threshold).count()


def anomaly_histogram(*, version: ModelVersion, bins: int = 30) -> dict[str, Any]:
    """Equal-width bins over the version's scores: ``{"n", "min", "max", "bins": [{"lo", "hi", "count"}]}``."""
    scores = np.fromiter(
        AnomalyScore.objects.filter(version=version).values_list("score", flat=True), dtype=np.float64
    )
    if scores.size == 0:
        return {"n": 0, "min": None, "max": None, "bins": []}
    counts, edges = np.histogram(scores, bins=bins)
    return {
        "n": int(scores.size),
        "min": float(scores.min()),
        "max": float(scores.max()),
        "bins": [
            {"lo": float(edges[i]), "hi": float(edges[i + 1]), "count": int(c)} for i, c in enumerate(counts)
        ],
    }


def anomaly_item(*, version: ModelVersion, item: Item, user: Any) -> dict[str, Any]:
    """One item's score and rank under ``version`` (None when it was added after the scoring) and its
    feedback: everyone's verdicts and the requesting user's."""
    row = AnomalyScore.objects.filter(version=version, item=item).first()
    feedback = list(AnomalyFeedback.objects.filter(item=item).select_related("user").order_by("-updated_at"))
    return {
        "item": _item(item),
        "score": None if row is None else round(row.score, 6),
        "rank": None
        if row is None
        else AnomalyScore.objects.filter(version=version, score__gt=row.score).count() + 1,
        "scored": AnomalyScore.objects.filter(version=version).count(),
        "feedback": [
            {"user": f.user.get_username(), "verdict": f.verdict, "updated_at": f.updated_at.isoformat()}
            for f in feedback
        ],
        "my_verdict": next((f.verdict for f in feedback if f.user_id == getattr(user, "pk", None)), None),
    }


@dataclass
class MetadataField:
    name: str
    kind: str  # "number" (filtered by min / max), "bool" or "text" (filtered by equality)


def metadata_fields(*, dataset: Dataset, sample: int = 500, limit: int = 12) -> list[MetadataField]:
    """The filterable metadata fields of ``dataset``'s items, by name, from a sample of its first items.

    A field is a number when every sampled value is one (booleans are not), a boolean when every value is
    one, else text; fields holding lists or objects are left out (the index cannot match them).
    """
    kinds: dict[str, set[str]] = {}
    for metadata in (
        Item.objects.filter(dataset=dataset).order_by("id").values_list("metadata", flat=True)[:sample]
    ):
        for name, value in (metadata or {}).items():
            if isinstance(value, bool):
                kind = "bool"
            elif isinstance(value, int | float):
                kind = "number"
            elif isinstance(value, str):
                kind = "text"
            else:
                kind = "other"
            kinds.setdefault(name, set()).add(kind)
    fields = []
    for name in sorted(kinds):
        found = kinds[name]
        if "other" in found:
            continue
        fields.append(MetadataField(name, found.pop() if len(found) == 1 else "text"))
    return fields[:limit]
