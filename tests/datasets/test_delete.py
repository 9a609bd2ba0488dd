"""Deleting a dataset, trained or not, through the API and the admin: every row of it, every collection of its
index with the alias, and its model files go; the embedding cache and other datasets stay; the slug can be
imported and trained again. Refused, with nothing changed, while a run of it is queued or running (409) and
while the vector store that holds its index is unreachable (503).

Real parts: small CLINC150 slices trained by the real pipeline into the embedded store of a fresh data
directory; "unreachable" is the server backend pointed at a loopback port where nothing listens.
Transactional tests, so that each deletion really commits and its after-commit clean-up really runs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse
from rest_framework.test import APIClient

from apps.common import background
from apps.datasets.formats import ItemRecord, PairRecord
from apps.datasets.models import Dataset, Item
from apps.datasets.signals import dataset_deleting
from apps.discovery.models import AnomalyFeedback, AnomalyScore
from apps.discovery.services import anomaly_feedback_set
from apps.labelling.models import Pair
from apps.training import index, services
from apps.training.models import ModelVersion, TrainingRun
from tests.conftest import every_row, session_client
from tests.faults.conftest import closed_port, vector_store_at
from tests.training.conftest import clinc_records, make_dataset, run_to_end

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def trained(slug: str, records: list[ItemRecord], *, runs: int = 1, **config: Any) -> Dataset:
    """``records`` imported as dataset ``slug`` with a labelled pair, then trained ``runs`` times."""
    pair = PairRecord(a=records[0].key, b=records[1].key, score=1.0)
    dataset = make_dataset(slug, [*records, pair])
    for _ in range(runs):
        run = run_to_end(dataset, **({"head": "identity"} | config))
        assert (run.status, run.error) == ("succeeded", "")
    return dataset


def tiny(shared_data: Path, **kwargs: Any) -> Dataset:
    """Three CLINC150 intents, four queries each, with a pair: dataset ``tiny``."""
    return trained("tiny", clinc_records(shared_data, intents=3, per_intent=4), **kwargs)


def other(shared_data: Path) -> Dataset:
    """Another trained dataset, which no deletion of ``tiny`` may touch."""
    return trained("other", clinc_records(shared_data, intents=2, per_intent=3, split="val"))


def rows_of(slug: str) -> dict[str, int]:
    """How many rows of each kind belong to dataset ``slug`` (by its slug: the id is gone with it)."""
    return {
        "datasets": Dataset.objects.filter(slug=slug).count(),
        "items": Item.objects.filter(dataset__slug=slug).count(),
        "pairs": Pair.objects.filter(dataset__slug=slug).count(),
        "runs": TrainingRun.objects.filter(dataset__slug=slug).count(),
        "versions": ModelVersion.objects.filter(dataset__slug=slug).count(),
        "scores": AnomalyScore.objects.filter(version__dataset__slug=slug).count(),
        "feedback": AnomalyFeedback.objects.filter(item__dataset__slug=slug).count(),
    }


def index_state(*slugs: str, leave_out: str = "") -> dict[str, Any]:
    """Every collection with its point count (but those of dataset ``leave_out``), and the alias of each of
    ``slugs``, in the process's store."""
    store = index.vector_store()
    names = [
        name for name in store.list_collections() if not (leave_out and name.startswith(f"{leave_out}."))
    ]
    return {
        "collections": {name: store.count(name) for name in names},
        "aliases": {slug: store.get_alias(f"{slug}.index") for slug in slugs},
    }


def files(data_dir: Path) -> dict[str, int]:
    """Model files and the embedding cache: {path under the data directory: size}."""
    return {
        path.relative_to(data_dir).as_posix(): path.stat().st_size
        for top in ("models", "embeddings")
        for path in sorted((data_dir / top).rglob("*"))
        if path.is_file()
    }


def everything(data_dir: Path) -> dict[str, Any]:
    """Rows, index and files: what a refused deletion must leave exactly as it was."""
    return {"rows": every_row(), "index": index_state("tiny", "other"), "files": files(data_dir)}


def without(found: dict[str, int], slug: str) -> dict[str, int]:
    return {path: size for path, size in found.items() if not path.startswith(f"models/{slug}/")}


# -- the API --------------------------------------------------------------------------------------------------


