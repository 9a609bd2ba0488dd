"""Training runs and model versions: start, claim, report, cancel, finish, fail, activate, roll back; and
what a dataset's deletion takes along (its runs, versions, index and model files).

A run moves queued → running → succeeded | failed | cancelled. Claims and state changes are conditional
updates (``UPDATE … WHERE status = …``) so a retried or duplicated job never runs twice, and the partial
unique constraint on the model keeps one queued-or-running run per dataset even under concurrent requests.
The pipeline itself (encode → train → evaluate → index → activate) is in ``apps.training.pipeline``.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from apps.datasets.models import Dataset, Item
from apps.datasets.signals import DatasetDeleteRefused, DatasetDeleteUnavailable
from apps.labelling.models import Pair
from apps.training.models import ModelVersion, TrainingRun
from simapp.vectors import ActivationError, VectorStoreError, collection_versions

logger = logging.getLogger(__name__)


class TrainingRefused(ValueError):
    """The dataset cannot be trained as asked; the message says why and what to do."""


@dataclass(frozen=True)
class StartResult:
    run: TrainingRun
    created: bool  # False: a run was already queued or running and is returned instead


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def training_data_check(*, dataset: Dataset, config: dict[str, Any] | None = None) -> None:
    """Raise ``TrainingRefused`` unless the dataset has something to learn from.

    Groups need at least two labels with two items each (a positive and a negative for every anchor);
    otherwise scored pairs are needed. The identity head learns nothing: it only needs items, and indexes
    them with the frozen encoder (how unlabelled data gets anomaly scores before anyone gave feedback).
    """
    if (config or {}).get("head") == "identity":
        if Item.objects.filter(dataset=dataset).exists():
            return
        raise TrainingRefused(f"dataset '{dataset.slug}' has no items to index. Import items first.")
    pairs = Pair.objects.filter(dataset=dataset).count()
    usable_labels = (
        Item.objects.filter(dataset=dataset)
        .exclude(label="")
        .values("label")
        .annotate(n=Count("id"))
        .filter(n__gte=2)
        .count()
    )
    if usable_labels >= 2 or pairs >= 2:
        return
    raise TrainingRefused(
        f"dataset '{dataset.slug}' has nothing to train on: it needs labelled items (at least two labels "
        f"with two items each; it has {usable_labels}) or similarity-labelled pairs (at least two; it has "
        f"{pairs}). Import labels or label pairs first, or index the items with the frozen encoder "
        f"(head 'identity': manage.py train {dataset.slug} --head identity)."
    )


def training_run_start(
    *, dataset: Dataset, config: dict[str, Any] | None = None, requested_by: Any = None, enqueue: bool = True
) -> StartResult:
    """Queue a retrain of ``dataset``, or return the run that is already queued or running.

    The job is enqueued when the transaction commits (a Celery worker, or a thread of this process);
    ``enqueue=False`` leaves it queued for the caller to execute in the foreground (``train --wait``).
    """
    from apps.training import jobs  # jobs imports tasks, which import this module

    training_data_check(dataset=dataset, config=config)
    active = TrainingRun.objects.filter(dataset=dataset, status__in=TrainingRun.ACTIVE_STATUSES).first()
    if active is not None:
        if enqueue and active.status == TrainingRun.Status.QUEUED:
            run_id = active.pk
            transaction.on_commit(lambda: jobs.resume_orphaned(run_id))
        return StartResult(active, created=False)
    if enqueue:
        jobs.check_broker()
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(
                dataset=dataset,
                config=dict(config or {}),
                requested_by=requested_by if getattr(requested_by, "is_authenticated", False) else None,
            )
            if enqueue:
                transaction.on_commit(lambda: jobs.enqueue_run(run.pk))
    except IntegrityError:
        # Another request queued one between our check and our insert: return theirs.
        active = TrainingRun.objects.filter(dataset=dataset, status__in=TrainingRun.ACTIVE_STATUSES).first()
        if active is None:
            raise
        return StartResult(active, created=False)
    return StartResult(run, created=True)


def training_run_claim(*, run_id: int, worker: str | None = None) -> bool:
    """Move a queued run to running for this worker; False if someone else has it (or it was cancelled)."""
    now = timezone.now()
    claimed = TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.QUEUED).update(
        status=TrainingRun.Status.RUNNING,
        started_at=now,
        heartbeat_at=now,
        worker=worker or worker_name(),
    )
    return claimed == 1


def training_run_report(
    *,
    run_id: int,
    stage: str,
    done: int,
    total: int,
    progress: float,
    loss: float | None = None,
    device: str | None = None,
) -> bool:
    """Record progress (and a heartbeat); returns True when a cancel was requested."""
    fields: dict[str, Any] = {
        "stage": stage,
        "stage_done": max(0, done),
        "stage_total": max(0, total),
        "progress": min(1.0, max(0.0, progress)),
        "heartbeat_at": timezone.now(),
    }
    if device is not None:
        fields["device"] = device[:40]
    TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.RUNNING).update(**fields)
    if loss is not None:
        # Appending to JSON is read-modify-write: safe because only the run's own worker writes it.
        run = TrainingRun.objects.only("loss_history").get(pk=run_id)
        TrainingRun.objects.filter(pk=run_id).update(loss_history=[*run.loss_history, round(float(loss), 6)])
    return TrainingRun.objects.filter(pk=run_id, cancel_requested=True).exists()


def training_run_set_history(*, run_id: int, loss_history: list[float], device: str) -> None:
    """Replace the live loss curve with the trainer's final per-epoch losses."""
    TrainingRun.objects.filter(pk=run_id).update(
        loss_history=[round(float(v), 6) for v in loss_history], device=device[:40]
    )


