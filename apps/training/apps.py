from __future__ import annotations

from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "apps.training"
    label = "training"
    verbose_name = "Training"

    def ready(self) -> None:
        from apps.datasets.signals import (
            dataset_deleting,
            dataset_will_be_deleted,
            items_changed,
            items_deleted,
            items_will_change,
        )
        from apps.training import receivers

        items_changed.connect(receivers.on_items_changed, dispatch_uid="training-index-changed")
        items_deleted.connect(receivers.on_items_deleted, dispatch_uid="training-index-deleted")
        items_will_change.connect(receivers.on_items_will_change, dispatch_uid="training-index-can-follow")
        dataset_will_be_deleted.connect(
            receivers.on_dataset_will_be_deleted, dispatch_uid="training-dataset-can-be-deleted"
        )
        dataset_deleting.connect(receivers.on_dataset_deleting, dispatch_uid="training-dataset-deleting")