def test_deleting_a_trained_dataset_removes_everything_of_it_and_its_slug_trains_again(
    staff_api: APIClient, staff_user: Any, data_dir: Path, shared_data: Path
) -> None:
    # given "tiny" trained twice (v1 a fine-tuned head, v2 the frozen encoder) with pairs, anomaly scores
    # and feedback, and another trained dataset beside it
    dataset = tiny(shared_data, runs=1, head="mlp", epochs=2)
    run = run_to_end(dataset, head="identity")
    assert (run.status, run.error) == ("succeeded", "")
    anomaly_feedback_set(
        item=Item.objects.filter(dataset=dataset).first(), user=staff_user, verdict="anomaly"
    )
    other(shared_data)
    before = {
        "other": rows_of("other"),
        "index": index_state("other", leave_out="tiny"),
        "files": files(data_dir),
    }
    counts = rows_of("tiny")
    assert counts | {"pairs": 0} == {
        "datasets": 1,
        "items": 12,
        "pairs": 0,
        "runs": 2,
        "versions": 2,
        "scores": 24,
        "feedback": 1,
    }
    assert counts["pairs"] > 1  # the imported pair and those the feedback added
    assert index_state("tiny")["aliases"] == {"tiny": "tiny.index_v2"}
    assert {"tiny.index_v1", "tiny.index_v2"} <= set(index_state()["collections"])
    assert {"models/tiny/v1/model.json", "models/tiny/v2/model.json"} <= set(before["files"])

    # when staff delete it
    response = staff_api.delete("/api/datasets/tiny/")

    # then every row, collection and model file of it is gone; the other dataset and the cache are not
    assert response.status_code == 204
    assert rows_of("tiny") == dict.fromkeys(rows_of("tiny"), 0)
    assert rows_of("other") == before["other"]
    assert index_state("tiny", "other") == {
        "collections": before["index"]["collections"],
        "aliases": {"tiny": None, "other": "other.index_v1"},
    }
    assert not (data_dir / "models" / "tiny").exists()
    assert files(data_dir) == without(before["files"], "tiny")
    assert any(path.startswith("embeddings/") for path in files(data_dir))

    # when the slug is created, filled and trained again, as a user would
    created = staff_api.post("/api/datasets/", {"slug": "tiny", "name": "Tiny again"}, format="json")
    items = [{"key": f"new-{i}", "text": r.text, "label": r.label} for i, r in enumerate(_val(shared_data))]
    added = staff_api.post("/api/datasets/tiny/items/bulk/", {"items": items}, format="json")
    started = staff_api.post("/api/datasets/tiny/runs/", {"head": "identity"}, format="json")
    background.drain()

    # then it starts again at version 1, with an index of its own items only, and serves from it
    assert (created.status_code, added.status_code, started.status_code) == (201, 201, 201)
    assert TrainingRun.objects.get(pk=started.json()["id"]).status == "succeeded"
    version = ModelVersion.objects.get(dataset__slug="tiny")
    assert (version.number, version.is_active, version.collection) == (1, True, "tiny.index_v1")
    assert index_state("tiny")["aliases"] == {"tiny": "tiny.index_v1"}
    assert index.vector_store().count("tiny.index_v1") == len(items)
    new_ids = set(Item.objects.filter(dataset__slug="tiny").values_list("id", flat=True))
    first = min(new_ids)
    neighbours = staff_api.get(f"/api/datasets/tiny/items/{first}/neighbours/?limit=3")
    assert neighbours.status_code == 200 and neighbours.json()["version"] == 1
    assert {hit["item"]["id"] for hit in neighbours.json()["results"]} <= new_ids - {first}
    assert len(neighbours.json()["results"]) == 3


def _val(shared_data: Path) -> list[ItemRecord]:
    return clinc_records(shared_data, intents=2, per_intent=4, split="val")


@pytest.mark.parametrize("status", ["queued", "running"])
def test_deleting_a_dataset_while_a_run_of_it_is_queued_or_running_is_409_and_changes_nothing(
    staff_api: APIClient, data_dir: Path, shared_data: Path, status: str
) -> None:
    # given a trained dataset with a retrain queued (or claimed by a worker)
    dataset = tiny(shared_data)
    run = services.training_run_start(dataset=dataset, config={"head": "identity"}, enqueue=False).run
    if status == "running":
        assert services.training_run_claim(run_id=run.pk)
    before = everything(data_dir)

    # when staff delete the dataset
    response = staff_api.delete("/api/datasets/tiny/")

    # then it is refused, says which run to cancel, and nothing changed: rows, index, files
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"dataset 'tiny' cannot be deleted while its training run {run.pk} is {status}: cancel the "
        f"run first (POST /api/runs/{run.pk}/cancel/, or the admin's Cancel action), then delete the "
        "dataset once it has stopped"
    }
    assert everything(data_dir) == before
    assert index_state("tiny")["aliases"] == {"tiny": "tiny.index_v1"}


