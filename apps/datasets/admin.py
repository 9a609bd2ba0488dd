from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from apps.datasets import selectors
from apps.datasets.models import Dataset, Item
from apps.datasets.services import item_content_hash


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = [
        "slug",
        "name",
        "modality",
        "encoder",
        "items_link",
        "pairs_link",
        "label_count",
        "created_at",
    ]
    list_filter = ["modality", "encoder"]
    search_fields = ["slug", "name", "description"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["vector_dim", "items_link", "pairs_link", "label_count", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["slug", "name", "description", "modality", "encoder", "settings"]}),
        (
            "Contents",
            {"fields": ["items_link", "pairs_link", "label_count", "vector_dim", "created_at", "updated_at"]},
        ),
    ]

    def get_queryset(self, request: HttpRequest) -> Any:
        return selectors.dataset_list()

    @admin.display(description="items", ordering="item_count")
    def items_link(self, obj: Dataset) -> str:
        url = reverse("admin:datasets_item_changelist") + f"?dataset__id__exact={obj.pk}"
        return format_html('<a href="{}">{} items</a>', url, getattr(obj, "item_count", 0))

    @admin.display(description="pairs", ordering="pair_count")
    def pairs_link(self, obj: Dataset) -> str:
        url = reverse("admin:labelling_pair_changelist") + f"?dataset__id__exact={obj.pk}"
        return format_html('<a href="{}">{} pairs</a>', url, getattr(obj, "pair_count", 0))

    @admin.display(description="labels", ordering="label_count")
    def label_count(self, obj: Dataset) -> int:
        return getattr(obj, "label_count", 0)


class HasLabelFilter(admin.SimpleListFilter):
    title = "labelled"
    parameter_name = "labelled"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "With a label"), ("no", "Without a label")]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        if self.value() == "yes":
            return queryset.exclude(label="")
        if self.value() == "no":
            return queryset.filter(label="")
        return queryset


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ["key", "dataset", "label", "short_text", "updated_at"]
    list_filter = ["dataset", HasLabelFilter]
    list_select_related = ["dataset"]
    search_fields = ["key", "text", "label"]
    readonly_fields = ["content_hash", "created_at", "updated_at"]
    show_full_result_count = False  # avoids a second COUNT(*) on large datasets
    list_per_page = 100

    @admin.display(description="content")
    def short_text(self, obj: Item) -> str:
        return obj.preview()

    def save_model(self, request: HttpRequest, obj: Item, form: Any, change: bool) -> None:
        # The embedding cache is keyed by content: an edit here must move the hash with the content.
        obj.content_hash = item_content_hash(text=obj.text, vector=obj.vector)
        super().save_model(request, obj, form, change)
