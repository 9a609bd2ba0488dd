"""Server-backend specifics: an unreachable Qdrant surfaces as one exception of ours."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from simapp.vectors import QdrantServerStore, VectorStoreUnavailable, open_store


def closed_port() -> int:
    """A localhost port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection:UserWarning")
def test_unreachable_server_raises_vector_store_unavailable(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    store = open_store(url=url, api_key="secret", data_dir=tmp_path)  # does not connect yet
    assert isinstance(store, QdrantServerStore)

    calls = [
        lambda: store.list_collections(),
        lambda: store.count("docs"),
        lambda: store.nearest("docs", np.ones(4, dtype=np.float32)),
        lambda: store.get_alias("docs"),
        lambda: store.create_collection("docs_v1", dim=4, distance="cosine"),
    ]
    for call in calls:
        with pytest.raises(VectorStoreUnavailable, match=f"Qdrant at {url} is unreachable"):
            call()
    store.close()
    assert not (tmp_path / "qdrant").exists()  # the server backend never touches the data dir


def test_store_needs_exactly_one_of_url_or_client() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        QdrantServerStore()
