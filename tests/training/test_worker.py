"""A real Celery worker process, a real Redis broker: a small retrain end to end.

The worker owns the embedded vector store while it runs (SIMAPP_WORKER_OWNS_STORE), so this test checks
the index only after the worker has exited, as DESIGN.md describes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test import override_settings
from rest_framework.test import APIClient

from apps.training import services
from apps.training.index import index_alias, vector_store, vector_store_close
from apps.training.models import ModelVersion, TrainingRun
from bench.database import database_url
from simapp.celery import app as celery_app
from tests.conftest import REPO, celery_connections_reset
from tests.training.conftest import clinc_records, make_dataset

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

BROKER = os.environ.get("SIMAPP_TEST_BROKER_URL", "redis://127.0.0.1:6379/15")
HEARTBEAT_INTERVAL_S = 1  # the workers' (SIMAPP_HEARTBEAT_INTERVAL_S below)
HEARTBEAT_TIMEOUT_S = 5  # this process's, where runs are read (and reaped)


@pytest.fixture
def broker() -> Iterator[str]:
    client = redis.Redis.from_url(BROKER, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.skip(f"no Redis reachable at {BROKER} ({exc}); start one to run the real-worker test")
    client.flushdb()  # no leftover messages from an earlier run
    celery_connections_reset()  # no pooled producer of a broker an earlier test used (or killed)
    previous = celery_app.conf.broker_url
    celery_app.conf.broker_url = BROKER
    yield BROKER
    celery_connections_reset()
    celery_app.conf.broker_url = previous
    client.flushdb()


@pytest.fixture
def start_worker(broker: str, data_dir: Path, tmp_path: Path) -> Iterator[Any]:
    """Starts real worker processes (as many as a test asks for) and stops any still running at the end."""
    env = dict(os.environ) | {
        "CELERY_BROKER_URL": broker,
        "SIMAPP_WORKER_OWNS_STORE": "1",
        "SIMAPP_DATA_DIR": str(data_dir),
        "DATABASE_URL": database_url(settings.DATABASES["default"]),
        "SIMAPP_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_INTERVAL_S),
    }
    env.pop("QDRANT_URL", None)
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        log = (tmp_path / "worker.log").open("ab")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "simapp",
                "worker",
                "-Q",
                "gpu,default",
                "--pool",
                "solo",
                "--loglevel",
                "INFO",
                "-n",
                f"test-{os.getpid()}-{len(started)}@%h",
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def worker(start_worker: Any) -> subprocess.Popen[bytes]:
    return start_worker()


def wait_for(
    run_id: int, statuses: set[str], timeout: float, worker: subprocess.Popen[bytes], log: Path
) -> TrainingRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = TrainingRun.objects.get(pk=run_id)
        if run.status in statuses:
            return run
        assert worker.poll() is None, f"the worker exited early:\n{log.read_text()[-3000:]}"
        connection.close()
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} still {run.status} after {timeout} s:\n{log.read_text()[-3000:]}")


def test_a_real_worker_retrains_and_activates(
    worker: Any, broker: str, data_dir: Path, shared_data: Path, tmp_path: Path
) -> None:
    dataset = make_dataset("clinc", clinc_records(shared_data, intents=4, per_intent=8))

    with override_settings(CELERY_BROKER_URL=broker):
        run = services.training_run_start(dataset=dataset, config={"epochs": 2}).run

    finished = wait_for(run.pk, {"succeeded", "failed", "cancelled"}, 240, worker, tmp_path / "worker.log")
    assert (finished.status, finished.error) == ("succeeded", "")
    assert finished.worker and finished.worker != services.worker_name()  # another process did it
    assert list(ModelVersion.objects.values_list("number", "is_active")) == [(1, True)]

    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)
    store = vector_store()  # ours to open now that the worker has let go of it
    assert store.get_alias(index_alias(dataset)) == "clinc.index_v1" and store.count("clinc.index") == 32


def neighbours(api: APIClient, item_id: int) -> dict[str, Any]:
    """The dataset's answer for one item through the API: which version serves, and the neighbours."""
    response = api.get(f"/api/datasets/clinc/items/{item_id}/neighbours/?limit=5")
    assert response.status_code == 200, response.content
    return response.json()


