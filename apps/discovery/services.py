"""Recommendations, anomaly scores and kNN classification over a dataset's active model and index.

Every read goes through the dataset's index alias, so a retrain that switches the alias is seen by the
next request and never half-way. Queries given as text go through the model's frozen encoder; its
outputs are cached by content (``embed_query``). Scores follow ``simapp.vectors``: for cosine models a
hit's ``score`` is the cosine similarity, for Euclidean ones the distance; ``distance`` is always the
distance (1 - cosine, or Euclidean), which is what anomaly scores and votes use.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.db import IntegrityError, transaction
from django.db.models import Count, Q

from apps.datasets.models import Dataset, Item
from apps.datasets.options import DatasetOptions
from apps.discovery.models import AnomalyFeedback, AnomalyScore
from apps.labelling.models import Pair
from apps.training.encoding import encode_items
from apps.training.index import NoActiveModel, index_alias, model_encoder, require_active_model, vector_store
from apps.training.models import ModelVersion
from simapp.learning import SimilarityModel, VectorEncoder
from simapp.learning.anomaly import knn_scores, trimmed_knn_scores
from simapp.vectors import Filter, Hit, point_id

CALIBRATION_SAMPLE = 3000


class DiscoveryError(ValueError):
    """A request that cannot be answered as asked; the message says what to change (a 400)."""


def discovery_settings(dataset: Dataset) -> DatasetOptions:
    """The dataset's options (``Dataset.settings`` over the defaults); a bad stored value is a 400."""
    try:
        return DatasetOptions.parse(dataset.settings)
    except ValueError as exc:
        raise DiscoveryError(f"dataset '{dataset.slug}' setting {exc}") from None


def to_distance(model: SimilarityModel, score: float) -> float:
    """A hit's store score as a distance (smaller is closer)."""
    return 1.0 - score if model.distance == "cosine" else score


# -- queries ------------------------------------------------------------------------------------------------

_QUERY_CACHE_SIZE = 4096
_query_lock = threading.Lock()
_query_cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()


def embed_query(
    dataset: Dataset,
    model: SimilarityModel,
    *,
    text: str | None = None,
    vector: Sequence[float] | None = None,
) -> np.ndarray:
    """The final vector (D,) of a query text or feature vector under ``model``.

    Encoder outputs of texts are kept in a small in-memory LRU keyed by (encoder fingerprint, content
    hash), so a repeated query skips the encoder; items' texts also hit the persistent embedding cache.
    """
    encoder = model_encoder(dataset, model)
    if dataset.modality == Dataset.Modality.VECTOR or isinstance(encoder, VectorEncoder):
        if vector is None:
            raise DiscoveryError(f"dataset '{dataset.slug}' holds feature vectors: send 'vector', not text")
        values = np.asarray(vector, dtype=np.float64)
        if values.ndim != 1 or len(values) != encoder.dim:
            raise DiscoveryError(f"'vector' must have {encoder.dim} numbers, like the dataset's items")
        if not np.isfinite(values).all():
            raise DiscoveryError("'vector' must not contain NaN or infinite values")
        # Far outside the items' range, standardised values overflow the model's 32-bit floats, or the
        # index's 32-bit squared distances (from a norm of about 1.8e19): no answer would be right.
        with np.errstate(over="ignore"):  # an overflow is answered here, not warned about
            embedded = model.embed(encoder.encode([values.tolist()]))[0]
        if not np.isfinite(embedded).all() or np.linalg.norm(embedded.astype(np.float64)) > 1e18:
            raise DiscoveryError("'vector' is out of range: its values are too far from the items' to embed")
        return embedded
    if text is None:
        raise DiscoveryError(f"dataset '{dataset.slug}' holds texts: send 'text', not a vector")
    if not text.strip():
        raise DiscoveryError("'text' is empty")
    key = (encoder.fingerprint, hashlib.sha256(text.encode("utf-8")).hexdigest())
    with _query_lock:
        encoded = _query_cache.get(key)
        if encoded is not None:
            _query_cache.move_to_end(key)
    if encoded is None:
        encoded = encoder.encode([text])[0]
        with _query_lock:
            _query_cache[key] = encoded
            while len(_query_cache) > _QUERY_CACHE_SIZE:
                _query_cache.popitem(last=False)
    return model.embed(encoded[None, :])[0]


