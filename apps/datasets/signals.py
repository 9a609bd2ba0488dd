"""Signals other apps listen to, so datasets need not know about them.

``items_changed(sender=Item, dataset, item_ids)``: items were created or their content, label or metadata
changed (sent after the transaction committed). ``items_deleted(sender=Item, dataset, item_ids)``: items
are gone. The training app keeps the active index in step with both.

``items_will_change(sender=Item, dataset)``: sent before items of a dataset that already exists are
written or deleted. A listener that cannot follow the change (the job queue that updates the index is
down) raises ``ItemsChangeUnavailable`` with the reason, and nothing is written.
"""

from __future__ import annotations

from django.dispatch import Signal

items_changed = Signal()
items_deleted = Signal()
items_will_change = Signal()


class ItemsChangeUnavailable(RuntimeError):
    """A listener of ``items_will_change`` cannot follow the change now; the message says why."""
