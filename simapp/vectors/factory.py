"""Choose the backend from configuration: a Qdrant server when ``QDRANT_URL`` is set, else embedded."""

from __future__ import annotations

from pathlib import Path

from simapp.vectors.edge import EdgeStore
from simapp.vectors.protocol import VectorStore
from simapp.vectors.types import IndexParams


def open_store(
    *, url: str | None, api_key: str | None, data_dir: Path, index: IndexParams | None = None
) -> VectorStore:
    """``QdrantServerStore`` on ``url`` when given (settings pass ``QDRANT_URL``/``QDRANT_API_KEY``),
    otherwise an ``EdgeStore`` under ``<data_dir>/qdrant`` (``SIMAPP_DATA_DIR``).

    The embedded store locks its directory: a second process gets ``StoreLocked``. Open it once per
    process and share it; every method is thread-safe. Neither backend connects at construction, so a
    server that is down surfaces as ``VectorStoreUnavailable`` on first use.
    """
    if url:
        from simapp.vectors.server import QdrantServerStore  # qdrant-client: about 1 s to import

        return QdrantServerStore(url=url, api_key=api_key or None, index=index)
    return EdgeStore(Path(data_dir) / "qdrant", index=index)