def query_cache_clear() -> None:
    with _query_lock:
        _query_cache.clear()


# -- results ------------------------------------------------------------------------------------------------


@dataclass
class Result:
    """One item in an answer: the hit, its item row and (for recommendations) why it was chosen."""

    item_id: int
    key: str
    label: str | None
    text: str
    metadata: dict[str, Any]
    score: float
    distance: float | None
    explanation: dict[str, Any] | None = None


def _results(model: SimilarityModel, hits: Sequence[Hit], *, with_distance: bool = True) -> list[Result]:
    texts = dict(Item.objects.filter(pk__in=[h.id for h in hits]).values_list("id", "text"))
    return [
        Result(
            item_id=h.id,
            key=h.payload["key"],
            label=h.payload["label"],
            text=texts.get(h.id, ""),
            metadata=h.payload["metadata"],
            score=h.score,
            distance=to_distance(model, h.score) if with_distance else None,
        )
        for h in hits
    ]


def _indexed_item(dataset: Dataset, item_id: int) -> Item:
    item = Item.objects.filter(dataset=dataset, pk=item_id).first()
    if item is None:
        raise DiscoveryError(f"dataset '{dataset.slug}' has no item {item_id}")
    return item


# -- recommendations ----------------------------------------------------------------------------------------


def item_neighbours(
    *, dataset: Dataset, item_id: int, limit: int = 10, filter: Filter | None = None
) -> tuple[ModelVersion, list[Result]]:
    """The ``limit`` items nearest to one item under the active model, the item itself left out."""
    version, model = require_active_model(dataset)
    _indexed_item(dataset, item_id)
    store, alias = vector_store(), index_alias(dataset)
    vectors = store.get_vectors(alias, [point_id(item_id)])
    if point_id(item_id) not in vectors:
        raise DiscoveryError(
            f"item {item_id} is not in the index yet (it is indexed shortly after it is added)"
        )
    hits = store.nearest(alias, vectors[point_id(item_id)], limit=limit, filter=filter, exclude_ids=[item_id])
    results = _results(model, hits)
    for r in results:
        closeness = (
            {"similarity": round(r.score, 6)}
            if model.distance == "cosine"
            else {"distance": round(r.score, 6)}
        )
        r.explanation = {"closest_example": {"item_id": item_id}} | closeness
    return version, results


@dataclass
class Examples:
    """Positive or negative examples: item ids and free texts (or feature vectors)."""

    item_ids: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    vectors: list[list[float]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.item_ids) + len(self.texts) + len(self.vectors)


def recommend(
    *,
    dataset: Dataset,
    positive: Examples,
    negative: Examples | None = None,
    strategy: str = "average_vector",
    limit: int = 10,
    filter: Filter | None = None,
) -> tuple[ModelVersion, list[Result]]:
    """Items like the positive examples and unlike the negative ones, each with the positive example it is
    closest to. Example items are left out of the results."""
    negative = negative or Examples()
    if strategy not in ("average_vector", "best_score"):
        raise DiscoveryError(f"unknown strategy '{strategy}'; valid: average_vector, best_score")
    if not len(positive) and not (strategy == "best_score" and len(negative)):
        raise DiscoveryError(
            "give at least one positive example (best_score also works from negative examples only)"
        )
    version, model = require_active_model(dataset)
    store, alias = vector_store(), index_alias(dataset)

    example_ids = positive.item_ids + negative.item_ids
    known = set(Item.objects.filter(dataset=dataset, pk__in=example_ids).values_list("id", flat=True))
    missing = [i for i in example_ids if i not in known]
    if missing:
        raise DiscoveryError(f"dataset '{dataset.slug}' has no item {missing[0]}")
    stored = store.get_vectors(alias, [point_id(i) for i in example_ids])
    unindexed = [i for i in example_ids if point_id(i) not in stored]
    if unindexed:
        raise DiscoveryError(
            f"item {unindexed[0]} is not in the index yet (it is indexed shortly after it is added)"
        )

    def vectors_of(examples: Examples) -> list[np.ndarray]:
        own = [embed_query(dataset, model, text=t) for t in examples.texts]
        own += [embed_query(dataset, model, vector=v) for v in examples.vectors]
        return own

    pos_vectors, neg_vectors = vectors_of(positive), vectors_of(negative)
    hits = store.recommend(
        alias,
        positive=[point_id(i) for i in positive.item_ids] + pos_vectors,
        negative=[point_id(i) for i in negative.item_ids] + neg_vectors,
        strategy=strategy,  # type: ignore[arg-type]
        limit=limit,
        filter=filter,
        exclude_ids=example_ids,
    )
    # best_score's score ranks but is neither a similarity nor a distance.
    results = _results(model, hits, with_distance=strategy == "average_vector")
    _explain(model, alias, results, positive, [stored[point_id(i)] for i in positive.item_ids] + pos_vectors)
    return version, results


