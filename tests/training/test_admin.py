"""Retraining from the Django admin."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from apps.training.models import ModelVersion, TrainingRun
from tests.factories import DatasetFactory, ItemFactory

pytestmark = pytest.mark.django_db


def test_the_retrain_action_queues_one_run_per_dataset_and_says_so(client: Client, staff_user: Any) -> None:
    ready = DatasetFactory(slug="ready")
    for label in ("a", "b"):
        ItemFactory.create_batch(2, dataset=ready, label=label)
    bare = DatasetFactory(slug="bare")
    client.force_login(staff_user)

    response = client.post(
        reverse("admin:datasets_dataset_changelist"),
        {"action": "retrain_datasets", "_selected_action": [ready.pk, bare.pk]},
        follow=True,
    )

    messages = [str(m) for m in response.context["messages"]]
    run = TrainingRun.objects.get()
    assert (run.dataset, run.status, run.requested_by) == (ready, "queued", staff_user)
    assert f"ready: retrain run {run.pk} started." in messages
    assert any(m.startswith("dataset 'bare' has nothing to train on") for m in messages)


def test_training_pages_render(client: Client, staff_user: Any) -> None:
    dataset = DatasetFactory(slug="d")
    run = TrainingRun.objects.create(dataset=dataset, status=TrainingRun.Status.SUCCEEDED)
    version = ModelVersion.objects.create(
        dataset=dataset, run=run, number=1, artifact_path="/x", collection="d.index_v1"
    )
    client.force_login(staff_user)

    pages = [
        reverse("admin:training_trainingrun_changelist"),
        reverse("admin:training_trainingrun_change", args=[run.pk]),
        reverse("admin:training_modelversion_changelist"),
        reverse("admin:training_modelversion_change", args=[version.pk]),
    ]

    assert {page: client.get(page).status_code for page in pages} == dict.fromkeys(pages, 200)


def test_activating_a_version_whose_index_is_gone_says_why_instead_of_failing(
    client: Client, staff_user: Any, data_dir: Any
) -> None:
    # given a version whose collection was pruned from the vector store
    dataset = DatasetFactory(slug="d")
    run = TrainingRun.objects.create(dataset=dataset, status=TrainingRun.Status.SUCCEEDED)
    version = ModelVersion.objects.create(
        dataset=dataset, run=run, number=1, artifact_path="models/d/v1", collection="d.index_v1"
    )
    client.force_login(staff_user)

    # when staff activate it from the admin
    response = client.post(
        reverse("admin:training_modelversion_changelist"),
        {"action": "activate_version", "_selected_action": [version.pk]},
        follow=True,
    )

    # then the page says it cannot be activated and nothing changed
    messages = [str(m) for m in response.context["messages"]]
    assert response.status_code == 200
    assert len(messages) == 1 and messages[0].startswith("cannot activate d v1: ")
    assert not ModelVersion.objects.filter(is_active=True).exists()
