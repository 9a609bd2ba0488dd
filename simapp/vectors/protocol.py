"""The one interface the rest of simapp talks to; ``server.py`` and ``edge.py`` implement it.

Names: every method that reads takes ``name_or_alias`` and resolves an alias at call time, so a query
never sees a half-switched alias: it runs entirely against the old or entirely against the new
collection. ``create_collection``, ``set_alias`` and ``drop`` take a collection name (dropping through an alias
would be an accident waiting to happen).

Shapes: a vector is (D,), ``nearest_batch`` takes (Q, D). Vectors may be NumPy arrays or float sequences.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from simapp.vectors.types import (
    CollectionInfo,
    Distance,
    FieldType,
    Filter,
    Hit,
    Point,
    RecommendStrategy,
    Vector,
)

DEFAULT_BATCH_SIZE = 1_000


@runtime_checkable
class VectorStore(Protocol):
    def create_collection(
        self,
        name: str,
        *,
        dim: int,
        distance: Distance,
        indexed_fields: Mapping[str, FieldType] | None = None,
    ) -> None:
        """Create an empty collection; ``label`` and each ``indexed_fields`` metadata field get a payload
        index. Raises ``ValueError`` if the name is taken by a collection or an alias. Indexing may be
        deferred until ``optimize`` (bulk-load mode), so call it after loading."""
        ...

    def upsert(
        self, name_or_alias: str, points: Sequence[Point], *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> None:
        """Insert or overwrite points by id, sent in batches of ``batch_size``. Visible to reads on return.
        Through an alias it writes to the active collection (new items between two model versions)."""
        ...

    def delete(self, name_or_alias: str, ids: Sequence[int]) -> None:
        """Delete points by id; unknown ids are ignored."""
        ...

    def count(self, name_or_alias: str) -> int:
        """Exact number of points."""
        ...

    def info(self, name_or_alias: str) -> CollectionInfo: ...

    def get_vectors(self, name_or_alias: str, ids: Sequence[int]) -> dict[int, NDArray[np.float32]]:
        """Stored vectors by id, each (D,); missing ids are absent. Cosine vectors come back normalised."""
        ...

    def nearest(
        self,
        name_or_alias: str,
        vector: Vector,
        *,
        limit: int = 10,
        filter: Filter | None = None,
        exclude_ids: Collection[int] = (),
    ) -> list[Hit]:
        """The ``limit`` closest points, best first (see ``types`` for the score)."""
        ...

    def nearest_batch(
        self,
        name_or_alias: str,
        vectors: Sequence[Vector] | NDArray[np.floating],
        *,
        limit: int = 10,
        filter: Filter | None = None,
        exclude_ids: Collection[int] = (),
    ) -> list[list[Hit]]:
        """``nearest`` for each row of ``vectors`` (Q, D) in one round trip; one list per row, in order."""
        ...

    def recommend(
        self,
        name_or_alias: str,
        *,
        positive: Sequence[int | Vector],
        negative: Sequence[int | Vector] = (),
        strategy: RecommendStrategy = "average_vector",
        limit: int = 10,
        filter: Filter | None = None,
        exclude_ids: Collection[int] = (),
    ) -> list[Hit]:
        """Points like the positive and unlike the negative examples. An example is a point id (its stored
        vector is used and the point is left out of the results) or a vector.

        ``average_vector`` searches for ``2*mean(pos) - mean(neg)`` (``mean(pos)`` without negatives),
        averaging unit vectors for cosine; its score is the nearest-score to that vector.
        ``best_score`` ranks each point by its best positive vs. best negative similarity (needs at
        least one example of either kind); its score is Qdrant's best-score value, larger is better."""
        ...

    def optimize(self, name_or_alias: str) -> None:
        """Build the HNSW graph, payload indexes and quantisation after a bulk load; blocks until done."""
        ...

    def set_alias(self, alias: str, collection: str) -> None:
        """Point ``alias`` at ``collection`` in one atomic step (creating it if needed)."""
        ...

    def get_alias(self, alias: str) -> str | None:
        """The collection ``alias`` points at, or ``None``."""
        ...

    def list_collections(self) -> list[str]:
        """Collection names, sorted."""
        ...

    def drop(self, name: str) -> None:
        """Delete a collection and any alias pointing at it; a missing name is a no-op, so cleanup after a
        failure is always safe to call."""
        ...

    def close(self) -> None: ...
