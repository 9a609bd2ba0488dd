"""Training runs as database state: start, claim, cancel, finish, reap — no model involved."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError
from django.utils import timezone

from apps.training import services
from apps.training.models import TrainingRun
from tests.conftest import db_snapshot
from tests.factories import DatasetFactory, ItemFactory, PairFactory

pytestmark = pytest.mark.django_db


def labelled_dataset(slug: str = "d") -> object:
    dataset = DatasetFactory(slug=slug)
    for label in ("a", "b"):
        ItemFactory.create_batch(2, dataset=dataset, label=label)
    return dataset


def test_start_queues_one_run_and_a_second_request_gets_the_same_run() -> None:
    dataset = labelled_dataset()

    first = services.training_run_start(dataset=dataset, config={"epochs": 2})
    second = services.training_run_start(dataset=dataset, config={"epochs": 5})

    assert (first.created, second.created) == (True, False)
    assert second.run.pk == first.run.pk and TrainingRun.objects.count() == 1
    assert (first.run.status, first.run.stage, first.run.config) == ("queued", "queued", {"epochs": 2})


def test_the_database_refuses_a_second_active_run_of_a_dataset() -> None:
    dataset = labelled_dataset()
    TrainingRun.objects.create(dataset=dataset, status=TrainingRun.Status.RUNNING)

    with pytest.raises(IntegrityError):
        TrainingRun.objects.create(dataset=dataset, status=TrainingRun.Status.QUEUED)


def test_a_dataset_without_labels_or_pairs_is_refused_with_the_reason_and_nothing_is_created() -> None:
    dataset = DatasetFactory(slug="bare")
    ItemFactory.create_batch(3, dataset=dataset)
    ItemFactory(dataset=dataset, label="only-one")
    before = db_snapshot()

    with pytest.raises(services.TrainingRefused) as info:
        services.training_run_start(dataset=dataset)

    assert str(info.value) == (
        "dataset 'bare' has nothing to train on: it needs labelled items (at least two labels with two items "
        "each; it has 0) or similarity-labelled pairs (at least two; it has 0). Import labels or label pairs first, "
        "or index the items with the frozen encoder (head 'identity': manage.py train bare --head identity)."
    )
    assert db_snapshot() == before and not TrainingRun.objects.exists()


def test_the_identity_head_needs_items_only() -> None:
    dataset = DatasetFactory(slug="bare")

    with pytest.raises(services.TrainingRefused, match="has no items to index"):
        services.training_run_start(dataset=dataset, config={"head": "identity"})
    ItemFactory(dataset=dataset)
    assert services.training_run_start(dataset=dataset, config={"head": "identity"}).created


def test_pairs_alone_are_enough_to_train() -> None:
    dataset = DatasetFactory(slug="pairs")
    PairFactory.create_batch(2, dataset=dataset)

    assert services.training_run_start(dataset=dataset).created


def test_a_run_is_claimed_once() -> None:
    run = services.training_run_start(dataset=labelled_dataset()).run

    first = services.training_run_claim(run_id=run.pk, worker="w1")
    second = services.training_run_claim(run_id=run.pk, worker="w2")

    run.refresh_from_db()
    assert (first, second) == (True, False)
    assert (run.status, run.worker) == ("running", "w1") and run.started_at and run.heartbeat_at


def test_cancel_ends_a_queued_run_and_flags_a_running_one() -> None:
    queued = services.training_run_start(dataset=labelled_dataset("q")).run
    running = services.training_run_start(dataset=labelled_dataset("r")).run
    services.training_run_claim(run_id=running.pk)

    queued = services.training_run_cancel(run=queued)
    running = services.training_run_cancel(run=running)

    assert (queued.status, queued.error) == ("cancelled", "cancelled before it started")
    assert (running.status, running.cancel_requested) == ("running", True)
    assert services.training_run_claim(run_id=queued.pk) is False
    assert (
        services.training_run_report(run_id=running.pk, stage="train", done=1, total=2, progress=0.5) is True
    )


def test_progress_reports_record_stage_progress_loss_and_heartbeat() -> None:
    run = services.training_run_start(dataset=labelled_dataset()).run
    services.training_run_claim(run_id=run.pk)

    services.training_run_report(run_id=run.pk, stage="train", done=3, total=10, progress=0.45, loss=1.5)
    services.training_run_report(run_id=run.pk, stage="train", done=6, total=10, progress=0.6, loss=0.75)

    run.refresh_from_db()
    assert (run.stage, run.stage_done, run.stage_total, run.progress) == ("train", 6, 10, 0.6)
    assert run.loss_history == [1.5, 0.75]


def test_reaper_fails_runs_whose_worker_went_silent_and_only_those() -> None:
    silent = services.training_run_start(dataset=labelled_dataset("silent")).run
    alive = services.training_run_start(dataset=labelled_dataset("alive")).run
    for run in (silent, alive):
        services.training_run_claim(run_id=run.pk)
    TrainingRun.objects.filter(pk=silent.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=120))

    reaped = services.training_runs_reap(timeout_s=60)

    silent.refresh_from_db()
    alive.refresh_from_db()
    assert reaped == 1
    assert silent.status == "failed" and "no heartbeat for more than 60 s" in silent.error
    assert alive.status == "running"
    assert services.training_run_finish(run_id=silent.pk, status="succeeded") is False  # stays failed
