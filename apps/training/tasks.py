"""Celery tasks: thin, take primary keys, call one service."""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings

from apps.training.index import index_items_sync
from apps.training.pipeline import training_run_execute
from apps.training.restore import index_restore_job
from apps.training.services import training_runs_reap
from simapp.celery import app as _app  # noqa: F401  (binds shared tasks to simapp's configured app)


@shared_task(
    acks_late=True,
    # A lost worker's message is not redelivered to run again: the heartbeat reaper fails the run instead.
    reject_on_worker_lost=False,
    soft_time_limit=settings.SIMAPP_TRAIN_TIME_LIMIT_S,
    time_limit=settings.SIMAPP_TRAIN_TIME_LIMIT_S + 60,
)
def train_run(run_id: int) -> None:
    training_run_execute(run_id=run_id)


@shared_task(acks_late=True, soft_time_limit=600, time_limit=660)
def index_items(dataset_id: int, item_ids: list[int], delete: bool) -> None:
    index_items_sync(dataset_id=dataset_id, item_ids=item_ids, delete=delete)


@shared_task(
    acks_late=True,
    soft_time_limit=settings.SIMAPP_TRAIN_TIME_LIMIT_S,
    time_limit=settings.SIMAPP_TRAIN_TIME_LIMIT_S + 60,
)
def restore_index(dataset_id: int, version_id: int) -> None:
    index_restore_job(dataset_id=dataset_id, version_id=version_id)


@worker_ready.connect
def reap_on_start(**kwargs: object) -> None:
    """A worker that starts may be replacing one that died mid-run: fail such runs now, with the reason."""
    training_runs_reap()
