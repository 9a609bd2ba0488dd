"""Signals other apps listen to, so datasets need not know about them.

``items_changed(sender=Item, dataset, item_ids)``: items were created or their content, label or metadata
changed (sent after the transaction committed). ``items_deleted(sender=Item, dataset, item_ids)``: items
are gone. The training app keeps the active index in step with both.

``items_will_change(sender=Item, dataset)``: sent before items of a dataset that already exists are
written or deleted. A listener that cannot follow the change (the job queue that updates the index is
down) raises ``ItemsChangeUnavailable`` with the reason, and nothing is written.

``dataset_will_be_deleted(sender=Dataset, dataset)``: sent before anything of a dataset is deleted. A
listener that must keep it for now raises ``DatasetDeleteRefused`` (a training run of it is queued or
running), one that cannot follow the deletion raises ``DatasetDeleteUnavailable`` (the vector store that
holds its index is unreachable); either way with the reason, and nothing is deleted.

``dataset_deleting(sender=Dataset, dataset)``: sent inside the transaction that deletes the dataset, before
its row goes. Listeners delete their rows of it that the cascade cannot (a model version protects its
run), may still refuse with ``DatasetDeleteRefused`` (the transaction then rolls back), and register what
lives outside the database (the index, model files) to be dropped after the commit with
``transaction.on_commit``, so that a deletion that rolls back leaves it untouched.
"""

from __future__ import annotations

from django.dispatch import Signal

items_changed = Signal()
items_deleted = Signal()
items_will_change = Signal()
dataset_will_be_deleted = Signal()
dataset_deleting = Signal()


class ItemsChangeUnavailable(RuntimeError):
    """A listener of ``items_will_change`` cannot follow the change now; the message says why."""


class DatasetDeleteRefused(RuntimeError):
    """The dataset cannot be deleted in its present state (409); the message says why and what to do."""


class DatasetDeleteUnavailable(RuntimeError):
    """A service the deletion needs is unreachable (503); the message says which and why."""
