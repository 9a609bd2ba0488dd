"""Staff-only retraining API: start, list, cancel; versions; the job queue being down."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from apps.training.models import ModelVersion, TrainingRun
from tests.conftest import db_snapshot
from tests.factories import DatasetFactory, ItemFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def dataset() -> Any:
    dataset = DatasetFactory(slug="d")
    for label in ("a", "b"):
        ItemFactory.create_batch(2, dataset=dataset, label=label)
    return dataset


def test_staff_start_a_run_and_a_second_request_returns_it(staff_api: APIClient, dataset: Any) -> None:
    first = staff_api.post("/api/datasets/d/runs/", {"epochs": 3, "loss": "triplet"}, format="json")
    second = staff_api.post("/api/datasets/d/runs/", {}, format="json")
    listed = staff_api.get("/api/datasets/d/runs/").json()

    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["id"] == first.json()["id"]
    assert first.json()["config"] == {"encoder": "minilm", "epochs": 3, "loss": "triplet"}
    assert first.json()["requested_by"] == "admin" and first.json()["status"] == "queued"
    assert [r["id"] for r in listed["results"]] == [first.json()["id"]]


def test_cancel_and_detail(staff_api: APIClient, dataset: Any) -> None:
    run_id = staff_api.post("/api/datasets/d/runs/", {}, format="json").json()["id"]

    cancelled = staff_api.post(f"/api/runs/{run_id}/cancel/")
    detail = staff_api.get(f"/api/runs/{run_id}/")

    assert cancelled.json()["status"] == "cancelled" and detail.json()["status"] == "cancelled"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            {"loss": "hinge"},
            "unknown loss 'hinge'; valid: contrastive, cosent, mnrl, triplet, supcon, arcface",
        ),
        ({"head": "transformer"}, "unknown head 'transformer'; valid: identity, skip, linear, mlp"),
        ({"epochs": 0}, "greater than or equal to 1"),
        # torch cannot seed with it: refused now, not a failed run later (found by tests/test_api_fuzz.py)
        ({"seed": 2**64}, "less than or equal to 4294967295"),
    ],
)
def test_bad_options_are_400_and_create_nothing(
    staff_api: APIClient, dataset: Any, payload: Any, message: str
) -> None:
    before = db_snapshot()

    response = staff_api.post("/api/datasets/d/runs/", payload, format="json")

    assert response.status_code == 400 and message in str(response.json())
    assert db_snapshot() == before and not TrainingRun.objects.exists()


def test_a_run_nobody_requested_through_the_api_is_listed_as_the_schema_says(
    staff_api: APIClient, dataset: Any
) -> None:
    # given a run started by `manage.py train` (no requesting user)
    run = TrainingRun.objects.create(dataset=dataset, status=TrainingRun.Status.SUCCEEDED)

    # when staff read it, and the schema of what they read
    detail = staff_api.get(f"/api/runs/{run.pk}/")
    schema = staff_api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    # then its requester is null, which the schema allows (it said "string"; found by tests/test_api_fuzz.py)
    assert detail.status_code == 200 and detail.json()["requested_by"] is None
    assert schema["components"]["schemas"]["TrainingRun"]["properties"]["requested_by"]["nullable"] is True


def test_a_dataset_with_nothing_to_learn_is_refused(staff_api: APIClient) -> None:
    ItemFactory(dataset=DatasetFactory(slug="bare"))

    response = staff_api.post("/api/datasets/bare/runs/", {}, format="json")

    assert response.status_code == 400 and "has nothing to train on" in response.json()["detail"]
    assert not TrainingRun.objects.exists()


def test_an_unreachable_job_queue_is_503_and_creates_nothing(staff_api: APIClient, dataset: Any) -> None:
    # A broker on a closed loopback port: the real client, really failing to connect.
    with override_settings(CELERY_BROKER_URL="redis://127.0.0.1:1/0"):
        response = staff_api.post("/api/datasets/d/runs/", {}, format="json")

    assert response.status_code == 503 and "the job queue is unreachable" in response.json()["detail"]
    assert not TrainingRun.objects.exists()


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/api/datasets/d/runs/"),
        ("post", "/api/datasets/d/runs/"),
        ("get", "/api/runs/1/"),
        ("post", "/api/runs/1/cancel/"),
        ("get", "/api/datasets/d/versions/"),
        ("post", "/api/versions/1/activate/"),
        ("post", "/api/datasets/d/rollback/"),
    ],
)
def test_labellers_cannot_reach_retraining(
    labeller_api: APIClient, dataset: Any, method: str, url: str
) -> None:
    TrainingRun.objects.create(dataset=dataset, pk=1, status=TrainingRun.Status.FAILED)
    before = db_snapshot()

    response = getattr(labeller_api, method)(url, {}, format="json")

    assert response.status_code == 403 and db_snapshot() == before


def test_rollback_without_an_active_model_says_so(staff_api: APIClient, dataset: Any) -> None:
    response = staff_api.post("/api/datasets/d/rollback/")

    assert response.status_code == 400
    assert response.json()["detail"] == "dataset 'd' has no active model to roll back from"
    assert not ModelVersion.objects.exists()