def test_once_the_queued_run_is_cancelled_the_dataset_deletes(
    staff_api: APIClient, data_dir: Path, shared_data: Path
) -> None:
    dataset = tiny(shared_data)
    run = services.training_run_start(dataset=dataset, config={"head": "identity"}, enqueue=False).run

    refused = staff_api.delete("/api/datasets/tiny/")
    cancelled = staff_api.post(f"/api/runs/{run.pk}/cancel/")
    deleted = staff_api.delete("/api/datasets/tiny/")

    assert (refused.status_code, cancelled.status_code, deleted.status_code) == (409, 200, 204)
    assert rows_of("tiny") == dict.fromkeys(rows_of("tiny"), 0)
    assert index_state("tiny") == {"collections": {}, "aliases": {"tiny": None}}
    assert not (data_dir / "models" / "tiny").exists()


def test_deleting_a_trained_dataset_while_the_vector_store_is_down_is_503_and_changes_nothing(
    staff_api: APIClient, data_dir: Path, shared_data: Path
) -> None:
    # given a trained dataset, indexed in the embedded store
    tiny(shared_data)
    before = everything(data_dir)

    # when staff delete it while the process's store is a Qdrant server that is not there
    with vector_store_at(f"http://127.0.0.1:{closed_port()}") as url:
        response = staff_api.delete("/api/datasets/tiny/")

    # then it is refused with the store's reason, and nothing changed (the index read back from the
    # embedded store it is in)
    assert response.status_code == 503
    assert response.json()["detail"].startswith(
        f"the vector store is unavailable: Qdrant at {url} is unreachable"
    )
    assert response.json()["detail"].endswith(
        "dataset 'tiny' was not deleted, as its index could not be dropped"
    )
    assert everything(data_dir) == before
    assert before["index"]["aliases"]["tiny"] == "tiny.index_v1"


def test_an_untrained_dataset_deletes_without_the_vector_store(
    staff_api: APIClient, data_dir: Path, shared_data: Path
) -> None:
    # given a dataset with items and pairs that was never trained, and the vector store down
    records = _val(shared_data)
    make_dataset("tiny", [*records, PairRecord(a=records[0].key, b=records[1].key, score=0.0)])
    assert rows_of("tiny")["items"] == 8 and rows_of("tiny")["pairs"] == 1

    # when staff delete it
    with vector_store_at(f"http://127.0.0.1:{closed_port()}"):
        response = staff_api.delete("/api/datasets/tiny/")

    # then it is gone as before: an untrained dataset has no index to drop
    assert response.status_code == 204
    assert rows_of("tiny") == dict.fromkeys(rows_of("tiny"), 0)


def test_a_drop_that_fails_after_the_commit_is_logged_and_the_slug_trains_again_over_the_leftovers(
    staff_api: APIClient, data_dir: Path, shared_data: Path, settings: Any, caplog: Any
) -> None:
    # given a dataset trained twice, whose store goes away once its deletion has passed the checks
    tiny(shared_data, runs=2)
    url = f"http://127.0.0.1:{closed_port()}"

    def store_goes_away(sender: Any, **kwargs: Any) -> None:
        index.vector_store_close()
        settings.QDRANT_URL = url

    # when staff delete it
    dataset_deleting.connect(store_goes_away, dispatch_uid="test-store-goes-away")
    try:
        with caplog.at_level(logging.WARNING, logger="apps.training.services"):
            response = staff_api.delete("/api/datasets/tiny/")
    finally:
        dataset_deleting.disconnect(dispatch_uid="test-store-goes-away")
        index.vector_store_close()
        settings.QDRANT_URL = ""

    # then the rows and the files are gone, and each collection left behind is named in a warning
    assert response.status_code == 204
    assert rows_of("tiny") == dict.fromkeys(rows_of("tiny"), 0)
    assert not (data_dir / "models" / "tiny").exists()
    warnings = [r.getMessage() for r in caplog.records if r.name == "apps.training.services"]
    assert [w.split(": ")[0] for w in warnings] == [
        "could not drop collection tiny.index_v1 of deleted dataset tiny",
        "could not drop collection tiny.index_v2 of deleted dataset tiny",
    ]
    assert all(f"Qdrant at {url} is unreachable" in w for w in warnings)
    assert index_state("tiny") == {
        "collections": {"tiny.index_v1": 12, "tiny.index_v2": 12},
        "aliases": {"tiny": "tiny.index_v2"},
    }

    # when a dataset of the same slug is made and trained
    dataset = make_dataset("tiny", _val(shared_data))
    run = run_to_end(dataset, head="identity")

    # then its first version replaces the leftovers instead of colliding with them
    assert (run.status, run.error) == ("succeeded", "")
    assert index_state("tiny") == {"collections": {"tiny.index_v1": 8}, "aliases": {"tiny": "tiny.index_v1"}}
    assert ModelVersion.objects.get(dataset=dataset).number == 1