def training_run_cancel(*, run: TrainingRun) -> TrainingRun:
    """Cancel a queued run at once; ask a running one to stop at its next batch."""
    now = timezone.now()
    cancelled_in_queue = TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED).update(
        status=TrainingRun.Status.CANCELLED,
        cancel_requested=True,
        finished_at=now,
        error="cancelled before it started",
    )
    if not cancelled_in_queue:
        TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.RUNNING).update(cancel_requested=True)
    run.refresh_from_db()
    return run


def training_run_finish(
    *, run_id: int, status: str, error: str = "", metrics: dict[str, Any] | None = None
) -> bool:
    """End a running run as succeeded, failed or cancelled; False if it was not running (e.g. reaped)."""
    fields: dict[str, Any] = {"status": status, "finished_at": timezone.now(), "error": error[:10000]}
    if status == TrainingRun.Status.SUCCEEDED:
        fields |= {"stage": TrainingRun.Stage.DONE, "progress": 1.0}
    if metrics is not None:
        fields["metrics"] = metrics
    return TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.RUNNING).update(**fields) == 1


def training_runs_reap(*, timeout_s: int | None = None) -> int:
    """Fail running runs whose worker stopped sending heartbeats; returns how many."""
    timeout = timeout_s if timeout_s is not None else settings.SIMAPP_HEARTBEAT_TIMEOUT_S
    cutoff = timezone.now() - timedelta(seconds=timeout)
    stale = TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING, heartbeat_at__lt=cutoff)
    return stale.update(
        status=TrainingRun.Status.FAILED,
        finished_at=timezone.now(),
        error=f"the worker stopped responding (no heartbeat for more than {timeout} s); it was probably killed",
    )


def model_version_activate(*, version: ModelVersion) -> ModelVersion:
    """Serve ``version``: switch the dataset's index alias to its collection, then mark it active.

    The alias switch is atomic in the vector store; the database flag follows in one transaction.
    ``ActivationError`` for a version that never served and whose run did not succeed: its run may have
    died while it built the index (a killed worker cleans nothing up), so the collection may hold only
    part of the points, and the store's checks cannot tell how many there should be.
    """
    from apps.training.index import index_activate

    run = version.run
    if version.activated_at is None and run.status != TrainingRun.Status.SUCCEEDED:
        if run.status in TrainingRun.ACTIVE_STATUSES:
            raise ActivationError(
                f"its run ({run.pk}) is still {run.status}; it activates the version itself"
            )
        how = "was cancelled" if run.status == TrainingRun.Status.CANCELLED else "failed"
        raise ActivationError(
            f"its run ({run.pk}) {how} before the version ever served, so its index may be incomplete; "
            "retrain instead"
        )
    index_activate(dataset=version.dataset, collection=version.collection)
    with transaction.atomic():
        ModelVersion.objects.filter(dataset=version.dataset, is_active=True).exclude(pk=version.pk).update(
            is_active=False
        )
        ModelVersion.objects.filter(pk=version.pk).update(is_active=True, activated_at=timezone.now())
    version.refresh_from_db()
    return version


def model_version_rollback(*, dataset: Dataset) -> ModelVersion:
    """Activate the version before the active one (by number) that still has its index."""
    from apps.training.index import index_collections

    active = ModelVersion.objects.filter(dataset=dataset, is_active=True).first()
    if active is None:
        raise TrainingRefused(f"dataset '{dataset.slug}' has no active model to roll back from")
    available = index_collections(dataset=dataset)
    previous = (
        ModelVersion.objects.filter(dataset=dataset, number__lt=active.number, collection__in=available)
        .filter(Q(activated_at__isnull=False) | Q(run__status=TrainingRun.Status.SUCCEEDED))  # see activate
        .order_by("-number")
        .first()
    )
    if previous is None:
        raise TrainingRefused(
            f"dataset '{dataset.slug}' has no earlier version with an index to roll back to (v{active.number} is the oldest kept)"
        )
    return model_version_activate(version=previous)


# ---------------------------------------------------------------------------------------------------
# Deleting a dataset (the receivers of ``dataset_will_be_deleted`` and ``dataset_deleting``)


