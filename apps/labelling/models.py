from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from apps.datasets.models import Dataset, Item


class Pair(models.Model):
    """How similar two items of one dataset are, in [0, 1] (1 = same, 0 = unrelated), by one annotator.

    Stored once per unordered pair: ``item_a_id < item_b_id``. Imported labels have no annotator.
    """

    class Source(models.TextChoices):
        MANUAL = "manual", "Manual"
        IMPORT = "import", "Import"
        FEEDBACK = "feedback", "Feedback"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="pairs")
    item_a = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="+")
    item_b = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="+")
    score = models.FloatField()
    # PROTECT: deleting a user must not silently delete (or orphan into duplicates) their labels.
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="pairs"
    )
    source = models.CharField(max_length=20, choices=Source.choices, default=Source.MANUAL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(item_a__lt=F("item_b")), name="pair_ordered_a_lt_b"),
            models.CheckConstraint(
                condition=Q(score__gte=0.0, score__lte=1.0), name="pair_score_in_unit_interval"
            ),
            # NULL annotators are distinct in SQL unique constraints, hence two partial constraints.
            models.UniqueConstraint(
                fields=["item_a", "item_b", "annotator"],
                condition=Q(annotator__isnull=False),
                name="pair_unique_per_annotator",
            ),
            models.UniqueConstraint(
                fields=["item_a", "item_b"],
                condition=Q(annotator__isnull=True),
                name="pair_unique_unattributed",
            ),
        ]
        indexes = [models.Index(fields=["dataset", "annotator"], name="pair_dataset_annotator")]

    def __str__(self) -> str:
        return f"{self.item_a_id}~{self.item_b_id}={self.score:g}"
