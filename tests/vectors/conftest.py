from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from qdrant_client import QdrantClient

from simapp.vectors import EdgeStore, QdrantServerStore, VectorStore

BACKENDS = ("server", "edge")


def open_backend(kind: str, tmp_path: Path) -> VectorStore:
    """The server backend on qdrant-client's in-memory local mode, or Qdrant Edge under tmp_path."""
    if kind == "server":
        return QdrantServerStore(client=QdrantClient(":memory:"))
    return EdgeStore(tmp_path / "qdrant")


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    opened = open_backend(request.param, tmp_path)
    yield opened
    opened.close()


@pytest.fixture
def both(tmp_path: Path) -> Iterator[tuple[VectorStore, VectorStore]]:
    server, edge = open_backend("server", tmp_path), open_backend("edge", tmp_path)
    yield server, edge
    server.close()
    edge.close()