def _refuse_while_training(dataset: Dataset) -> None:
    active = TrainingRun.objects.filter(dataset=dataset, status__in=TrainingRun.ACTIVE_STATUSES)
    run = active.order_by("id").first()
    if run is not None:
        raise DatasetDeleteRefused(
            f"dataset '{dataset.slug}' cannot be deleted while its training run {run.pk} is {run.status}: "
            f"cancel the run first (POST /api/runs/{run.pk}/cancel/, or the admin's Cancel action), then "
            "delete the dataset once it has stopped"
        )


def dataset_training_delete_check(*, dataset: Dataset) -> None:
    """Whether the dataset's training data can go now, before anything is deleted.

    Raises ``DatasetDeleteRefused`` while a run of it is queued or running (the run would write to a
    dataset that is gone; a run whose worker died is failed first, as everywhere), and
    ``DatasetDeleteUnavailable`` when it has model versions, whose collections must be dropped, and the
    vector store does not answer.
    """
    training_runs_reap()
    _refuse_while_training(dataset)
    if not ModelVersion.objects.filter(dataset=dataset).exists():
        return
    from apps.training.index import vector_store

    try:
        vector_store().list_collections()
    except VectorStoreError as exc:
        raise DatasetDeleteUnavailable(
            f"the vector store is unavailable: {exc}; dataset '{dataset.slug}' was not deleted, as its "
            "index could not be dropped"
        ) from None


def dataset_training_delete(*, dataset: Dataset) -> None:
    """Inside the transaction that deletes ``dataset``: delete its model versions (their anomaly scores go
    with them) and training runs, which the cascade from the dataset cannot delete (a version protects its
    run), and drop their index and model files once the transaction commits (``dataset_index_drop``).

    Raises ``DatasetDeleteRefused`` if a run was started since ``dataset_training_delete_check``.
    """
    from apps.training.index import index_alias

    _refuse_while_training(dataset)
    versions = ModelVersion.objects.filter(dataset=dataset)
    runs = TrainingRun.objects.filter(dataset=dataset)
    collections = sorted(set(versions.values_list("collection", flat=True)))
    artifacts = sorted(set(versions.values_list("artifact_path", flat=True)))
    # A run without a version may still have left a collection (a build whose worker was killed).
    trained = bool(collections) or runs.exists()
    versions.delete()  # first: each protects its run
    runs.delete()
    alias, slug = index_alias(dataset), dataset.slug
    transaction.on_commit(
        lambda: dataset_index_drop(
            slug=slug, alias=alias if trained else None, collections=collections, artifacts=artifacts
        )
    )


def dataset_index_drop(
    *, slug: str, alias: str | None, collections: Sequence[str], artifacts: Sequence[str]
) -> None:
    """Drop what a deleted dataset left outside the database: the collections of its model versions and
    any other collection built under its ``alias`` (a build that died), the alias with them, its model
    files: its directory ``models/<slug>`` under ``DATA_DIR``, which holds every version's ``artifact_path``
    (``artifacts``). ``alias`` None: the dataset was never trained, so the vector store is not asked (nor,
    embedded, opened). The embedding cache stays: it is keyed by content, which other datasets may share.

    Called after the deletion committed, so it never raises: a failure is logged as a warning naming the
    collection or the directory, and the rest is dropped all the same. What stays is never served (no
    version names it) and a dataset created again under the slug replaces it with its first version.
    """
    if alias is not None:
        _collections_drop(slug=slug, alias=alias, collections=collections)
    from apps.training.index import model_dir

    own = (Path(settings.DATA_DIR) / model_dir(slug)).resolve()  # where the pipeline and restores put them
    for relative in artifacts:
        path = (Path(settings.DATA_DIR) / relative).resolve()
        if path != own and own not in path.parents:
            # Not written by simapp for this dataset (it could be another's): not ours to remove.
            logger.warning("model files %s of deleted dataset %s are outside %s; left alone", path, slug, own)
    try:
        if own.exists():
            shutil.rmtree(own)
    except OSError as exc:
        logger.warning("could not remove model files %s of deleted dataset %s: %s", own, slug, exc)


def _collections_drop(*, slug: str, alias: str, collections: Sequence[str]) -> None:
    from apps.training.index import vector_store

    names = set(collections)
    try:
        store = vector_store()
        names.update(collection_versions(store, alias).values())
        active = store.get_alias(alias)
    except Exception as exc:  # the store went away since the check: say what stays behind
        for name in sorted(names) or [alias]:
            logger.warning("could not drop collection %s of deleted dataset %s: %s", name, slug, exc)
        return
    # The alias's target first: dropping it drops the alias with it, so no query finds the index halfway.
    for name in sorted(names, key=lambda name: (name != active, name)):
        try:
            store.drop(name)
        except Exception as exc:
            logger.warning("could not drop collection %s of deleted dataset %s: %s", name, slug, exc)
