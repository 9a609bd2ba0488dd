"""The training console (staff only): start, watch, cancel; compare, activate and roll back versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.training.models import ModelVersion, TrainingRun
from tests.conftest import db_snapshot
from tests.factories import DatasetFactory, ItemFactory, UserFactory
from tests.training.conftest import (
    clinc_records,
    data_dir,  # noqa: F401
    make_dataset,
    run_to_end,
)

pytestmark = pytest.mark.django_db

CONSOLE = "/datasets/d/training/"


@pytest.fixture
def dataset() -> Any:
    dataset = DatasetFactory(slug="d", name="Demo")
    for label in ("a", "b"):
        ItemFactory.create_batch(2, dataset=dataset, label=label)
    return dataset


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_anonymous_visitors_are_sent_to_log_in(client: Client, dataset: Any) -> None:
    response = client.get(CONSOLE)

    assert response.status_code == 302 and response["Location"] == f"/accounts/login/?next={CONSOLE}"


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", CONSOLE),
        ("post", CONSOLE),
        ("get", "/datasets/d/training/live/"),
        ("post", "/datasets/d/training/runs/1/cancel/"),
        ("post", "/datasets/d/training/versions/1/activate/"),
        ("post", "/datasets/d/training/rollback/"),
    ],
)
def test_the_console_is_forbidden_to_non_staff_and_changes_nothing(
    labeller_client: Client, dataset: Any, method: str, url: str
) -> None:
    response = getattr(labeller_client, method)(url, {"epochs": "2"} if method == "post" else None)

    assert response.status_code == 403
    assert not TrainingRun.objects.exists()


def test_non_staff_see_no_training_link_and_staff_do(
    labeller_client: Client, dataset: Any, staff_user: Any
) -> None:
    as_labeller = labeller_client.get("/datasets/d/").content.decode()
    labeller_client.force_login(staff_user)
    as_staff = labeller_client.get("/datasets/d/").content.decode()

    assert CONSOLE not in as_labeller and "Start retrain" not in as_labeller
    assert f'<a href="{CONSOLE}">Training</a>' in as_staff


def test_the_console_renders_the_form_with_a_label_for_every_control(
    staff_client: Client, dataset: Any
) -> None:
    response = staff_client.get(CONSOLE)
    html = response.content.decode()

    assert response.status_code == 200
    for name in ("head", "loss", "epochs", "lr", "batch_size", "seed"):
        assert f'<label for="id_{name}">' in html
    assert '<option value="supcon">supcon</option>' in html and 'value="identity"' in html
    assert "No runs yet." in html and "No model versions yet." in html
    assert 'hx-trigger="every 1s"' not in html  # nothing to poll


def test_start_queues_a_run_with_the_options_and_shows_it(staff_client: Client, dataset: Any) -> None:
    response = staff_client.post(CONSOLE, {"head": "linear", "loss": "triplet", "epochs": "3", "seed": "7"})

    run = TrainingRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"{CONSOLE}?run={run.pk}"
    assert run.config == {"encoder": "minilm", "head": "linear", "loss": "triplet", "epochs": 3, "seed": 7}
    assert run.status == "queued" and run.requested_by.username == "admin"
    page = staff_client.get(response["Location"])
    html = page.content.decode()
    assert messages_of(page) == [f"Run {run.pk} queued: it starts as soon as the worker is free."]
    assert 'hx-trigger="every 1s"' in html and f'hx-get="/datasets/d/training/live/?run={run.pk}"' in html
    assert f'id="cancel-run-{run.pk}"' in html


def test_a_second_start_while_one_is_queued_shows_that_run(staff_client: Client, dataset: Any) -> None:
    staff_client.post(CONSOLE, {"head": "mlp"}, follow=True)
    again = staff_client.post(CONSOLE, {"head": "mlp", "epochs": "9"}, follow=True)

    run = TrainingRun.objects.get()
    assert messages_of(again) == [f"Run {run.pk} was already queued: it is shown below."]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"head": "mlp", "epochs": "0"}, "Ensure this value is greater than or equal to 1."),
        ({"head": "mlp", "lr": "fast"}, "Enter a number."),
        ({"head": "mlp", "lr": "2"}, "Ensure this value is less than or equal to 1.0."),
        ({"head": "mlp", "batch_size": "1"}, "Ensure this value is greater than or equal to 2."),
        (
            {"head": "mlp", "loss": "hinge"},
            "Select a valid choice. hinge is not one of the available choices.",
        ),
        ({"head": "transformer"}, "Select a valid choice. transformer is not one of the available choices."),
    ],
)
def test_bad_options_show_the_error_and_start_nothing(
    staff_client: Client, dataset: Any, data: dict[str, str], message: str
) -> None:
    before = db_snapshot()

    response = staff_client.post(CONSOLE, data)
    html = response.content.decode()

    assert response.status_code == 400
    assert message in html and 'role="alert"' in html and "No run was started" in html
    assert 'aria-invalid="true"' in html
    assert not TrainingRun.objects.exists() and db_snapshot() == before


def test_nothing_to_train_on_shows_the_reason_and_the_identity_hint(staff_client: Client) -> None:
    ItemFactory(dataset=DatasetFactory(slug="bare"))

    shown = staff_client.get("/datasets/bare/training/")
    refused = staff_client.post("/datasets/bare/training/", {"head": "mlp"})

    assert refused.status_code == 400 and not TrainingRun.objects.exists()
    html = refused.content.decode()
    assert 'role="alert"' in html and "dataset &#x27;bare&#x27; has nothing to train on" in html
    assert "choose the head “identity”" in html
    # Before anyone tries, the page says so too, and offers the identity head.
    assert "has nothing to train on" in shown.content.decode()
    assert shown.context["form"]["head"].value() == "identity"


def test_the_identity_head_starts_on_items_alone(staff_client: Client) -> None:
    ItemFactory(dataset=DatasetFactory(slug="bare"))

    response = staff_client.post("/datasets/bare/training/", {"head": "identity"})

    assert response.status_code == 302
    assert TrainingRun.objects.get().config == {"encoder": "minilm", "head": "identity"}


def test_cancel_ends_a_queued_run_through_the_service(staff_client: Client, dataset: Any) -> None:
    run = TrainingRun.objects.create(dataset=dataset)

    response = staff_client.post(f"/datasets/d/training/runs/{run.pk}/cancel/", follow=True)

    run.refresh_from_db()
    assert (run.status, run.error) == ("cancelled", "cancelled before it started")
    assert messages_of(response) == [f"Run {run.pk} cancelled before it started."]
    assert f'id="cancel-run-{run.pk}"' not in response.content.decode()


def test_cancel_asks_a_running_run_to_stop(staff_client: Client, dataset: Any) -> None:
    run = TrainingRun.objects.create(dataset=dataset, status="running", started_at=timezone.now())

    response = staff_client.post(f"/datasets/d/training/runs/{run.pk}/cancel/", follow=True)

    run.refresh_from_db()
    assert run.status == "running" and run.cancel_requested
    assert messages_of(response) == [f"Run {run.pk} stops at its next batch."]
    assert "Stopping…" in response.content.decode()


def test_cancel_of_another_datasets_run_is_404(staff_client: Client, dataset: Any) -> None:
    other = TrainingRun.objects.create(dataset=DatasetFactory(slug="other"))

    response = staff_client.post(f"/datasets/d/training/runs/{other.pk}/cancel/")

    assert response.status_code == 404
    other.refresh_from_db()
    assert other.status == "queued"


def test_the_live_partial_shows_progress_and_keeps_polling_while_running(
    staff_client: Client, dataset: Any
) -> None:
    now = timezone.now()
    run = TrainingRun.objects.create(
        dataset=dataset,
        status="running",
        stage="train",
        progress=0.42,
        stage_done=12,
        stage_total=40,
        loss_history=[2.5, 1.75],
        started_at=now - timezone.timedelta(seconds=75),
        heartbeat_at=now,
    )

    html = staff_client.get(f"/datasets/d/training/live/?run={run.pk}").content.decode()

    assert 'hx-trigger="every 1s"' in html
    assert "Training · 12 / 40" in html and 'value="42"' in html and "42%" in html
    assert "elapsed 1 min 15 s" in html
    assert "<polyline" in html and "Loss over 2 epochs: from 2.5 to 1.75" in html
    assert 'id="versions"' not in html  # the versions table comes only when the run has ended


def test_the_live_partial_stops_polling_and_brings_the_versions_when_the_run_ended(
    staff_client: Client, dataset: Any
) -> None:
    run = TrainingRun.objects.create(
        dataset=dataset,
        status="succeeded",
        stage="done",
        progress=1.0,
        started_at=timezone.now(),
        finished_at=timezone.now(),
        metrics={"version": 1, "metric": "knn_accuracy", "value": 0.9, "frozen": 0.8},
    )
    ModelVersion.objects.create(
        dataset=dataset,
        run=run,
        number=1,
        artifact_path="x",
        collection="d.index_v1",
        is_active=True,
        metrics={
            "metric": "knn_accuracy",
            "value": 0.9125,
            "frozen": 0.8,
            "epochs_run": 4,
            "best_epoch": 3,
            "items": 4,
            "train_seconds": 2.5,
            "anomaly": {"scored": 4, "k": 10, "feedback_normal": 1, "feedback_anomaly": 0},
        },
    )

    html = staff_client.get("/datasets/d/training/live/").content.decode()

    assert "hx-trigger" not in html.split('id="versions"')[0]
    assert (
        '<section id="versions" class="versions" aria-labelledby="versions-heading" hx-swap-oob="true">'
        in html
    )
    assert "Created <strong>v1</strong>: knn_accuracy 0.900" in html
    assert "Serving <strong>v1</strong> · knn_accuracy 0.912" in html
    for cell in ("0.912", "0.800", "4 (best 3)", "2 s", "4 scored, k=10, 1 feedback"):
        assert cell in html


def test_a_failed_run_shows_its_error(staff_client: Client, dataset: Any) -> None:
    run = TrainingRun.objects.create(
        dataset=dataset, status="failed", finished_at=timezone.now(), error="ValueError: Unknown encoder 'x'"
    )

    html = staff_client.get(f"{CONSOLE}?run={run.pk}").content.decode()

    assert "Why it failed" in html and "ValueError: Unknown encoder &#x27;x&#x27;" in html


@pytest.mark.parametrize("selected", ["abc", "99999999999999999999999", "0"])
def test_an_unknown_run_in_the_query_shows_the_latest(
    staff_client: Client, dataset: Any, selected: str
) -> None:
    run = TrainingRun.objects.create(dataset=dataset)

    response = staff_client.get(f"{CONSOLE}?run={selected}")

    assert response.status_code == 200 and response.context["selected"].run == run


def test_rollback_without_an_active_version_says_why(staff_client: Client, dataset: Any) -> None:
    response = staff_client.post("/datasets/d/training/rollback/", follow=True)

    assert response.status_code == 200
    assert messages_of(response) == ["Cannot roll back: dataset 'd' has no active model to roll back from"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_activate_and_roll_back_go_through_the_index(
    client: Client,
    data_dir: Path,  # noqa: F811
    shared_data: Path,
) -> None:
    client.force_login(UserFactory(username="admin", is_staff=True))
    dataset = make_dataset("clinc", clinc_records(shared_data, intents=4, per_intent=6))
    run_to_end(dataset, epochs=1)
    run_to_end(dataset, epochs=1)
    v1, v2 = ModelVersion.objects.order_by("number")

    page = client.get("/datasets/clinc/training/").content.decode()
    rolled = client.post("/datasets/clinc/training/rollback/", follow=True)
    active_after_rollback = list(ModelVersion.objects.filter(is_active=True).values_list("number", flat=True))
    activated = client.post(f"/datasets/clinc/training/versions/{v2.pk}/activate/", follow=True)

    assert "Activate v1" in page and "Activate v2" not in page and "Roll back to the previous version" in page
    assert messages_of(rolled) == ["Rolled back: v1 is active again."] and active_after_rollback == [1]
    assert messages_of(activated) == ["v2 is active: searches use its index now."]
    assert list(ModelVersion.objects.filter(is_active=True).values_list("number", flat=True)) == [2]

    # A version whose index is gone cannot serve: the message says why, and v2 keeps serving.
    ModelVersion.objects.filter(pk=v1.pk).update(collection="clinc.index_gone")
    refused = client.post(f"/datasets/clinc/training/versions/{v1.pk}/activate/", follow=True)
    assert messages_of(refused)[0].startswith("Cannot activate v1: ")
    assert list(ModelVersion.objects.filter(is_active=True).values_list("number", flat=True)) == [2]
