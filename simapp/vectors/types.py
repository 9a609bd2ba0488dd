"""Value types shared by every vector-store backend.

Score conventions (identical in both backends, asserted by the contract tests):

- ``cosine``: ``Hit.score`` is the cosine similarity in [-1, 1]; larger is closer. Stored vectors are
  unit-normalised by the engine, so the score of a point against its own vector is 1.0.
- ``euclid``: ``Hit.score`` is the Euclidean (L2) distance, >= 0; *smaller* is closer. Hits are still
  returned best first, i.e. in ascending distance.
- ``recommend(strategy="best_score")`` is the exception: its score is Qdrant's best-score ranking value
  in (-1, 1), larger is better, for both distances. It ranks hits within one response and is not a
  similarity or a distance.

Payload convention: every point carries ``{"key": str, "label": str | None, "metadata": {...}}``; ``key``
is the item's external key, ``label`` its group or class, ``metadata`` the item's filterable JSON.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, TypedDict

import numpy as np
from numpy.typing import NDArray

Distance: TypeAlias = Literal["cosine", "euclid"]
DISTANCES: tuple[Distance, ...] = ("cosine", "euclid")

# Types a metadata field can be indexed as; the label is always indexed as a keyword.
FieldType: TypeAlias = Literal["keyword", "integer", "float", "bool"]
FIELD_TYPES: tuple[FieldType, ...] = ("keyword", "integer", "float", "bool")

RecommendStrategy: TypeAlias = Literal["average_vector", "best_score"]
RECOMMEND_STRATEGIES: tuple[RecommendStrategy, ...] = ("average_vector", "best_score")

Vector: TypeAlias = "NDArray[np.floating[Any]] | Sequence[float]"

# Metadata field names become JSON paths ("metadata.<name>") inside the engine, so they are restricted
# to identifiers: anything else could address a different part of the payload.
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

# Half of a UTF-16 pair: a Python string may hold one (JSON can spell it, "\\ud800"); UTF-8 cannot.
_SURROGATE = re.compile("[\ud800-\udfff]")


class Payload(TypedDict):
    """What each point stores besides its vector."""

    key: str
    label: str | None
    metadata: dict[str, Any]


def make_payload(key: str, label: str | None = None, metadata: Mapping[str, Any] | None = None) -> Payload:
    return {"key": key, "label": label, "metadata": dict(metadata or {})}


@dataclass(frozen=True, slots=True)
class Point:
    """One indexed item.

    ``id`` is the deterministic point id (see ``simapp.vectors.point_id``): the item's primary key, so a
    retried upsert overwrites the same point instead of adding a duplicate. ``vector`` has shape (D,).
    """

    id: int
    vector: Vector
    payload: Payload


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result; see the module docstring for what ``score`` means per distance."""

    id: int
    score: float
    payload: Payload


@dataclass(frozen=True, slots=True)
class Range:
    """Numeric bounds on a metadata field; ``None`` leaves that side open."""

    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None

    def __post_init__(self) -> None:
        bounds = (self.gte, self.gt, self.lte, self.lt)
        if all(b is None for b in bounds):
            raise ValueError("Range needs at least one bound")
        for b in bounds:
            if b is not None and (isinstance(b, bool) or not math.isfinite(b)):
                raise ValueError(f"Range bound {b!r} is not a finite number")


@dataclass(frozen=True, slots=True)
class Filter:
    """Conditions that must all hold (AND), translated to each backend's filter.

    ``label``: the point's label equals this value. ``labelled``: True keeps only points with a label,
    False only points without one. ``metadata``: each named metadata field equals the given value.
    ``ranges``: each named numeric metadata field lies within the range.
    """

    label: str | None = None
    labelled: bool | None = None
    metadata: Mapping[str, str | int | bool] = field(default_factory=dict)
    ranges: Mapping[str, Range] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in (*self.metadata, *self.ranges):
            check_field_name(name)
        for name, value in self.metadata.items():
            # Qdrant matches keywords, integers and booleans exactly; floats only through ranges.
            if not isinstance(value, str | int | bool):
                raise ValueError(f"metadata filter {name}={value!r}: use a Range for non-integer numbers")
            # Its integers are 64-bit and its keywords UTF-8: anything else fails inside the engine.
            if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
                raise ValueError(f"metadata filter {name}={value}: integers are matched up to 64 bits")
            if isinstance(value, str) and _SURROGATE.search(value):
                raise ValueError(
                    f"metadata filter {name}: {value!r} is not valid Unicode text (a lone surrogate)"
                )
        if self.label is not None and _SURROGATE.search(self.label):
            raise ValueError(f"label filter: {self.label!r} is not valid Unicode text (a lone surrogate)")

    @property
    def is_empty(self) -> bool:
        return self.label is None and self.labelled is None and not self.metadata and not self.ranges


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    name: str
    dim: int
    distance: Distance
    points: int


@dataclass(frozen=True, slots=True)
class IndexParams:
    """HNSW and quantisation settings applied to every collection a store creates.

    The defaults come from ``bench/indexing.py`` on 2 cores (see BENCHMARKS.md): int8 scalar quantisation
    makes the HNSW build about 2x faster, and rescoring the ``oversampling`` x ``limit`` best candidates
    with the original float vectors keeps recall@10 near 1.0 and scores exact.
    """

    m: int = 16
    # Graph quality. 64 was enough for the synthetic topic data of bench.indexing, but on 100,000 CLINC150
    # embeddings with near-duplicate variants (bench.serving) it left recall@10 at 0.9825 (bulk build)
    # and 0.9685 (85,000 points added to an indexed collection), whatever the search ef or rescoring;
    # 128 gives 1.0 and 0.999, for 7% more build time there.
    ef_construct: int = 128
    # No extra per-value graph links for indexed payload fields: with them a 3-valued keyword field
    # made the 100k build ~3x slower. Filtered search uses the payload index instead (exact scan below
    # ``full_scan_threshold_kb`` of matching vectors, ACORN-filtered HNSW above it).
    payload_m: int = 0
    hnsw_ef: int = 128
    acorn: bool = True
    full_scan_threshold_kb: int = 10_000
    # Segments larger than this (KiB of vectors; 10,000 KiB is about 6,500 384-d vectors) get an HNSW
    # graph; smaller ones are searched exactly, which is faster at that size.
    indexing_threshold_kb: int = 10_000
    quantization: bool = True
    oversampling: float = 2.0


def check_field_name(name: str) -> str:
    if not _FIELD_NAME.match(name):
        raise ValueError(f"metadata field name {name!r} must be an identifier ([A-Za-z_][A-Za-z0-9_]*)")
    return name


def check_distance(distance: str) -> Distance:
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; valid: {', '.join(DISTANCES)}")
    return distance  # type: ignore[return-value]
