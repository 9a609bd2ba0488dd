from __future__ import annotations

from django.conf import settings
from django.db import models

from apps.datasets.models import Item
from apps.training.models import ModelVersion


class AnomalyScore(models.Model):
    """An item's anomaly score under one model version: its mean distance to the k nearest normal items.

    Computed for every item after each indexing; higher is more anomalous. Scores of different versions
    are not comparable (each version has its own embedding space).
    """

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="anomaly_scores")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="anomaly_scores")
    score = models.FloatField()

    class Meta:
        ordering = ["-score", "item_id"]
        constraints = [
            models.UniqueConstraint(fields=["version", "item"], name="anomaly_score_unique_per_version")
        ]
        indexes = [models.Index(fields=["version", "-score"], name="anomaly_score_version_rank")]

    def __str__(self) -> str:
        return f"item {self.item_id} v{self.version_id}: {self.score:.4f}"


class AnomalyFeedback(models.Model):
    """One person's verdict on whether an item is an anomaly.

    "Not an anomaly" keeps the item in the normal reference set of the anomaly scores; "confirmed
    anomaly" takes it out. Both become similarity pairs (source "feedback") for the next retrain.
    """

    class Verdict(models.TextChoices):
        ANOMALY = "anomaly", "Confirmed anomaly"
        NORMAL = "normal", "Not an anomaly"

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="anomaly_feedback")
    # PROTECT, as for pairs: deleting a user must not silently delete the training signal they gave.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    verdict = models.CharField(max_length=10, choices=Verdict.choices)
    # Ids of the pairs this verdict created, so changing or withdrawing it removes exactly those.
    pair_ids = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["item", "user"], name="anomaly_feedback_one_per_user")]
        verbose_name_plural = "anomaly feedback"

    def __str__(self) -> str:
        return f"item {self.item_id}: {self.verdict} by {self.user_id}"
