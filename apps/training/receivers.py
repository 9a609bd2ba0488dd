"""Keep the active index in step with the items: new or changed items are embedded and indexed with the
active model as they arrive, deleted ones leave the index; a deleted dataset takes its runs, versions, index
and model files with it. Connected in ``TrainingConfig.ready``."""

from __future__ import annotations

from typing import Any

from apps.datasets.signals import ItemsChangeUnavailable
from apps.training import jobs


def on_items_changed(sender: Any, *, dataset: Any, item_ids: list[int], **kwargs: Any) -> None:
    jobs.enqueue_index(dataset_id=dataset.pk, item_ids=item_ids, delete=False)


def on_items_deleted(sender: Any, *, dataset: Any, item_ids: list[int], **kwargs: Any) -> None:
    jobs.enqueue_index(dataset_id=dataset.pk, item_ids=item_ids, delete=True)


def on_items_will_change(sender: Any, *, dataset: Any, **kwargs: Any) -> None:
    """Refuse a change to a served dataset's items while the job queue that would index it is down, so
    that the items and the index never part ways."""
    from apps.training.models import ModelVersion

    if not jobs.uses_broker() or not ModelVersion.objects.filter(dataset=dataset, is_active=True).exists():
        return
    try:
        jobs.check_broker()
    except jobs.JobsUnavailable as exc:
        raise ItemsChangeUnavailable(f"the items were not changed: {exc}") from None


def on_dataset_will_be_deleted(sender: Any, *, dataset: Any, **kwargs: Any) -> None:
    """Refuse to delete a dataset while it trains, or while the store that holds its index is down."""
    from apps.training import services

    services.dataset_training_delete_check(dataset=dataset)


def on_dataset_deleting(sender: Any, *, dataset: Any, **kwargs: Any) -> None:
    """Delete the dataset's runs and versions with it; its index and model files go after the commit."""
    from apps.training import services

    services.dataset_training_delete(dataset=dataset)
