"""Input checks and recommend preprocessing shared by both backends, so they agree by construction."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from simapp.vectors.types import (
    FIELD_TYPES,
    RECOMMEND_STRATEGIES,
    Distance,
    FieldType,
    Payload,
    Point,
    RecommendStrategy,
    Vector,
    check_field_name,
)

# Collection and alias names become directory names in the embedded store and URL path segments on the
# server, so both backends accept the same conservative set.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_name(name: str, what: str = "collection") -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name.endswith((".tmp", ".trash")):
        raise ValueError(f"{what} name {name!r} must match [A-Za-z0-9][A-Za-z0-9_.-]* (at most 128 chars)")
    return name


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    return limit


def check_id(point_id: int) -> int:
    # Qdrant ids are unsigned 64-bit; bool is an int subclass and almost certainly a bug here.
    if isinstance(point_id, bool) or not isinstance(point_id, int | np.integer) or not 0 <= point_id < 2**63:
        raise ValueError(f"point id must be an integer in [0, 2**63), got {point_id!r}")
    return int(point_id)


def check_indexed_fields(indexed_fields: Mapping[str, FieldType] | None) -> dict[str, FieldType]:
    fields: dict[str, FieldType] = {}
    for name, kind in (indexed_fields or {}).items():
        check_field_name(name)
        if kind not in FIELD_TYPES:
            raise ValueError(f"field {name!r}: unknown index type {kind!r}; valid: {', '.join(FIELD_TYPES)}")
        fields[name] = kind
    return fields


def check_strategy(strategy: str) -> RecommendStrategy:
    if strategy not in RECOMMEND_STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(RECOMMEND_STRATEGIES)}")
    return strategy  # type: ignore[return-value]


def as_vector(vector: Vector, dim: int) -> NDArray[np.float32]:
    """(D,) float32, finite, of the collection's dimension."""
    array = np.asarray(vector, dtype=np.float32)
    if array.shape != (dim,):
        raise ValueError(f"vector has shape {array.shape}, the collection expects ({dim},)")
    if not np.isfinite(array).all():
        raise ValueError("vector contains NaN or infinity")
    return array


def as_matrix(vectors: Sequence[Vector] | NDArray[np.floating], dim: int) -> NDArray[np.float32]:
    """(Q, D) float32, finite; Q may be 0."""
    if isinstance(vectors, np.ndarray):
        matrix = vectors.astype(np.float32, copy=False)
    elif len(vectors) == 0:
        matrix = np.zeros((0, dim), dtype=np.float32)
    else:
        matrix = np.stack([np.asarray(v, dtype=np.float32) for v in vectors])
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise ValueError(f"vectors have shape {matrix.shape}, the collection expects (Q, {dim})")
    if not np.isfinite(matrix).all():
        raise ValueError("vectors contain NaN or infinity")
    return matrix


def check_payload(payload: Payload | Mapping[str, Any]) -> Payload:
    key = payload.get("key")
    label = payload.get("label")
    metadata = payload.get("metadata") or {}
    if not isinstance(key, str):
        raise ValueError(f"payload key must be a string, got {key!r}")
    if label is not None and not isinstance(label, str):
        raise ValueError(f"payload label must be a string or None, got {label!r}")
    if not isinstance(metadata, Mapping):
        raise ValueError(f"payload metadata must be a mapping, got {type(metadata).__name__}")
    extra = set(payload) - {"key", "label", "metadata"}
    if extra:
        raise ValueError(f"payload has unknown top-level fields {sorted(extra)}; put them in metadata")
    return {"key": key, "label": label, "metadata": dict(metadata)}


def read_payload(raw: Mapping[str, Any] | None) -> Payload:
    raw = raw or {}
    return {"key": raw.get("key", ""), "label": raw.get("label"), "metadata": dict(raw.get("metadata") or {})}


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    ids: list[int]
    vectors: NDArray[np.float32]  # (B, D)
    payloads: list[Payload]


def prepare_batches(points: Sequence[Point], dim: int, batch_size: int) -> list[PreparedBatch]:
    """Validate every point before the first batch is sent, so bad input writes nothing."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    ids = [check_id(p.id) for p in points]
    vectors = as_matrix([p.vector for p in points], dim)
    payloads = [check_payload(p.payload) for p in points]
    return [
        PreparedBatch(ids[s : s + batch_size], vectors[s : s + batch_size], payloads[s : s + batch_size])
        for s in range(0, len(points), batch_size)
    ]


def unit_rows(matrix: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    # A zero vector has no direction; leaving it at zero matches what the engine does with it.
    return matrix / np.where(norms > 0, norms, 1.0).astype(np.float32)


@dataclass(frozen=True, slots=True)
class RecommendInput:
    positive: NDArray[np.float32]  # (P, D)
    negative: NDArray[np.float32]  # (N, D)
    example_ids: frozenset[int]

    def average_vector(self) -> NDArray[np.float32]:
        """(D,) the query vector of the ``average_vector`` strategy (Qdrant's formula)."""
        mean_positive = self.positive.mean(axis=0)
        if len(self.negative) == 0:
            return mean_positive.astype(np.float32)
        return (2 * mean_positive - self.negative.mean(axis=0)).astype(np.float32)


def prepare_recommend(
    positive: Sequence[int | Vector],
    negative: Sequence[int | Vector],
    strategy: RecommendStrategy,
    *,
    dim: int,
    distance: Distance,
    lookup: Callable[[Sequence[int]], Mapping[int, NDArray[np.float32]]],
) -> RecommendInput:
    """Turn examples (ids or vectors) into vectors, the same way for both backends.

    Ids are looked up in the collection (``CollectionNotFound``-free: an unknown id is a ``ValueError``)
    and excluded from the results. For cosine every example is unit-normalised, so each one weighs the
    same in the average whatever its length.
    """
    check_strategy(strategy)
    if strategy == "average_vector" and not positive:
        raise ValueError("average_vector needs at least one positive example")
    if not positive and not negative:
        raise ValueError("recommend needs at least one example")

    def is_id(example: int | Vector) -> bool:
        return isinstance(example, int | np.integer) and not isinstance(example, bool)

    wanted = [check_id(e) for e in (*positive, *negative) if is_id(e)]  # type: ignore[arg-type]
    found = lookup(wanted) if wanted else {}
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise ValueError(f"example point ids not in the collection: {missing}")

    def vectors(examples: Sequence[int | Vector]) -> NDArray[np.float32]:
        rows = [found[int(e)] if is_id(e) else as_vector(e, dim) for e in examples]  # type: ignore[arg-type]
        matrix = np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), dtype=np.float32)
        return unit_rows(matrix) if distance == "cosine" else matrix

    return RecommendInput(vectors(positive), vectors(negative), frozenset(wanted))


def merge_excluded(exclude_ids: Collection[int], extra: Collection[int] = ()) -> list[int]:
    return sorted({check_id(i) for i in exclude_ids} | {check_id(i) for i in extra})