def _explain(
    model: SimilarityModel,
    alias: str,
    results: list[Result],
    positive: Examples,
    pos_vectors: list[np.ndarray],
) -> None:
    """Attach to each result the positive example it is closest to, and how close."""
    if not results or not pos_vectors:
        return
    hit_vectors = vector_store().get_vectors(alias, [point_id(r.item_id) for r in results])
    examples: list[dict[str, Any]] = (
        [{"item_id": i} for i in positive.item_ids]
        + [{"text": t} for t in positive.texts]
        + [{"vector": i} for i in range(len(positive.vectors))]
    )
    p = np.stack(pos_vectors).astype(np.float32)  # (P, D)
    for r in results:
        v = hit_vectors.get(r.item_id)
        if v is None:
            continue
        if model.distance == "cosine":
            sims = p @ (v / max(float(np.linalg.norm(v)), 1e-12))  # (P,); stored vectors are unit length
            best = int(np.argmax(sims))
            r.explanation = {"closest_example": examples[best], "similarity": round(float(sims[best]), 6)}
        else:
            dists = np.linalg.norm(p - v, axis=1)  # (P,)
            best = int(np.argmin(dists))
            r.explanation = {"closest_example": examples[best], "distance": round(float(dists[best]), 6)}


# -- classification -----------------------------------------------------------------------------------------


@dataclass
class Classification:
    label: str  # the predicted label, or "unknown"
    unknown: bool
    calibrated: bool  # False: no threshold applies (none stored, or a label added since the retrain)
    anomaly_score: float  # mean distance to the knn_k nearest labelled items
    threshold: float | None  # above it the input is "unknown"; None when the version has no calibration
    labels: list[dict[str, Any]]  # top labels with confidences (vote shares), best first
    neighbours: list[Result]


UNKNOWN = "unknown"


def classify(
    *,
    dataset: Dataset,
    texts: Sequence[str] | None = None,
    vectors: Sequence[Sequence[float]] | None = None,
    top: int = 5,
    k: int | None = None,
) -> tuple[ModelVersion, list[Classification]]:
    """Top labels of each input by a distance-weighted vote of its ``k`` nearest labelled items.

    An input whose mean distance to its ``knn_k`` (the dataset's setting) nearest labelled items is above
    the version's calibrated threshold is "unknown"; ``k`` changes only how many neighbours vote, since
    the threshold was calibrated on that one statistic. Labelled items added since the last retrain vote
    at once (they are indexed on arrival), so a new class becomes predictable from a few examples without
    retraining; until a retrain calibrates it, its answers carry ``calibrated = False``.
    """
    version, model = require_active_model(dataset)
    config = discovery_settings(dataset)
    k = k or config.knn_k
    if texts is not None:
        queries = np.stack([embed_query(dataset, model, text=t) for t in texts]) if texts else None
    else:
        queries = (
            np.stack([embed_query(dataset, model, vector=v) for v in vectors or []]) if vectors else None
        )
    if queries is None:
        raise DiscoveryError("nothing to classify: give 'text' or 'texts' (or 'vector' for feature data)")
    store, alias = vector_store(), index_alias(dataset)
    batches = store.nearest_batch(alias, queries, limit=max(k, config.knn_k), filter=Filter(labelled=True))
    threshold = (version.metrics.get("classify") or {}).get("unknown_threshold")
    out = []
    for found in batches:
        if not found:
            raise DiscoveryError(f"dataset '{dataset.slug}' has no labelled items to classify with")
        distances = np.asarray([to_distance(model, h.score) for h in found], dtype=np.float64)
        hits = found[:k]
        weights = 1.0 / (distances[:k] + 1e-6)  # as simapp.learning.knn_predict
        votes: dict[str, float] = {}
        for h, w in zip(hits, weights, strict=True):
            votes[h.payload["label"]] = votes.get(h.payload["label"], 0.0) + float(w)
        total = sum(votes.values())
        ranked = sorted(votes.items(), key=lambda kv: -kv[1])[:top]
        score = float(distances[: config.knn_k].mean())  # the calibrated statistic, whatever k votes
        # A label added since the version was trained has no calibration: the version's threshold was
        # fitted to classes its head pulled together, and a new class's own members sit farther apart
        # than that (5 new CLINC150 items: held-out queries at 0.20-0.34 against a threshold of 0.17).
        # Its answers are given, marked uncalibrated, until the next retrain calibrates the class.
        calibrated = threshold is not None and not _label_is_new(dataset, version, ranked[0][0])
        unknown = calibrated and score > threshold
        out.append(
            Classification(
                label=UNKNOWN if unknown else ranked[0][0],
                unknown=unknown,
                calibrated=calibrated,
                anomaly_score=score,
                threshold=threshold,
                labels=[{"label": name, "confidence": round(v / total, 6)} for name, v in ranked],
                neighbours=_results(model, hits),
            )
        )
    return version, out


