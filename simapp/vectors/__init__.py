"""Django-free vector-index layer: one small protocol (``VectorStore``), two backends, and the index
lifecycle (build a version, check it, switch the alias, prune) on top.

Depends on numpy, qdrant-client (imported only when a server is used) and qdrant-edge-py only. See
``types`` for what scores mean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simapp.vectors.edge import EdgeStore
from simapp.vectors.errors import (
    ActivationError,
    CollectionNotFound,
    StoreLocked,
    VectorStoreError,
    VectorStoreUnavailable,
)
from simapp.vectors.factory import open_store
from simapp.vectors.lifecycle import (
    BuildResult,
    Progress,
    activate,
    build_and_activate,
    collection_name,
    collection_versions,
    next_collection_name,
    point_id,
    prune_versions,
    verify_collection,
)
from simapp.vectors.protocol import DEFAULT_BATCH_SIZE, VectorStore
from simapp.vectors.types import (
    CollectionInfo,
    Distance,
    FieldType,
    Filter,
    Hit,
    IndexParams,
    Payload,
    Point,
    Range,
    RecommendStrategy,
    make_payload,
)

if TYPE_CHECKING:
    from simapp.vectors.server import QdrantServerStore


def __getattr__(name: str) -> object:
    # qdrant-client takes about a second to import; only a server-backed process needs it.
    if name == "QdrantServerStore":
        from simapp.vectors.server import QdrantServerStore

        return QdrantServerStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "ActivationError",
    "BuildResult",
    "CollectionInfo",
    "CollectionNotFound",
    "Distance",
    "EdgeStore",
    "FieldType",
    "Filter",
    "Hit",
    "IndexParams",
    "Payload",
    "Point",
    "Progress",
    "QdrantServerStore",
    "Range",
    "RecommendStrategy",
    "StoreLocked",
    "VectorStore",
    "VectorStoreError",
    "VectorStoreUnavailable",
    "activate",
    "build_and_activate",
    "collection_name",
    "collection_versions",
    "make_payload",
    "next_collection_name",
    "open_store",
    "point_id",
    "prune_versions",
    "verify_collection",
]
