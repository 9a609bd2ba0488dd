"""Keep the active index in step with the items: new or changed items are embedded and indexed with the
active model as they arrive, deleted ones leave the index. Connected in ``TrainingConfig.ready``."""

from __future__ import annotations

from typing import Any

from apps.training import jobs


def on_items_changed(sender: Any, *, dataset: Any, item_ids: list[int], **kwargs: Any) -> None:
    jobs.enqueue_index(dataset_id=dataset.pk, item_ids=item_ids, delete=False)


def on_items_deleted(sender: Any, *, dataset: Any, item_ids: list[int], **kwargs: Any) -> None:
    jobs.enqueue_index(dataset_id=dataset.pk, item_ids=item_ids, delete=True)
