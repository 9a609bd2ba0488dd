"""Where jobs run: Celery workers when a broker is configured, else the job thread of this process.

Both paths call the same services (``pipeline.training_run_execute``, ``index.index_items_sync``), claim
runs the same way and report progress to the database, so pages and the API cannot tell them apart.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

from django.conf import settings

from apps.common import background


class JobsUnavailable(RuntimeError):
    """The job queue cannot take work right now (the broker is unreachable)."""


def uses_broker() -> bool:
    return bool(settings.CELERY_BROKER_URL)


def check_broker() -> None:
    """Raise ``JobsUnavailable`` when a broker is configured but does not answer, before anything is created."""
    if not uses_broker():
        return
    # From its module, not ``from kombu import Connection``: kombu's package resolves names lazily, and
    # simultaneous first retrain requests on several threads made that import fail (ImportError, a 500).
    from kombu.connection import Connection

    try:
        with Connection(settings.CELERY_BROKER_URL, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
    except Exception as exc:  # kombu raises many transport-specific types; all mean "unreachable"
        raise JobsUnavailable(
            f"the job queue is unreachable ({type(exc).__name__}); try again when it is back"
        ) from None


_pending_lock = threading.Lock()
_pending_runs: set[int] = set()  # runs handed to this process's job thread and not finished yet


def enqueue_run(run_id: int) -> Future[None] | None:
    """Start the run's job: a Celery task on queue ``gpu``, or the job thread of this process."""
    from apps.training.pipeline import training_run_execute

    if uses_broker():
        from kombu.exceptions import OperationalError

        from apps.training.models import TrainingRun
        from apps.training.tasks import train_run

        try:
            train_run.apply_async(args=[run_id], queue="gpu")
        except OperationalError as exc:
            # The broker answered the check, then went away before the job was published (after the run's
            # row committed). No worker will ever get this run, and a queued run blocks every later retrain
            # of its dataset: take it back, so the failed start leaves nothing behind, and say why.
            TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.QUEUED).delete()
            raise JobsUnavailable(
                f"the job queue is unreachable ({type(exc).__name__}); try again when it is back"
            ) from None
        return None

    def job() -> None:
        try:
            training_run_execute(run_id=run_id)
        finally:
            with _pending_lock:
                _pending_runs.discard(run_id)

    with _pending_lock:
        _pending_runs.add(run_id)
    return background.submit(job, what=f"training run {run_id}")


def resume_orphaned(run_id: int) -> bool:
    """Hand a queued run to the job thread again if this process does not have it; True when it did.

    Without a broker the queue is this process's memory: a run queued before the web process restarted
    would otherwise stay queued for ever, and block every later retrain of its dataset.
    """
    if uses_broker():
        return False  # the broker keeps the message; a worker will take it
    with _pending_lock:
        if run_id in _pending_runs:
            return False
    enqueue_run(run_id)
    return True


def enqueue_index(*, dataset_id: int, item_ids: list[int], delete: bool) -> Future[None] | None:
    """Bring the active index up to date for these items, off the request (skipped without a model)."""
    from apps.training.index import index_items_sync
    from apps.training.models import ModelVersion

    if not ModelVersion.objects.filter(dataset_id=dataset_id, is_active=True).exists():
        return None  # nothing is served yet: the first training run indexes everything
    if uses_broker():
        from apps.training.tasks import index_items

        index_items.apply_async(args=[dataset_id, item_ids, delete], queue="gpu")
        return None
    return background.submit(
        lambda: index_items_sync(dataset_id=dataset_id, item_ids=item_ids, delete=delete),
        what=f"indexing {len(item_ids)} item(s) of dataset {dataset_id}",
    )
