from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.datasets.models import Dataset


class TrainingRun(models.Model):
    """One retrain of a dataset's model: encode (cached) → train → evaluate → index → activate."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Stage(models.TextChoices):
        QUEUED = "queued", "Queued"
        ENCODE = "encode", "Encoding"
        TRAIN = "train", "Training"
        EVALUATE = "evaluate", "Evaluating"
        INDEX = "index", "Indexing"
        ACTIVATE = "activate", "Activating"
        DONE = "done", "Done"

    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="training_runs")
    config = models.JSONField(default=dict, help_text="encoder, head, loss, epochs, lr, batch size, seed")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    stage = models.CharField(max_length=12, choices=Stage.choices, default=Stage.QUEUED)
    progress = models.FloatField(default=0.0, help_text="Whole run, 0..1.")
    stage_done = models.PositiveIntegerField(default=0)
    stage_total = models.PositiveIntegerField(default=0)
    loss_history = models.JSONField(default=list, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    device = models.CharField(max_length=40, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid of the process running it")
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # At most one queued or running run per dataset, even under concurrent requests.
            models.UniqueConstraint(
                fields=["dataset"],
                condition=Q(status__in=["queued", "running"]),
                name="training_one_active_run_per_dataset",
            ),
            models.CheckConstraint(
                condition=Q(progress__gte=0.0, progress__lte=1.0), name="training_progress_unit"
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.dataset_id} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATUSES


class ModelVersion(models.Model):
    """A trained model of a dataset and the index built with it. Exactly one is active per dataset."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="model_versions")
    run = models.OneToOneField(TrainingRun, on_delete=models.PROTECT, related_name="model_version")
    number = models.PositiveIntegerField()
    artifact_path = models.CharField(
        max_length=500, help_text="Directory of the saved model, relative to SIMAPP_DATA_DIR."
    )
    collection = models.CharField(max_length=200, help_text="Vector-index collection built with this model.")
    metrics = models.JSONField(default=dict, blank=True)
    is_active = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["dataset", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "number"], name="model_version_unique_number"),
            models.UniqueConstraint(
                fields=["dataset"], condition=Q(is_active=True), name="model_version_one_active_per_dataset"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.dataset_id} v{self.number}"