_new_labels: dict[tuple[int, str], bool] = {}


def _label_is_new(dataset: Dataset, version: ModelVersion, label: str) -> bool:
    """Whether the version never trained on ``label``: all its items were added or relabelled after the
    version's run started. Remembered per (version, label) once it is known not to be new."""
    key = (version.pk, label)
    if _new_labels.get(key) is False:
        return False
    started = version.run.started_at or version.created_at
    new = not Item.objects.filter(dataset=dataset, label=label, updated_at__lt=started).exists()
    with _query_lock:
        if len(_new_labels) > 100_000:
            _new_labels.clear()
        _new_labels[key] = new
    return new


def classify_calibrate(
    *,
    vectors: np.ndarray,
    labels: Sequence[str],
    distance: str,
    k: int,
    unknown_rate: float,
    holdout_scores: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The "unknown" threshold of a new version: the ``1 - unknown_rate`` quantile of in-scope scores.

    The scores are the trainer's held-out ones when it had a holdout (``holdout_scores``: items the head
    never saw, against the items it trained on, under the chosen epoch's head), so the threshold fits
    new inputs. Otherwise (identity head, tiny data) they are leave-one-out scores of a sample of the
    labelled items against the others, which run lower for a trained head: more in-scope inputs would be
    called unknown than ``unknown_rate`` says.
    """
    if holdout_scores is not None and len(holdout_scores) >= 20:
        scores, source = np.asarray(holdout_scores, dtype=np.float64), "holdout"
    else:
        labelled = np.flatnonzero(np.asarray([bool(label) for label in labels]))
        if len(labelled) < 2:
            return {}
        x = vectors[labelled]
        sample = np.random.default_rng(seed).choice(
            len(x), size=min(CALIBRATION_SAMPLE, len(x)), replace=False
        )
        # Leave-one-out: each sampled item against all other labelled items.
        scores, source = knn_scores(x, k=k, distance=distance, rows=sample), "leave-one-out"
    return {
        "k": k,
        "unknown_rate": unknown_rate,
        "unknown_threshold": float(np.quantile(scores, 1.0 - unknown_rate)),
        "calibrated_on": len(scores),
        "calibration": source,
    }


# -- anomaly scores -----------------------------------------------------------------------------------------

FEEDBACK_NEIGHBOURS = 5  # pairs a verdict adds: the item with each of its nearest neighbours


def anomaly_scores_compute(
    *, dataset: Dataset, version: ModelVersion, item_ids: Sequence[int], vectors: np.ndarray, distance: str
) -> dict[str, Any]:
    """Score every item of ``version`` (final vectors (N, D) in ``item_ids`` order) and store the scores,
    replacing any the version had. Labels and feedback shape the reference set: confirmed anomalies
    leave it; labelled items and items confirmed as normal stay in it. Returns the summary that is also kept in the version's metrics.
    """
    started = time.perf_counter()
    config = discovery_settings(dataset)
    if len(item_ids) < 2:
        return {}
    row_of = {item_id: row for row, item_id in enumerate(item_ids)}
    verdicts = _consensus(dataset)
    normal = [row_of[i] for i, v in verdicts.items() if v == AnomalyFeedback.Verdict.NORMAL and i in row_of]
    # A label says a person put the item in a known class: it is normal unless someone says otherwise.
    # Without this, the trimming takes a small class that lies apart from the others (CLINC150's
    # "plug_type", 100 items) for a group of anomalies and drops it whole from the reference set.
    labelled = Item.objects.filter(dataset=dataset).exclude(label="").values_list("id", flat=True)
    kept = [row_of[i] for i in labelled.iterator(chunk_size=10_000) if i in row_of and i not in verdicts]
    anomalous = [
        row_of[i] for i, v in verdicts.items() if v == AnomalyFeedback.Verdict.ANOMALY and i in row_of
    ]
    result = trimmed_knn_scores(
        vectors,
        k=config.anomaly_k,
        distance=distance,
        contamination=config.contamination,
        normal=normal + kept,
        anomalous=anomalous,
    )
    for attempt in (1, 2):
        # Items deleted while the scores were computed get none; a deletion racing the insert itself
        # fails its foreign key, and the second attempt leaves that item out too.
        existing = set(Item.objects.filter(dataset=dataset).values_list("id", flat=True))
        try:
            with transaction.atomic():
                AnomalyScore.objects.filter(version=version).delete()
                AnomalyScore.objects.bulk_create(
                    (
                        AnomalyScore(version=version, item_id=item_id, score=float(result.scores[row]))
                        for row, item_id in enumerate(item_ids)
                        if item_id in existing
                    ),
                    batch_size=5000,
                )
            break
        except IntegrityError:
            if attempt == 2:
                raise
    with transaction.atomic():
        summary = {
            "k": config.anomaly_k,
            "contamination": config.contamination,
            "scored": len(item_ids),
            "reference": int(result.reference.sum()),
            "feedback_normal": len(normal),
            "labelled_normal": len(kept),
            "feedback_anomaly": len(anomalous),
            "seconds": round(time.perf_counter() - started, 3),
        }
        metrics = dict(ModelVersion.objects.get(pk=version.pk).metrics)
        metrics["anomaly"] = summary
        ModelVersion.objects.filter(pk=version.pk).update(metrics=metrics)
        version.metrics = metrics
    return summary


def anomaly_rescore(*, dataset_id: int) -> dict[str, Any]:
    """Score the items of the dataset's active version again (after feedback, a settings change or items
    added since the retrain). The job behind ``POST .../anomalies/rescore/``."""
    dataset = Dataset.objects.get(pk=dataset_id)
    version, model = require_active_model(dataset)
    rows = list(
        Item.objects.filter(dataset=dataset)
        .order_by("id")
        .values_list("id", "text", "vector", "content_hash")
    )
    batch = _Rows([r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])
    encoded, _ = encode_items(model_encoder(dataset, model), batch)
    return anomaly_scores_compute(
        dataset=dataset,
        version=version,
        item_ids=[r[0] for r in rows],
        vectors=model.embed(encoded),
        distance=model.distance,
    )


@dataclass
class _Rows:
    texts: list[str]
    vectors: list[list[float] | None]
    hashes: list[str]


def _consensus(dataset: Dataset) -> dict[int, str]:
    """Each reviewed item's verdict: the majority of its reviewers, a tie counting as "normal"."""
    counts = (
        AnomalyFeedback.objects.filter(item__dataset=dataset)
        .values("item_id")
        .annotate(
            anomaly=Count("id", filter=Q(verdict=AnomalyFeedback.Verdict.ANOMALY)),
            normal=Count("id", filter=Q(verdict=AnomalyFeedback.Verdict.NORMAL)),
        )
    )
    return {
        c["item_id"]: AnomalyFeedback.Verdict.ANOMALY
        if c["anomaly"] > c["normal"]
        else AnomalyFeedback.Verdict.NORMAL
        for c in counts
    }


