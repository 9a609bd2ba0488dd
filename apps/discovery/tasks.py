"""Celery tasks: thin, take primary keys, call one service."""

from __future__ import annotations

from celery import shared_task

from apps.discovery.services import anomaly_rescore
from simapp.celery import app as _app  # noqa: F401  (binds shared tasks to simapp's configured app)


@shared_task(acks_late=True, soft_time_limit=1800, time_limit=1860)
def rescore_anomalies(dataset_id: int) -> None:
    anomaly_rescore(dataset_id=dataset_id)
