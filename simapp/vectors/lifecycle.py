"""Backend-independent index lifecycle on top of ``VectorStore``: deterministic ids, one collection per
model version, build + check + atomic alias switch, rollback, pruning.

A dataset's index is an alias (e.g. ``banking77``) pointing at one collection per model version
(``banking77_v1``, ``banking77_v2``, ...). Queries go through the alias. A new version is built next to
the active one and the alias moves only after the new collection passed its checks, so a failed or
half-finished build is never served and the previous versions stay available for rollback.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from simapp.vectors._common import as_vector, check_id, check_name
from simapp.vectors.errors import ActivationError, CollectionNotFound
from simapp.vectors.protocol import DEFAULT_BATCH_SIZE, VectorStore
from simapp.vectors.types import Distance, FieldType, Point, Vector

logger = logging.getLogger(__name__)

Stage = Literal["upload", "optimize", "verify", "activate", "prune"]

# Scores of a canary's own vector and of an exact duplicate can differ by float rounding only.
_TIE_TOLERANCE = 1e-5


def point_id(item_pk: int) -> int:
    """The point id of an item: its database primary key.

    Deterministic on purpose: a retried task upserts the same ids and overwrites instead of duplicating,
    and a point maps back to its item without a lookup table. Collections are per dataset and version,
    so primary keys never collide inside one.
    """
    return check_id(item_pk)


def collection_name(alias: str, version: int) -> str:
    """``<alias>_v<version>``, the one naming scheme pruning relies on."""
    check_name(alias, "alias")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer, got {version!r}")
    return f"{alias}_v{version}"


def collection_versions(store: VectorStore, alias: str) -> dict[int, str]:
    """{version: collection name} of every collection built for ``alias``."""
    pattern = re.compile(rf"^{re.escape(alias)}_v([0-9]+)$")
    return {int(m.group(1)): name for name in store.list_collections() if (m := pattern.match(name))}


def next_collection_name(store: VectorStore, alias: str) -> str:
    versions = collection_versions(store, alias)
    return collection_name(alias, max(versions, default=0) + 1)


@dataclass(frozen=True, slots=True)
class Progress:
    """Reported to ``on_progress``; ``total`` is None while the number of points is unknown."""

    stage: Stage
    done: int
    total: int | None


@dataclass(frozen=True, slots=True)
class BuildResult:
    collection: str
    points: int
    previous: str | None  # what the alias pointed at before (the rollback target)
    pruned: tuple[str, ...]
    canaries: tuple[int, ...]
    seconds: float


def verify_collection(
    store: VectorStore,
    collection: str,
    *,
    expected_count: int | None = None,
    canaries: Mapping[int, Vector] | None = None,
) -> None:
    """Raise ``ActivationError`` unless the collection is fit to serve.

    Checks: it holds ``expected_count`` points (or at least one when not given), and each canary's own
    vector finds the canary first. An exact duplicate of a canary may tie with it; the canary passes if
    it is among the hits tied for first place.
    """
    info = store.info(collection)
    if expected_count is not None and info.points != expected_count:
        raise ActivationError(
            f"{collection}: {info.points} points indexed, {expected_count} uploaded (duplicate ids?)"
        )
    if expected_count is None and info.points == 0:
        raise ActivationError(f"{collection} is empty")
    for canary_id, vector in (canaries or {}).items():
        hits = store.nearest(collection, vector, limit=10)
        if not hits:
            raise ActivationError(f"{collection}: canary {canary_id} found nothing")
        best = hits[0].score
        tied = [
            h.id
            for h in hits
            if (
                h.score >= best - _TIE_TOLERANCE
                if info.distance == "cosine"
                else h.score <= best + _TIE_TOLERANCE
            )
        ]
        if canary_id not in tied:
            raise ActivationError(
                f"{collection}: canary {canary_id} does not find itself first (top hits {[h.id for h in hits[:3]]})"
            )


def activate(
    store: VectorStore,
    *,
    alias: str,
    collection: str,
    expected_count: int | None = None,
    canaries: Mapping[int, Vector] | None = None,
) -> str | None:
    """Check ``collection`` and point ``alias`` at it; returns the previous target. Also the rollback:
    ``activate(store, alias=a, collection=result.previous)``. On a failed check nothing changes."""
    if collection not in store.list_collections():
        raise CollectionNotFound(f"no collection {collection!r}")
    verify_collection(store, collection, expected_count=expected_count, canaries=canaries)
    previous = store.get_alias(alias)
    store.set_alias(alias, collection)
    return previous


def prune_versions(store: VectorStore, *, alias: str, keep: int) -> list[str]:
    """Drop the collections of ``alias`` beyond the ``keep`` newest versions; the collection the alias
    points at is always kept, even when older (after a rollback). Returns the dropped names."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    versions = collection_versions(store, alias)
    active = store.get_alias(alias)
    newest_first = [versions[v] for v in sorted(versions, reverse=True)]
    doomed = [name for name in newest_first[keep:] if name != active]
    for name in doomed:
        store.drop(name)
    return doomed