@dataclass
class Threshold:
    value: float | None
    source: str  # "absolute" (the dataset's anomaly_threshold) or "contamination" (its quantile)


def anomaly_threshold(dataset: Dataset, version: ModelVersion) -> Threshold:
    config = discovery_settings(dataset)
    if config.anomaly_threshold is not None:
        return Threshold(config.anomaly_threshold, "absolute")
    scores = AnomalyScore.objects.filter(version=version)
    n = scores.count()
    if n == 0:
        return Threshold(None, "contamination")
    above = int(np.floor(n * config.contamination))
    if above == 0:
        return Threshold(float(scores.order_by("-score").values_list("score", flat=True)[0]), "contamination")
    # The score of the last item inside the contamination share: items strictly above it are flagged.
    value = scores.order_by("-score").values_list("score", flat=True)[above]
    return Threshold(float(value), "contamination")


def anomaly_feedback_set(*, item: Item, user: Any, verdict: str) -> AnomalyFeedback:
    """Record (or change) ``user``'s verdict on ``item`` and replace the pairs it contributes.

    A confirmed anomaly becomes dissimilar (score 0) to its nearest neighbours; an item that is not an
    anomaly becomes similar (score 1) to its nearest neighbours that are not confirmed anomalies. Pairs need
    the active index; without one the verdict is kept and adds no pairs.
    """
    if verdict not in AnomalyFeedback.Verdict.values:
        raise DiscoveryError(
            f"unknown verdict '{verdict}'; valid: {', '.join(AnomalyFeedback.Verdict.values)}"
        )
    neighbours = _feedback_neighbours(item, verdict)
    with transaction.atomic():
        feedback = AnomalyFeedback.objects.select_for_update().filter(item=item, user=user).first()
        if feedback is not None:
            Pair.objects.filter(pk__in=feedback.pair_ids).delete()
        else:
            feedback = AnomalyFeedback(item=item, user=user)
        created: list[int] = []
        score = 0.0 if verdict == AnomalyFeedback.Verdict.ANOMALY else 1.0
        for other in neighbours:
            a, b = sorted((item.pk, other))
            if Pair.objects.filter(item_a_id=a, item_b_id=b, annotator=user).exists():
                continue  # the person's own label for this pair stands
            pair = Pair.objects.create(
                dataset_id=item.dataset_id,
                item_a_id=a,
                item_b_id=b,
                score=score,
                annotator=user,
                source=Pair.Source.FEEDBACK,
            )
            created.append(pair.pk)
        feedback.verdict = verdict
        feedback.pair_ids = created
        feedback.save()
    return feedback


