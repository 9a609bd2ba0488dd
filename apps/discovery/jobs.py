"""Where discovery jobs run: a Celery worker (queue ``gpu``) with a broker, else this process's job thread."""

from __future__ import annotations

from concurrent.futures import Future

from apps.common import background
from apps.training.jobs import check_broker, uses_broker


def enqueue_rescore(*, dataset_id: int) -> Future[None] | None:
    """Score the items of the dataset's active version again, off the request."""
    from apps.discovery.services import anomaly_rescore

    if uses_broker():
        from apps.discovery.tasks import rescore_anomalies

        check_broker()
        rescore_anomalies.apply_async(args=[dataset_id], queue="gpu")
        return None
    return background.submit(
        lambda: anomaly_rescore(dataset_id=dataset_id), what=f"anomaly rescoring of {dataset_id}"
    )
