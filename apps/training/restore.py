"""Serve a restored dataset again: rebuild the index of its active model version from the version's model
files, after ``import_dataset --format archive`` or after restoring the database and the data directory
without Qdrant's storage.

An index is always rebuilt, never copied: its point ids are the items' database ids, which a restore into
another database changes. The rebuild encodes every item (through the embedding cache, so a data directory
that kept its cache encodes nothing) and builds the version's collection as a retrain would; the anomaly
scores and the "unknown" calibration are rows of the database and come back with it.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.utils import timezone

from apps.datasets.models import Dataset
from apps.training.encoding import encode_items
from apps.training.index import index_alias, model_encoder, vector_store
from apps.training.models import ModelVersion
from apps.training.pipeline import ItemRows, version_index_build, version_index_reconcile
from simapp.learning import SimilarityModel
from simapp.learning.model import MODEL_FILE
from simapp.vectors import BuildResult


class IndexRestoreRefused(ValueError):
    """The index cannot be rebuilt; the message says why and what to do instead."""


def index_restore_version(*, dataset: Dataset) -> ModelVersion:
    """The version whose index a rebuild builds: the active one, with its model files in the data directory.

    Raises ``IndexRestoreRefused`` when there is none, or its files are missing.
    """
    version = ModelVersion.objects.filter(dataset=dataset, is_active=True).first()
    if version is None:
        raise IndexRestoreRefused(
            f"dataset '{dataset.slug}' has no active model version, so there is no index to build; "
            f"train it: manage.py train {dataset.slug}"
        )
    path = Path(settings.DATA_DIR) / version.artifact_path
    if not (path / MODEL_FILE).is_file():
        raise IndexRestoreRefused(
            f"the model files of dataset '{dataset.slug}' v{version.number} are not in the data directory "
            f"({path}); restore them with the data directory, or from an archive exported with --artifacts, "
            f"or train a new version: manage.py train {dataset.slug}"
        )
    return version


def dataset_index_restore(*, dataset: Dataset, version_id: int | None = None) -> BuildResult:
    """Build the index of the dataset's active version from its model files and point the alias at it.

    Meant for a dataset whose index is missing or stale: a collection of the version's name is replaced
    (after a restore it holds another database's ids), so the dataset does not serve while this runs.
    ``version_id``: go on only while that version is still the active one (a job queued at restore time).
    Items written or deleted while this runs are brought into the new index afterwards, as a retrain does.
    A version that stops being the active one meanwhile (a retrain activated a newer one) does not get the
    alias: the rebuild raises ``IndexRestoreRefused`` just before the switch, dropping what it built.
    """
    version = index_restore_version(dataset=dataset)
    if version_id is not None and version.pk != version_id:
        raise IndexRestoreRefused(
            f"dataset '{dataset.slug}' serves v{version.number} now, not the version this rebuild was for"
        )
    model = SimilarityModel.load(Path(settings.DATA_DIR) / version.artifact_path)
    snapshot_at = timezone.now()  # before the items are read, as a retrain takes its snapshot
    rows = ItemRows.of(dataset)
    encoded, _ = encode_items(model_encoder(dataset, model), rows)
    final = model.embed(encoded)  # (N, D)
    store, alias = vector_store(), index_alias(dataset)
    if store.get_alias(alias) == version.collection:
        # build_and_activate never replaces the collection its alias points at; this one is stale.
        store.drop(version.collection)

    def still_active() -> None:
        if not ModelVersion.objects.filter(pk=version.pk, is_active=True).exists():
            raise IndexRestoreRefused(
                f"dataset '{dataset.slug}' stopped serving v{version.number} while its index was rebuilt; "
                f"the index of the version it serves now was left alone"
            )

    build = version_index_build(dataset, version, rows, final, model.distance, before_activate=still_active)
    version_index_reconcile(dataset, rows, since=snapshot_at)
    return build


def index_restore_job(*, dataset_id: int, version_id: int) -> None:
    """The job behind ``enqueue_index_restore``: rebuild if the dataset still serves that version."""
    dataset = Dataset.objects.filter(pk=dataset_id).first()
    if dataset is not None:
        dataset_index_restore(dataset=dataset, version_id=version_id)


def enqueue_index_restore(*, dataset: Dataset) -> str:
    """Queue the rebuild of the dataset's index (a Celery task, or this process's job thread).

    Returns what happens, for the user: "queued", or why nothing was queued.
    """
    from apps.common import background
    from apps.training import jobs

    try:
        version = index_restore_version(dataset=dataset)
    except IndexRestoreRefused as exc:
        return f"not built: {exc}"
    if jobs.uses_broker():
        from apps.training.tasks import restore_index

        try:
            jobs.check_broker()
        except jobs.JobsUnavailable as exc:
            return f"not queued: {exc}; or run manage.py rebuild_index {dataset.slug}"
        restore_index.apply_async(args=[dataset.pk, version.pk], queue="gpu")
    else:
        background.submit(
            lambda: index_restore_job(dataset_id=dataset.pk, version_id=version.pk),
            what=f"rebuilding the index of dataset {dataset.slug}",
        )
    return "queued"
