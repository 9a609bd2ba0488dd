"""Embedded-store specifics: one process per directory, persistence, crash leftovers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simapp.vectors import EdgeStore, StoreLocked, VectorStoreUnavailable, build_and_activate, open_store
from tests.vectors.helpers import make_points

REPO = Path(__file__).resolve().parents[2]
DIM = 8


def test_second_process_cannot_open_the_same_root(tmp_path: Path) -> None:
    root = tmp_path / "qdrant"
    with EdgeStore(root):
        # A separate interpreter, as a Celery worker or a second gunicorn worker would be.
        script = (
            "import sys\n"
            "from pathlib import Path\n"
            "from simapp.vectors.edge import EdgeStore\n"
            "from simapp.vectors.errors import StoreLocked\n"
            "try:\n"
            "    EdgeStore(Path(sys.argv[1]))\n"
            "except StoreLocked as exc:\n"
            "    print(exc)\n"
            "    sys.exit(3)\n"
        )
        other = subprocess.run(
            [sys.executable, "-c", script, str(root)], cwd=REPO, capture_output=True, text=True, timeout=60
        )

    assert other.returncode == 3, other.stderr
    assert "already open (held by pid " in other.stdout
    assert "QDRANT_URL" in other.stdout


def test_second_store_in_the_same_process_is_refused_until_closed(tmp_path: Path) -> None:
    first = EdgeStore(tmp_path)

    with pytest.raises(StoreLocked):
        EdgeStore(tmp_path)
    first.close()

    EdgeStore(tmp_path).close()


def test_closed_store_is_unavailable(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path)
    store.close()

    with pytest.raises(VectorStoreUnavailable, match="closed"):
        store.list_collections()


def test_collections_and_aliases_survive_reopening(tmp_path: Path) -> None:
    points, vectors = make_points(60, DIM)
    with EdgeStore(tmp_path) as store:
        build_and_activate(
            store, alias="docs", collection="docs_v1", dim=DIM, distance="euclid", points=points
        )

    with EdgeStore(tmp_path) as store:
        assert store.get_alias("docs") == "docs_v1"
        assert store.count("docs") == 60
        hit = store.nearest("docs", vectors[7], limit=1)[0]
        assert (hit.id, hit.score, hit.payload["key"]) == (7, 0.0, "item-7")


def test_half_created_and_half_dropped_leftovers_are_removed_on_open(tmp_path: Path) -> None:
    with EdgeStore(tmp_path) as store:
        store.create_collection("docs_v1", dim=DIM, distance="cosine")
    (tmp_path / "collections" / "docs_v2" / "shard").mkdir(parents=True)  # crashed before its metadata
    (tmp_path / "trash" / "docs_v0-abc").mkdir(parents=True)  # crashed while deleting

    with EdgeStore(tmp_path) as store:
        assert store.list_collections() == ["docs_v1"]
        store.create_collection("docs_v2", dim=DIM, distance="cosine")  # the name is usable again

    assert sorted(p.name for p in (tmp_path / "collections").iterdir()) == ["docs_v1", "docs_v2"]
    assert list((tmp_path / "trash").iterdir()) == []


def test_open_store_without_url_is_embedded_under_the_data_dir(tmp_path: Path) -> None:
    store = open_store(url=None, api_key=None, data_dir=tmp_path)
    try:
        assert isinstance(store, EdgeStore)
        assert (tmp_path / "qdrant" / ".lock").exists()
    finally:
        store.close()


def test_bulk_load_builds_the_hnsw_index(tmp_path: Path) -> None:
    """Above the indexing threshold optimize() builds HNSW; answers stay exact thanks to rescoring."""
    rng = np.random.default_rng(0)
    dim, n = 64, 12_000  # 3 MB of vectors: over a 1,000 KiB threshold, so the graph is really built
    from simapp.vectors import IndexParams, Point, make_payload

    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    points = [Point(i, vectors[i], make_payload(str(i))) for i in range(n)]
    with EdgeStore(tmp_path, index=IndexParams(indexing_threshold_kb=1_000)) as store:
        build_and_activate(
            store,
            alias="big",
            collection="big_v1",
            dim=dim,
            distance="cosine",
            points=points,
            batch_size=2_000,
        )
        handle = store._handles["big_v1"]  # the engine's own report, to prove the graph exists
        assert handle.shard.info().indexed_vectors_count == n
        for i in (0, 4_321, 11_999):
            assert store.nearest("big", vectors[i], limit=1)[0].id == i
