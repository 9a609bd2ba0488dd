"""Indexing that fails midway never switches the alias: the previous version keeps serving, the run fails
with the reason, and the half-built collection is dropped, or, when the store itself is gone and cannot
drop it, left where nothing can serve it.

The fault: a wrapper of ours around the process's real vector store (the embedded engine). It passes
every call through, except the upload into the new version's collection: that one writes the first
points of its batch for real, then raises ``VectorStoreUnavailable`` as the server backend does when
Qdrant stops answering mid-request. With ``then_gone`` every later call fails too, until the test
brings the store back: a Qdrant server that went away. Simulated because neither engine can be made
to fail halfway through one upload on cue, and what matters is how the pipeline reacts, not why.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from apps.discovery.models import AnomalyScore
from apps.training import index, services
from apps.training.models import ModelVersion, TrainingRun
from simapp.vectors import ActivationError, Point, VectorStore, VectorStoreUnavailable, make_payload
from tests.discovery.conftest import fresh_data_dir
from tests.training.conftest import clinc_records, make_dataset, run_to_end

# Runs execute as in production, committing as they go (their heartbeat thread has its own connection).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

NEW = "clinc.index_v2"  # the collection the failing run builds
LOST = "Qdrant stopped answering during the upload (simulated in tests/faults/test_index_failure.py)"


class FailingStore:
    """The real store, except that the upload into ``collection`` breaks after ``after`` points."""

    def __init__(self, real: VectorStore, *, collection: str, after: int, then_gone: bool = False) -> None:
        self.real = real
        self.collection = collection
        self.after = after
        self.then_gone = then_gone
        self.gone = False
        self.written: int | None = None  # points in the new collection when the upload broke

    def upsert(self, name_or_alias: str, points: Sequence[Point], **options: Any) -> None:
        self._check()
        if name_or_alias != self.collection:
            return self.real.upsert(name_or_alias, points, **options)
        self.real.upsert(name_or_alias, points[: self.after], **options)
        self.written = self.real.count(name_or_alias)
        self.gone = self.then_gone
        raise VectorStoreUnavailable(LOST)

    def _check(self) -> None:
        if self.gone:
            raise VectorStoreUnavailable("Qdrant is gone (simulated)")

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.real, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self._check()
            return method(*args, **kwargs)

        return call


@pytest.fixture
def served(tmp_path: Path, shared_data: Path) -> Iterator[Any]:
    """Four CLINC150 intents, eight queries each, serving v1 (frozen encoder) from a fresh data dir."""
    with fresh_data_dir(tmp_path):
        dataset = make_dataset("clinc", clinc_records(shared_data, intents=4, per_intent=8))
        first = run_to_end(dataset, head="identity")
        assert (first.status, first.error) == ("succeeded", "")
        yield dataset


@pytest.fixture
def failing(served: Any) -> Iterator[Any]:
    """Install a ``FailingStore`` (made by the test) as the process's store; the real one again after."""
    real = index.vector_store()
    installed: list[FailingStore] = []

    def install(**options: Any) -> FailingStore:
        store = FailingStore(real, collection=NEW, **options)
        index._store = store  # the one place the process's store lives (apps.training.index)
        installed.append(store)
        return store

    yield install
    index._store = real


def versions() -> list[tuple[int, bool]]:
    return list(ModelVersion.objects.order_by("number").values_list("number", "is_active"))


def serving(api: APIClient, item_id: int) -> dict[str, Any]:
    response = api.get(f"/api/datasets/clinc/items/{item_id}/neighbours/?limit=5")
    assert response.status_code == 200, response.content
    return response.json()


