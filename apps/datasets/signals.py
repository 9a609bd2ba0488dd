"""Signals other apps listen to, so datasets need not know about them.

``items_changed(sender=Item, dataset, item_ids)``: items were created or their content, label or metadata
changed (sent after the transaction committed). ``items_deleted(sender=Item, dataset, item_ids)``: items
are gone. The training app keeps the active index in step with both.
"""

from __future__ import annotations

from django.dispatch import Signal

items_changed = Signal()
items_deleted = Signal()
