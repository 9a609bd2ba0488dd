"""From items to encoder outputs: the dataset's encoder and the persistent embedding cache.

Text encoders are loaded once per process and shared (they are frozen, so sharing is safe). Text goes
through ``simapp.learning.EmbeddingCache`` keyed by the item's content hash, so a retrain encodes only
new or changed items and a query text seen before costs nothing. Numeric features are only
standardised, which is cheaper than a cache lookup, so they skip it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from django.conf import settings

from apps.datasets.models import Dataset
from simapp.learning import EmbeddingCache, Encoder, VectorEncoder, create_encoder

_ENCODE_BATCH = 1024
_lock = threading.Lock()
_encoders: dict[str, Encoder] = {}
_caches: dict[str, EmbeddingCache] = {}
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class EncodableRows(Protocol):
    texts: list[str]
    vectors: list[list[float] | None]
    hashes: list[str]


def reset_caches() -> None:
    """Forget the open embedding caches (their directory follows ``DATA_DIR``); encoders stay loaded."""
    with _lock:
        _caches.clear()


def cache_root() -> Path:
    return Path(settings.DATA_DIR) / "embeddings"


def text_encoder(name_or_path: str) -> Encoder:
    """The frozen text encoder ``name_or_path`` of this process (loaded on first use)."""
    with _lock:
        encoder = _encoders.get(name_or_path)
        if encoder is None:
            encoder = _encoders[name_or_path] = create_encoder(name_or_path)
        return encoder


def embedding_cache(encoder: Encoder) -> EmbeddingCache:
    with _lock:
        cache = _caches.get(encoder.fingerprint)
        if cache is None:
            cache = _caches[encoder.fingerprint] = EmbeddingCache(cache_root(), encoder)
        return cache


def dataset_encoder(dataset: Dataset, vectors: Sequence[list[float] | None]) -> Encoder:
    """The encoder a retrain of ``dataset`` uses: its text encoder, or standardisation fitted on its features."""
    if dataset.modality == Dataset.Modality.VECTOR:
        features = np.asarray([v for v in vectors if v is not None], dtype=np.float64)
        return VectorEncoder.fit(features)
    return text_encoder(dataset.encoder)


def encode_items(
    encoder: Encoder, rows: EncodableRows, *, on_batch: Callable[[int], Any] | None = None
) -> tuple[np.ndarray, dict[str, int]]:
    """Encoder outputs (N, D) for the rows, in order, and how many came from the cache."""
    n = len(rows.hashes)
    if isinstance(encoder, VectorEncoder):
        out = encoder.encode(rows.vectors) if n else np.zeros((0, encoder.dim), dtype=np.float32)
        if on_batch:
            on_batch(n)
        return out, {"cached": 0, "computed": 0}
    cache = embedding_cache(encoder)
    parts: list[np.ndarray] = []
    hits = misses = 0
    for start in range(0, n, _ENCODE_BATCH):
        stop = min(n, start + _ENCODE_BATCH)
        parts.append(cache.get_or_compute(rows.hashes[start:stop], rows.texts[start:stop]))
        hits += cache.last_stats.hits
        misses += cache.last_stats.misses
        if on_batch:
            on_batch(stop)
    out = np.concatenate(parts) if parts else np.zeros((0, encoder.dim), dtype=np.float32)
    return out, {"cached": hits, "computed": misses}


def store_distance(distance: str) -> str:
    """The learning core says "euclidean", the vector store "euclid"."""
    return "euclid" if distance == "euclidean" else "cosine"


def indexed_fields(metadata: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Payload indexes for metadata fields that hold one scalar type throughout (and have a usable name)."""
    kinds: dict[str, set[str]] = {}
    for entry in metadata:
        for name, value in entry.items():
            kind = (
                "bool"
                if isinstance(value, bool)
                else "integer"
                if isinstance(value, int)
                else "float"
                if isinstance(value, float)
                else "keyword"
                if isinstance(value, str)
                else "other"
            )
            kinds.setdefault(name, set()).add(kind)
    fields: dict[str, str] = {}
    for name, found in kinds.items():
        if not _FIELD.match(name):
            continue
        if found == {"integer", "float"}:
            fields[name] = "float"
        elif len(found) == 1 and "other" not in found:
            fields[name] = next(iter(found))
    return fields