@pytest.mark.parametrize("then_gone", [False, True], ids=["upload-fails", "store-goes-away"])
def test_an_upload_that_breaks_midway_never_switches_the_alias(
    served: Any, failing: Any, labeller_api: APIClient, tmp_path: Path, then_gone: bool
) -> None:
    item = served.items.order_by("id").first()
    answer_before = serving(labeller_api, item.pk)
    scores_before = list(AnomalyScore.objects.order_by("id").values_list("version", "item", "score"))
    store = failing(after=10, then_gone=then_gone)

    run = run_to_end(served, head="identity")
    store.gone = False  # the store is back (a no-op when only the upload failed)
    index._store = store.real

    real = index.vector_store()
    assert store.written == 10  # the new collection held points when the upload broke
    assert (run.status, run.error) == ("failed", f"VectorStoreUnavailable: {LOST}")
    assert real.get_alias("clinc.index") == "clinc.index_v1" and real.count("clinc.index") == 32
    assert versions() == [(1, True)]  # no row for the half-built version
    assert not (tmp_path / "models" / "clinc" / "v2").exists()
    assert list(AnomalyScore.objects.order_by("id").values_list("version", "item", "score")) == scores_before
    assert serving(labeller_api, item.pk) == answer_before  # v1, the same neighbours
    if then_gone:
        # It could not be dropped while the store was gone; no version names it, so nothing serves it.
        assert NEW in real.list_collections() and real.count(NEW) == 10
    else:
        assert NEW not in real.list_collections()  # dropped by the build that failed

    again = run_to_end(served, head="identity")  # the next retrain replaces any leftover

    assert (again.status, again.error) == ("succeeded", "")
    assert versions() == [(1, False), (2, True)]
    assert real.get_alias("clinc.index") == NEW and real.count(NEW) == 32
    assert serving(labeller_api, item.pk)["version"] == 2


def test_a_version_whose_run_died_while_indexing_can_never_serve(
    served: Any, staff_api: APIClient, labeller_api: APIClient
) -> None:
    # What a worker killed mid-upload leaves (no clean-up runs on SIGKILL): the run reaped as failed, its
    # version's row, and a collection with some of the points. Written here through the real store.
    store = index.vector_store()
    doomed = TrainingRun.objects.create(
        dataset=served, status=TrainingRun.Status.FAILED, error="the worker stopped responding"
    )
    half = ModelVersion.objects.create(
        dataset=served, run=doomed, number=2, artifact_path="models/clinc/v2", collection=NEW
    )
    v1 = ModelVersion.objects.get(number=1)
    store.create_collection(NEW, dim=384, distance="cosine")
    kept = store.get_vectors("clinc.index", v1_ids(served)[:5])
    store.upsert(
        NEW, [Point(id=i, vector=v, payload=make_payload(f"k{i}", None, {})) for i, v in kept.items()]
    )

    refused = staff_api.post(f"/api/versions/{half.pk}/activate/")

    assert refused.status_code == 400
    assert refused.json()["detail"] == (
        f"cannot activate v2: its run ({doomed.pk}) failed before the version ever served, so its index "
        "may be incomplete; retrain instead"
    )
    assert store.get_alias("clinc.index") == v1.collection and versions() == [(1, True), (2, False)]
    with pytest.raises(ActivationError):  # the service itself refuses, for the console and the admin too
        services.model_version_activate(version=half)

    again = run_to_end(served, head="identity")  # v3
    assert again.status == "succeeded" and versions() == [(1, False), (2, False), (3, True)]
    rolled_back = staff_api.post("/api/datasets/clinc/rollback/")

    assert rolled_back.status_code == 200 and rolled_back.json()["number"] == 1  # past v2, to v1
    assert versions() == [(1, True), (2, False), (3, False)]
    assert store.get_alias("clinc.index") == v1.collection
    assert serving(labeller_api, served.items.order_by("id").first().pk)["version"] == 1


def v1_ids(dataset: Any) -> list[int]:
    return list(dataset.items.order_by("id").values_list("id", flat=True))


class AliasLostStore(FailingStore):
    """The real store, except that reading the alias fails: Qdrant gone just as the run saves its model."""

    def get_alias(self, alias: str) -> str | None:
        raise VectorStoreUnavailable(LOST)


def test_a_store_lost_before_the_build_leaves_no_version_nor_model_files(served: Any, tmp_path: Path) -> None:
    real = index.vector_store()
    index._store = AliasLostStore(real, collection=NEW, after=0)  # the wrapper of the tests above
    try:
        run = run_to_end(served, head="identity")
    finally:
        index._store = real

    assert (run.status, run.error) == ("failed", f"VectorStoreUnavailable: {LOST}")
    assert versions() == [(1, True)]  # no row of a version that could never be built
    assert not (tmp_path / "models" / "clinc" / "v2").exists()
    assert real.get_alias("clinc.index") == "clinc.index_v1"
    again = run_to_end(served, head="identity")
    assert (again.status, versions()) == ("succeeded", [(1, False), (2, True)])  # v2, not v3
