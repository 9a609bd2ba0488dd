"""The job queue (Redis) unreachable while a broker is configured: starting a retrain is refused with a
clear message by the API (503), the training console, the admin action and ``manage.py train``, and
nothing is created: no run, no version, no other row.

"Unreachable" is real: the broker URL names a loopback port where nothing listens, or a real
``redis-server`` that this test stops between the service's broker check and the publish of the job.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client, override_settings
from rest_framework.test import APIClient

from apps.training.models import ModelVersion, TrainingRun
from simapp.celery import app as celery_app
from tests.conftest import celery_connections_reset
from tests.discovery.conftest import state
from tests.factories import DatasetFactory, ItemFactory
from tests.faults.conftest import closed_port

UNREACHABLE = "the job queue is unreachable"


@pytest.fixture
def dataset(db: Any) -> Any:
    dataset = DatasetFactory(slug="d")
    for label in ("a", "b"):
        ItemFactory.create_batch(2, dataset=dataset, label=label)
    return dataset


def everything() -> dict[str, Any]:
    """Every row a retrain could create or change."""
    return state() | {
        "runs": list(TrainingRun.objects.order_by("id").values_list()),
        "all_versions": list(ModelVersion.objects.order_by("id").values_list()),
    }


def use_broker(url: str) -> Any:
    """Settings and the Celery app both pointed at ``url`` (the app reads its broker once, at import)."""
    celery_connections_reset()  # no pooled producer of a broker an earlier test used
    previous = celery_app.conf.broker_url
    celery_app.conf.broker_url = url
    overridden = override_settings(CELERY_BROKER_URL=url)

    class _Using:
        def __enter__(self) -> str:
            overridden.enable()
            return url

        def __exit__(self, *exc: object) -> None:
            overridden.disable()
            celery_connections_reset()
            celery_app.conf.broker_url = previous

    return _Using()


@pytest.fixture
def broker_down() -> Iterator[str]:
    with use_broker(f"redis://127.0.0.1:{closed_port()}/0") as url:
        yield url


@pytest.mark.django_db
def test_the_api_answers_503_and_creates_nothing(
    staff_api: APIClient, dataset: Any, broker_down: str
) -> None:
    before = everything()

    response = staff_api.post("/api/datasets/d/runs/", {"epochs": 2}, format="json")

    assert response.status_code == 503
    assert response.json() == {"detail": f"{UNREACHABLE} (OperationalError); try again when it is back"}
    assert everything() == before and not TrainingRun.objects.exists()


@pytest.mark.django_db
def test_the_console_form_says_why_and_creates_nothing(
    staff_client: Client, dataset: Any, broker_down: str
) -> None:
    before = everything()

    response = staff_client.post("/datasets/d/training/", {"head": "mlp", "seed": 0})

    assert response.status_code == 400
    assert f"{UNREACHABLE} (OperationalError); try again when it is back" in response.content.decode()
    assert everything() == before and not TrainingRun.objects.exists()


@pytest.mark.django_db
def test_the_admin_action_says_why_and_creates_nothing(
    staff_client: Client, dataset: Any, broker_down: str
) -> None:
    before = everything()

    response = staff_client.post(
        "/admin/datasets/dataset/",
        {"action": "retrain_datasets", "_selected_action": [dataset.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert [str(m) for m in response.context["messages"]] == [
        f"{UNREACHABLE} (OperationalError); try again when it is back"
    ]
    assert everything() == before and not TrainingRun.objects.exists()


@pytest.mark.django_db
def test_the_train_command_fails_with_the_reason_and_creates_nothing(dataset: Any, broker_down: str) -> None:
    before = everything()

    with pytest.raises(
        CommandError, match=f"^{UNREACHABLE} \\(OperationalError\\); try again when it is back$"
    ):
        call_command("train", "d", "--epochs", "2")  # with a broker and no --wait: queue it for a worker

    assert everything() == before and not TrainingRun.objects.exists()


# -- the broker goes away between the check and the publish ---------------------------------------------------


class RedisServer:
    """A real ``redis-server`` of this test's own on a free loopback port; ``stop`` kills it."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (CI installs it: .ci/run)"
        self.port = closed_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis.from_url(self.url, socket_connect_timeout=1).ping()
                break
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.django_db(transaction=True)
def test_a_broker_lost_after_the_check_leaves_no_run_behind(
    staff_api: APIClient, dataset: Any, redis_server: RedisServer
) -> None:
    # The run's row is written after the broker answered the check, and the job is published when that
    # row commits. The broker dies in between: when the INSERT of the run goes to the database (the
    # wrapper is Django's hook around every query of this connection; the request runs in this thread).
    def lose_the_broker_on_insert(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.lstrip().upper().startswith("INSERT") and '"training_trainingrun"' in sql:
            redis_server.stop()
        return execute(sql, params, many, context)

    before = everything()
    with use_broker(redis_server.url), connection.execute_wrapper(lose_the_broker_on_insert):
        response = staff_api.post("/api/datasets/d/runs/", {"epochs": 2}, format="json")

    assert redis_server.process.returncode is not None  # it really went away mid-request
    assert response.status_code == 503
    assert response.json()["detail"].startswith(f"{UNREACHABLE} (OperationalError)")
    # A queued run that no worker will ever get would block every later retrain of the dataset.
    assert everything() == before and not TrainingRun.objects.exists()


@pytest.mark.django_db
def test_changing_a_served_datasets_items_answers_503_and_changes_nothing(
    staff_api: APIClient, dataset: Any, broker_down: str, tmp_path: Any
) -> None:
    # An active version is all the refusal looks at: the index it serves would miss the change.
    run = TrainingRun.objects.create(dataset=dataset, status=TrainingRun.Status.SUCCEEDED)
    ModelVersion.objects.create(dataset=dataset, run=run, number=1, collection="d-v1", is_active=True)
    item = dataset.items.first()
    more = tmp_path / "more.jsonl"
    more.write_text('{"key": "more", "text": "one more"}\n', encoding="utf-8")
    before = everything()

    created = staff_api.post("/api/datasets/d/items/", {"key": "new", "text": "hello"}, format="json")
    bulk = staff_api.post("/api/datasets/d/items/bulk/", {"items": [{"text": "hi"}]}, format="json")
    deleted = staff_api.delete(f"/api/datasets/d/items/{item.pk}/")
    with pytest.raises(CommandError, match=UNREACHABLE):
        call_command("import_dataset", "d", str(more), "--format", "jsonl")

    for response in (created, bulk, deleted):
        assert response.status_code == 503 and UNREACHABLE in response.json()["detail"]
    assert everything() == before


@pytest.mark.django_db
def test_items_of_a_dataset_nothing_serves_yet_need_no_queue(
    staff_api: APIClient, dataset: Any, broker_down: str
) -> None:
    created = staff_api.post("/api/datasets/d/items/", {"key": "new", "text": "hello"}, format="json")

    assert created.status_code == 201 and dataset.items.filter(key="new").exists()


@pytest.mark.django_db
def test_the_admin_refuses_item_changes_of_a_served_dataset_and_changes_nothing(
    staff_client: Client, dataset: Any, broker_down: str
) -> None:
    run = TrainingRun.objects.create(dataset=dataset, status=TrainingRun.Status.SUCCEEDED)
    ModelVersion.objects.create(dataset=dataset, run=run, number=1, collection="d-v1", is_active=True)
    item = dataset.items.order_by("id").first()
    form = {"key": item.key, "text": "edited", "vector": "null", "label": item.label, "metadata": "{}"}
    before = everything()

    added = staff_client.post("/admin/datasets/item/add/", form | {"dataset": dataset.pk, "key": "new"})
    changed = staff_client.post(f"/admin/datasets/item/{item.pk}/change/", form)
    deleted = staff_client.post(f"/admin/datasets/item/{item.pk}/delete/", {"post": "yes"}, follow=True)
    action = {"action": "delete_selected", "_selected_action": [item.pk], "post": "yes"}
    deleted_many = staff_client.post("/admin/datasets/item/", action, follow=True)

    for response in (added, changed):  # the form again, with the reason
        assert response.status_code == 200
        assert f"the items were not changed: {UNREACHABLE}" in response.content.decode()
    for response in (deleted, deleted_many):
        assert response.status_code == 200
        said = [str(m) for m in response.context["messages"]]
        assert len(said) == 1 and said[0].startswith(f"the items were not changed: {UNREACHABLE}")
    assert everything() == before
