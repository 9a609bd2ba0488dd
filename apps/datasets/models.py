from __future__ import annotations

from typing import Any

from django.db import models


class Dataset(models.Model):
    """A collection of items that are labelled, embedded and indexed together."""

    class Modality(models.TextChoices):
        TEXT = "text", "Text"
        VECTOR = "vector", "Vector"

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    modality = models.CharField(max_length=10, choices=Modality.choices, default=Modality.TEXT)
    encoder = models.CharField(
        max_length=255,
        help_text="Encoder name ('minilm', 'vector') or a local sentence-transformers directory.",
    )
    vector_dim = models.PositiveIntegerField(
        null=True, blank=True, help_text="Features per item (vector datasets); fixed by the first import."
    )
    settings = models.JSONField(default=dict, blank=True, help_text="k, contamination, annotators per pair…")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Item(models.Model):
    """One thing to compare: a text or a feature vector, with an optional label and metadata."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="items")
    key = models.CharField(max_length=255, help_text="External id, unique within the dataset.")
    text = models.TextField(blank=True)
    vector = models.JSONField(null=True, blank=True)
    label = models.CharField(max_length=255, blank=True, help_text="Group or class; empty when unlabelled.")
    metadata = models.JSONField(default=dict, blank=True, help_text="Becomes the vector-index payload.")
    content_hash = models.CharField(
        max_length=64, help_text="SHA-256 of the text or vector: the embedding cache's key."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["dataset", "key"], name="item_unique_key_per_dataset")]
        indexes = [models.Index(fields=["dataset", "label"], name="item_dataset_label")]

    def __str__(self) -> str:
        return self.key

    def metadata_items(self) -> list[tuple[str, Any]]:
        """(name, value) pairs of the metadata by name, for templates, where ``item.metadata.items`` would
        give the value of a field named "items" rather than call ``dict.items``. Sorted, because the
        databases keep different orders (PostgreSQL's jsonb puts shorter names first)."""
        return sorted(self.metadata.items(), key=lambda pair: pair[0])

    def preview(self, limit: int = 90) -> str:
        """A short human-readable rendering of the content, for lists."""
        if self.vector is not None:
            head = ", ".join(f"{v:.3g}" for v in self.vector[:4])
            return f"[{head}{', …' if len(self.vector) > 4 else ''}] ({len(self.vector)} numbers)"
        return self.text if len(self.text) <= limit else self.text[: limit - 1] + "…"
