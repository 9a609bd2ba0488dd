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

from apps.training import services
from apps.training.index import index_alias, vector_store
from apps.training.models import ModelVersion, TrainingRun
from simapp.celery import app as celery_app
from tests.conftest import REPO
from tests.training.conftest import clinc_records, make_dataset

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

BROKER = os.environ.get("SIMAPP_TEST_BROKER_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def broker() -> Iterator[str]:
    client = redis.Redis.from_url(BROKER, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.skip(f"no Redis reachable at {BROKER} ({exc}); start one to run the real-worker test")
    client.flushdb()  # no leftover messages from an earlier run
    previous = celery_app.conf.broker_url
    celery_app.conf.broker_url = BROKER
    yield BROKER
    celery_app.conf.broker_url = previous
    client.flushdb()


def worker_database_url() -> str:
    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def start_worker(broker: str, data_dir: Path, tmp_path: Path) -> Iterator[Any]:
    """Starts real worker processes (as many as a test asks for) and stops any still running at the end."""
    env = dict(os.environ) | {
        "CELERY_BROKER_URL": broker,
        "SIMAPP_WORKER_OWNS_STORE": "1",
        "SIMAPP_DATA_DIR": str(data_dir),
        "DATABASE_URL": worker_database_url(),
        "SIMAPP_HEARTBEAT_INTERVAL_S": "1",
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


def test_a_killed_worker_fails_its_run_with_the_reason_and_a_new_retrain_succeeds(
    start_worker: Any, broker: str, data_dir: Path, shared_data: Path, tmp_path: Path
) -> None:
    dataset = make_dataset("clinc", clinc_records(shared_data, intents=4, per_intent=8))
    log = tmp_path / "worker.log"
    worker = start_worker()
    with override_settings(CELERY_BROKER_URL=broker):
        first = services.training_run_start(dataset=dataset, config={"epochs": 1}).run
    assert wait_for(first.pk, {"succeeded", "failed"}, 240, worker, log).status == "succeeded"

    with override_settings(CELERY_BROKER_URL=broker):
        doomed = services.training_run_start(dataset=dataset, config={"epochs": 200}).run
    wait_for(doomed.pk, {"running"}, 120, worker, log)
    worker.send_signal(signal.SIGKILL)  # no clean-up, no last words: like an OOM kill or a lost machine
    worker.wait(timeout=30)
    time.sleep(3)

    reaped = services.training_runs_reap(timeout_s=2)

    doomed.refresh_from_db()
    assert reaped == 1 and doomed.status == "failed"
    assert (
        doomed.error
        == "the worker stopped responding (no heartbeat for more than 2 s); it was probably killed"
    )
    assert list(ModelVersion.objects.values_list("number", "is_active")) == [(1, True)]

    replacement = start_worker()
    with override_settings(CELERY_BROKER_URL=broker):
        again = services.training_run_start(dataset=dataset, config={"epochs": 1}).run
    assert wait_for(again.pk, {"succeeded", "failed"}, 240, replacement, log).status == "succeeded"
    assert list(ModelVersion.objects.filter(is_active=True).values_list("number", flat=True)) == [2]