def anomaly_feedback_clear(*, item: Item, user: Any) -> bool:
    """Withdraw ``user``'s verdict on ``item`` and the pairs it added; False when there was none."""
    with transaction.atomic():
        feedback = AnomalyFeedback.objects.select_for_update().filter(item=item, user=user).first()
        if feedback is None:
            return False
        Pair.objects.filter(pk__in=feedback.pair_ids).delete()
        feedback.delete()
    return True


def _feedback_neighbours(item: Item, verdict: str) -> list[int]:
    """The item's nearest neighbours in the active index (for a "normal" verdict, none that are confirmed
    anomalies); none without an active model or before the item is indexed."""
    dataset = item.dataset
    try:
        require_active_model(dataset)
    except NoActiveModel:
        return []
    store, alias = vector_store(), index_alias(dataset)
    vectors = store.get_vectors(alias, [point_id(item.pk)])
    if point_id(item.pk) not in vectors:
        return []
    exclude = [item.pk]
    if verdict == AnomalyFeedback.Verdict.NORMAL:
        exclude += [i for i, v in _consensus(dataset).items() if v == AnomalyFeedback.Verdict.ANOMALY]
    hits = store.nearest(alias, vectors[point_id(item.pk)], limit=FEEDBACK_NEIGHBOURS, exclude_ids=exclude)
    return [h.id for h in hits]


def version_calibrate(
    *,
    dataset: Dataset,
    version: ModelVersion,
    labels: Sequence[str],
    vectors: np.ndarray,
    distance: str,
    holdout_scores: np.ndarray | None = None,
) -> dict[str, Any]:
    """Store the "unknown" threshold of a new version with it (nothing for data without labels)."""
    config = discovery_settings(dataset)
    calibration = classify_calibrate(
        vectors=vectors,
        labels=labels,
        distance=distance,
        k=config.knn_k,
        unknown_rate=config.unknown_rate,
        holdout_scores=holdout_scores,
    )
    if calibration:
        metrics = dict(version.metrics)
        metrics["classify"] = calibration
        ModelVersion.objects.filter(pk=version.pk).update(metrics=metrics)
        version.metrics = metrics
    return calibration