def build_and_activate(
    store: VectorStore,
    *,
    alias: str,
    collection: str,
    dim: int,
    distance: Distance,
    points: Iterable[Point],
    indexed_fields: Mapping[str, FieldType] | None = None,
    canaries: int | Sequence[int] = 5,
    keep: int = 3,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: Callable[[Progress], None] | None = None,
) -> BuildResult:
    """Build ``collection`` from ``points``, check it, switch ``alias`` to it, prune old versions.

    Steps: create (payload indexes for label and ``indexed_fields``), upload in batches of
    ``batch_size`` (``points`` may be a generator; a ``Sized`` one gives progress totals), optimise
    (HNSW build), verify (point count equals the number uploaded; each canary finds itself first), switch
    the alias atomically, prune versions beyond ``keep`` (the active one never).

    ``canaries``: how many points to check (a seeded sample of the stream) or explicit point ids.

    On any failure before the switch (including an exception raised by ``on_progress``, which is how a
    job cancels) the new collection is dropped and the alias is left exactly as it was; the error is
    re-raised. A failure while pruning is logged, not raised: the new version is already serving.
    ``collection`` must be ``<alias>_v<N>`` and must not be the active collection; a leftover of the
    same name from a crashed build is replaced.
    """
    started = time.monotonic()
    check_name(alias, "alias")
    if not re.fullmatch(rf"{re.escape(alias)}_v[1-9][0-9]*", collection):
        raise ValueError(f"collection {collection!r} must be named {alias}_v<N> (see collection_name)")
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    previous = store.get_alias(alias)
    if collection == previous:
        raise ValueError(f"{collection!r} is the active collection of {alias!r}; build a new version")
    total = len(points) if hasattr(points, "__len__") else None  # type: ignore[arg-type]

    def report(stage: Stage, done: int, of: int | None) -> None:
        if on_progress is not None:
            on_progress(Progress(stage, done, of))

    if collection in store.list_collections():
        store.drop(collection)  # leftover of a crashed build: never active, see the check above
    store.create_collection(collection, dim=dim, distance=distance, indexed_fields=indexed_fields)
    try:
        sampler = _CanarySampler(canaries)
        uploaded = 0
        report("upload", 0, total)
        for chunk in _chunks(points, batch_size):
            store.upsert(collection, chunk, batch_size=batch_size)
            sampler.see(chunk, dim)
            uploaded += len(chunk)
            report("upload", uploaded, total)
        report("optimize", 0, 1)
        store.optimize(collection)
        report("optimize", 1, 1)
        checks = sampler.result()
        report("verify", 0, len(checks))
        verify_collection(store, collection, expected_count=uploaded, canaries=checks)
        report("verify", len(checks), len(checks))
        report("activate", 0, 1)
        store.set_alias(alias, collection)
    except BaseException:
        # Leave no half-built collection behind; the alias was never touched.
        try:
            store.drop(collection)
        except Exception:
            logger.exception("could not drop half-built collection %s", collection)
        raise
    report("activate", 1, 1)

    pruned: list[str] = []
    report("prune", 0, 1)
    try:
        pruned = prune_versions(store, alias=alias, keep=keep)
    except Exception:
        logger.exception("pruning old versions of %s failed; they stay until the next build", alias)
    report("prune", 1, 1)
    return BuildResult(
        collection=collection,
        points=uploaded,
        previous=previous,
        pruned=tuple(pruned),
        canaries=tuple(checks),
        seconds=time.monotonic() - started,
    )


def _chunks(points: Iterable[Point], size: int) -> Iterable[list[Point]]:
    if size < 1:
        raise ValueError(f"batch_size must be positive, got {size}")
    chunk: list[Point] = []
    for point in points:
        chunk.append(point)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _CanarySampler:
    """Keeps the vectors of the canary points while they stream past, so checks need no second read."""

    def __init__(self, canaries: int | Sequence[int]) -> None:
        self._wanted: set[int] | None = None
        self._n = 0
        if isinstance(canaries, int):
            if canaries < 0:
                raise ValueError(f"canaries must be >= 0, got {canaries}")
            self._n = canaries
        else:
            self._wanted = {check_id(i) for i in canaries}
        # Seeded reservoir sample: the same stream always yields the same canaries (reproducible builds).
        self._rng = random.Random(0)
        self._seen = 0
        self._picked: dict[int, NDArray[np.float32]] = {}
        self._order: list[int] = []

    def see(self, chunk: Sequence[Point], dim: int) -> None:
        for point in chunk:
            if self._wanted is not None:
                if point.id in self._wanted:
                    self._picked[point.id] = as_vector(point.vector, dim).copy()
                continue
            self._seen += 1
            if len(self._order) < self._n:
                slot = len(self._order)
                self._order.append(point.id)
            else:
                slot = self._rng.randrange(self._seen)
                if slot >= self._n:
                    continue
                self._picked.pop(self._order[slot], None)
                self._order[slot] = point.id
            self._picked[point.id] = as_vector(point.vector, dim).copy()

    def result(self) -> dict[int, NDArray[np.float32]]:
        if self._wanted is not None:
            missing = sorted(self._wanted - set(self._picked))
            if missing:
                raise ActivationError(f"canary ids {missing} were not among the uploaded points")
        return dict(sorted(self._picked.items()))
