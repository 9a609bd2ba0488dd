"""Reads about training runs and model versions."""

from __future__ import annotations

from django.db.models import QuerySet

from apps.datasets.models import Dataset
from apps.training.models import ModelVersion, TrainingRun


def training_run_list(*, dataset: Dataset | None = None) -> QuerySet[TrainingRun]:
    runs = TrainingRun.objects.select_related("dataset", "requested_by")
    if dataset is not None:
        runs = runs.filter(dataset=dataset)
    return runs.order_by("-id")


def model_version_list(*, dataset: Dataset) -> QuerySet[ModelVersion]:
    return ModelVersion.objects.filter(dataset=dataset).select_related("run").order_by("-number")


def model_version_active(*, dataset: Dataset) -> ModelVersion | None:
    return ModelVersion.objects.filter(dataset=dataset, is_active=True).first()


def model_versions_active() -> dict[int, ModelVersion]:
    """The active version of every dataset that has one, by dataset id (for lists of datasets)."""
    return {version.dataset_id: version for version in ModelVersion.objects.filter(is_active=True)}