# -- the admin ------------------------------------------------------------------------------------------------


def test_the_admin_deletes_a_trained_dataset_with_everything_of_it(
    staff_user: Any, data_dir: Path, shared_data: Path
) -> None:
    dataset = tiny(shared_data, runs=2)
    other(shared_data)
    before = {
        "other": rows_of("other"),
        "index": index_state("other", leave_out="tiny"),
        "files": files(data_dir),
    }
    client = session_client(staff_user)
    url = reverse("admin:datasets_dataset_delete", args=[dataset.pk])

    page = client.get(url)
    response = client.post(url, {"post": "yes"}, follow=True)

    # the confirmation page lists what goes, with no "protected" versions nor lacking permissions
    assert page.status_code == 200
    assert (page.context["protected"], page.context["perms_lacking"]) == ([], set())
    assert dict(page.context["model_count"])["model versions"] == 2
    # and once confirmed, all of it is gone, and only it
    assert response.status_code == 200
    assert [str(m) for m in response.context["messages"]] == ["The dataset “tiny” was deleted successfully."]
    assert rows_of("tiny") == dict.fromkeys(rows_of("tiny"), 0)
    assert rows_of("other") == before["other"]
    assert index_state("tiny", "other") == {
        "collections": before["index"]["collections"],
        "aliases": {"tiny": None, "other": "other.index_v1"},
    }
    assert files(data_dir) == without(before["files"], "tiny")


def test_the_admin_deletes_selected_datasets_trained_or_not(
    staff_user: Any, data_dir: Path, shared_data: Path
) -> None:
    trained_one = tiny(shared_data)
    bare = make_dataset("bare", _val(shared_data))
    client = session_client(staff_user)
    action = {"action": "delete_selected", "_selected_action": [trained_one.pk, bare.pk]}

    confirm = client.post(reverse("admin:datasets_dataset_changelist"), action)
    response = client.post(
        reverse("admin:datasets_dataset_changelist"), action | {"post": "yes"}, follow=True
    )

    assert confirm.status_code == 200 and (
        confirm.context["protected"],
        confirm.context["perms_lacking"],
    ) == (
        [],
        set(),
    )
    assert [str(m) for m in response.context["messages"]] == ["Successfully deleted 2 datasets."]
    assert (
        not Dataset.objects.exists()
        and not ModelVersion.objects.exists()
        and not TrainingRun.objects.exists()
    )
    assert index_state("tiny") == {"collections": {}, "aliases": {"tiny": None}}
    assert not (data_dir / "models" / "tiny").exists()


def test_the_admin_refuses_to_delete_a_dataset_that_trains_says_why_and_changes_nothing(
    staff_user: Any, data_dir: Path, shared_data: Path
) -> None:
    # given a trained dataset with a retrain queued, and an untrained one
    dataset = tiny(shared_data)
    bare = make_dataset("bare", _val(shared_data))
    run = services.training_run_start(dataset=dataset, config={"head": "identity"}, enqueue=False).run
    client = session_client(staff_user)
    before = everything(data_dir)
    message = (
        f"dataset 'tiny' cannot be deleted while its training run {run.pk} is queued: cancel the run first"
    )
    changelist = reverse("admin:datasets_dataset_changelist")
    action = {"action": "delete_selected", "_selected_action": [dataset.pk, bare.pk]}

    # when staff delete it from its page, and both from the list (asking, then confirming)
    single = client.post(
        reverse("admin:datasets_dataset_delete", args=[dataset.pk]), {"post": "yes"}, follow=True
    )
    ask = client.post(changelist, action, follow=True)
    confirm = client.post(changelist, action | {"post": "yes"}, follow=True)

    # then each says why, and nothing was deleted: not even the untrained dataset selected with it
    for response in (single, ask, confirm):
        shown = [str(m) for m in response.context["messages"]]
        assert response.status_code == 200
        assert len(shown) == 1 and shown[0].startswith(message), shown
    assert single.redirect_chain == [(reverse("admin:datasets_dataset_delete", args=[dataset.pk]), 302)]
    assert everything(data_dir) == before
    assert not LogEntry.objects.exists()