def test_a_killed_worker_fails_its_run_with_the_reason_and_a_new_retrain_succeeds(
    start_worker: Any,
    broker: str,
    data_dir: Path,
    shared_data: Path,
    tmp_path: Path,
    staff_api: APIClient,
    labeller_api: APIClient,
) -> None:
    dataset = make_dataset("clinc", clinc_records(shared_data, intents=4, per_intent=8))
    item = dataset.items.order_by("id").first()
    log = tmp_path / "worker.log"
    worker = start_worker()
    with override_settings(CELERY_BROKER_URL=broker):
        first = services.training_run_start(dataset=dataset, config={"epochs": 1}).run
    assert wait_for(first.pk, {"succeeded", "failed"}, 240, worker, log).status == "succeeded"

    with override_settings(CELERY_BROKER_URL=broker):
        doomed = services.training_run_start(dataset=dataset, config={"epochs": 200}).run
    wait_for(doomed.pk, {"running"}, 120, worker, log)
    # Alive, it keeps counting as running however often it is looked at (every read of a run reaps).
    with override_settings(SIMAPP_HEARTBEAT_TIMEOUT_S=HEARTBEAT_TIMEOUT_S):
        for _ in range(3):
            assert staff_api.get(f"/api/runs/{doomed.pk}/").json()["status"] == "running"
            time.sleep(HEARTBEAT_INTERVAL_S)
    worker.send_signal(signal.SIGKILL)  # no clean-up, no last words: like an OOM kill or a lost machine
    killed_at = time.monotonic()
    worker.wait(timeout=30)

    # Whoever looks next (here the API, as the console's live view does) sees it failed, with the reason,
    # once its heartbeat is older than the timeout.
    with override_settings(SIMAPP_HEARTBEAT_TIMEOUT_S=HEARTBEAT_TIMEOUT_S):
        while (seen := staff_api.get(f"/api/runs/{doomed.pk}/").json())["status"] == "running":
            assert time.monotonic() - killed_at < HEARTBEAT_TIMEOUT_S + 10, "the dead run was never failed"
            time.sleep(0.5)
    failed_after = time.monotonic() - killed_at
    assert seen["status"] == "failed"
    assert seen["error"] == (
        f"the worker stopped responding (no heartbeat for more than {HEARTBEAT_TIMEOUT_S} s); "
        "it was probably killed"
    )
    # Within the timeout of its last heartbeat (one interval before the kill at most), plus a poll or two.
    assert failed_after <= HEARTBEAT_TIMEOUT_S + 6
    assert list(ModelVersion.objects.values_list("number", "is_active")) == [(1, True)]
    # The active version still serves: the worker's store is ours to open now that it is dead.
    assert neighbours(labeller_api, item.pk)["version"] == 1
    assert vector_store().get_alias(index_alias(dataset)) == "clinc.index_v1"
    vector_store_close()  # the replacement worker owns the store from now on

    replacement = start_worker()
    with override_settings(CELERY_BROKER_URL=broker):
        again = services.training_run_start(dataset=dataset, config={"epochs": 1}).run
    assert wait_for(again.pk, {"succeeded", "failed"}, 240, replacement, log).status == "succeeded"
    assert list(ModelVersion.objects.filter(is_active=True).values_list("number", flat=True)) == [2]
    replacement.send_signal(signal.SIGTERM)
    replacement.wait(timeout=60)
    assert neighbours(labeller_api, item.pk)["version"] == 2
    assert vector_store().get_alias(index_alias(dataset)) == "clinc.index_v2"
