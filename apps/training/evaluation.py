"""Quality of the served model on a file: what ``manage.py evaluate`` prints.

Uses the dataset's **active** model and its index, as users get them:

- labelled texts (``clinc150``; ``csv``/``jsonl`` items with labels): each query is embedded and looked up
  in the index; ``knn_accuracy`` is the distance-weighted vote of the ``k`` nearest items,
  ``accuracy_at_1`` the label of the nearest one; with out-of-scope examples (clinc150's ``oos_<split>``)
  ``oos_auroc`` rates the mean distance to the ``k`` nearest items as an out-of-scope score. When the
  version has a calibrated "unknown" threshold (``metrics["classify"]``, set at each retrain of labelled
  data), ``unknown_threshold`` is that threshold, ``unknown_rate`` the share of in-scope queries that
  classification would call "unknown" (their mean distance to the dataset's ``knn_k`` nearest *labelled*
  items is above the threshold: the score ``discovery.services.classify`` uses) and, with out-of-scope
  examples, ``oos_unknown_recall`` the share of those that it flags "unknown". Without a calibration
  these three are left out.
- scored pairs (``stsb``; ``csv``/``jsonl`` pairs by text): ``spearman`` between the model's cosine
  similarity and the scores.
- outlier labels (``odds``): ``auroc`` of the mean distance of each row to its ``k`` nearest other items
  in the index (computed from the queries). When the file is the dataset's own data (every row's key is
  an item with the same content, scored by the active version), ``auroc_stored`` rates the version's
  stored anomaly scores (``discovery.AnomalyScore``: trimmed reference set, feedback applied) instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from apps.datasets.formats import ItemRecord, PairRecord, iter_clinc150, read_records, text_hash
from apps.datasets.models import Dataset
from apps.datasets.options import DatasetOptions
from apps.datasets.services import item_content_hash
from apps.discovery.models import AnomalyScore
from apps.training.encoding import encode_items
from apps.training.index import active_model, index_alias, model_encoder, vector_store
from apps.training.models import ModelVersion
from simapp.learning import auroc, knn_predict, spearman
from simapp.vectors import Filter


class EvaluationError(ValueError):
    """The file or the dataset cannot be evaluated as asked; the message says why."""


@dataclass
class _Queries:
    texts: list[str] = field(default_factory=list)
    vectors: list[list[float] | None] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    outlier: list[int] = field(default_factory=list)
    content: list[str] = field(default_factory=list)  # content hashes as items store them (odds)

    def add(
        self, *, text: str = "", vector: list[float] | None = None, key: str = "", label: str = ""
    ) -> None:
        self.texts.append(text)
        self.vectors.append(vector)
        self.hashes.append(text_hash(text))
        self.keys.append(key)
        self.labels.append(label)


def model_evaluate(
    *, dataset: Dataset, fp: IO[bytes], source: str, fmt: str, split: str | None = None, k: int = 10
) -> dict[str, Any]:
    active = active_model(dataset)
    if active is None:
        raise EvaluationError(f"dataset '{dataset.slug}' has no active model yet: train it first")
    version, model = active
    encoder = model_encoder(dataset, model)

    def embed(queries: _Queries) -> np.ndarray:
        vectors, _ = encode_items(encoder, queries)
        return model.embed(vectors)

    if fmt == "clinc150":
        if not split:
            raise EvaluationError("the clinc150 format needs --split (e.g. val)")
        queries, oos = _Queries(), _Queries()
        for row in iter_clinc150(fp, source=source, splits=(split, f"oos_{split}")):
            (oos if row.split.startswith("oos_") else queries).add(text=row.text, label=row.label)
        return {"version": version.number} | _labelled(dataset, version, embed, queries, oos, k)

    queries, pairs_a, pairs_b, scores = _Queries(), _Queries(), _Queries(), []
    texts_by_key: dict[str, ItemRecord] = {}
    for record in read_records(fp, fmt=fmt, source=source, split=split):
        if isinstance(record, ItemRecord):
            texts_by_key[record.key] = record
            if fmt == "odds":
                queries.add(vector=record.vector, key=record.key)
                queries.outlier.append(int(record.metadata.get("outlier", 0)))
                queries.content.append(item_content_hash(text=record.text, vector=record.vector))
            elif record.label:
                queries.add(text=record.text, vector=record.vector, key=record.key, label=record.label)
        elif isinstance(record, PairRecord):
            a, b = texts_by_key.get(record.a), texts_by_key.get(record.b)
            if a is None or b is None:
                raise EvaluationError(
                    f"{source}: line {record.line}: pairs are evaluated by text; give text_a and text_b"
                )
            pairs_a.add(text=a.text, vector=a.vector)
            pairs_b.add(text=b.text, vector=b.vector)
            scores.append(record.score)
    if fmt == "odds":
        return {"version": version.number} | _outliers(dataset, version, embed, queries, k)
    if scores:
        left, right = embed(pairs_a), embed(pairs_b)
        if model.distance == "cosine":
            similarity = np.sum(left * right, axis=1)  # normalised: dot = cosine
        else:
            similarity = -np.linalg.norm(left - right, axis=1)
        return {
            "version": version.number,
            "n": len(scores),
            "spearman": spearman(similarity, np.asarray(scores)),
        }
    if queries.labels:
        return {"version": version.number} | _labelled(dataset, version, embed, queries, _Queries(), k)
    raise EvaluationError(
        f"{source}: nothing to evaluate (no labelled items, scored pairs or outlier labels)"
    )


def _labelled(
    dataset: Dataset, version: ModelVersion, embed: Any, queries: _Queries, oos: _Queries, k: int
) -> dict[str, Any]:
    store, alias = vector_store(), index_alias(dataset)
    to_distance = _as_distance(store, alias)
    vectors = embed(queries)
    hits = store.nearest_batch(alias, vectors, limit=k)
    labels = np.asarray([[h.payload["label"] or "" for h in row] for row in hits], dtype=object)  # (Q, K)
    distances = np.asarray([[to_distance(h.score) for h in row] for row in hits])  # (Q, K)
    truth = np.asarray(queries.labels, dtype=object)
    metrics: dict[str, Any] = {
        "n": len(queries.labels),
        "knn_accuracy": float(np.mean(knn_predict(labels, distances) == truth)),
        "accuracy_at_1": float(np.mean(labels[:, 0] == truth)),
    }
    oos_vectors = embed(oos) if oos.texts else None
    if oos_vectors is not None:
        oos_hits = store.nearest_batch(alias, oos_vectors, limit=k)
        oos_distances = np.asarray([[to_distance(h.score) for h in row] for row in oos_hits])
        scores = np.concatenate([distances.mean(axis=1), oos_distances.mean(axis=1)])
        flags = np.concatenate([np.zeros(len(distances)), np.ones(len(oos_distances))])
        metrics["n_oos"] = len(oos.texts)
        metrics["oos_auroc"] = auroc(scores, flags)
    threshold = (version.metrics.get("classify") or {}).get("unknown_threshold")
    if threshold is not None:
        # As classification decides "unknown": the mean distance to the dataset's knn_k nearest labelled
        # items against the version's calibrated threshold (k follows the dataset's setting, as served).
        try:
            classify_k = DatasetOptions.parse(dataset.settings).knn_k
        except ValueError as exc:
            raise EvaluationError(f"dataset '{dataset.slug}' setting {exc}") from None

        def unknown(vectors: np.ndarray) -> np.ndarray:
            rows = store.nearest_batch(alias, vectors, limit=classify_k, filter=Filter(labelled=True))
            # No labelled item at all (deleted since the calibration): nothing to vote, so unknown.
            scores = np.asarray(
                [np.mean([to_distance(h.score) for h in row]) if row else np.inf for row in rows]
            )
            return scores > threshold

        metrics["unknown_threshold"] = float(threshold)
        metrics["unknown_rate"] = float(np.mean(unknown(vectors)))
        if oos_vectors is not None:
            metrics["oos_unknown_recall"] = float(np.mean(unknown(oos_vectors)))
    return metrics


def _outliers(
    dataset: Dataset, version: ModelVersion, embed: Any, queries: _Queries, k: int
) -> dict[str, Any]:
    if not queries.outlier or len(set(queries.outlier)) < 2:
        raise EvaluationError("odds evaluation needs y with both outliers (1) and inliers (0)")
    store, alias = vector_store(), index_alias(dataset)
    to_distance = _as_distance(store, alias)
    rows = store.nearest_batch(alias, embed(queries), limit=k + 1)
    scores = []
    for key, row in zip(queries.keys, rows, strict=True):
        # The row itself is in the index under its key: leave it out, keep k others.
        others = [h for h in row if h.payload["key"] != key][:k]
        scores.append(np.mean([to_distance(h.score) for h in others]))
    outlier = np.asarray(queries.outlier)
    metrics: dict[str, Any] = {"n": len(scores), "auroc": auroc(np.asarray(scores), outlier)}
    stored = _stored_scores(version, queries)
    if stored is not None:
        metrics["auroc_stored"] = auroc(stored, outlier)
    return metrics


def _stored_scores(version: ModelVersion, queries: _Queries) -> np.ndarray | None:
    """The version's stored anomaly score of each query row, or None unless every row is an item of the
    dataset under its key, with the same content, and scored by the version."""
    stored = {
        key: (content, score)
        for key, content, score in AnomalyScore.objects.filter(version=version).values_list(
            "item__key", "item__content_hash", "score"
        )
    }
    scores = np.empty(len(queries.keys), dtype=np.float64)
    for row, (key, content) in enumerate(zip(queries.keys, queries.content, strict=True)):
        found = stored.get(key)
        if found is None or found[0] != content:
            return None
        scores[row] = found[1]
    return scores


def _as_distance(store: Any, alias: str) -> Any:
    """The store's score as a distance: 1 - cosine for cosine collections, the L2 distance for euclid."""
    if store.info(alias).distance == "cosine":
        return lambda score: 1.0 - score
    return lambda score: score
