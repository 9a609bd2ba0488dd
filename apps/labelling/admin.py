from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin

from apps.labelling.models import Pair


class PairAdminForm(forms.ModelForm):
    class Meta:
        model = Pair
        fields = ["dataset", "item_a", "item_b", "score", "annotator", "source"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        dataset, a, b, score = data.get("dataset"), data.get("item_a"), data.get("item_b"), data.get("score")
        if a and b:
            if a.pk == b.pk:
                raise forms.ValidationError("A pair needs two different items.")
            if dataset and (a.dataset_id != dataset.pk or b.dataset_id != dataset.pk):
                raise forms.ValidationError("Both items must belong to the pair's dataset.")
            if a.pk > b.pk:  # stored once per unordered pair, smaller id first
                data["item_a"], data["item_b"] = b, a
                self.instance.item_a, self.instance.item_b = b, a
        if score is not None and not 0.0 <= score <= 1.0:
            self.add_error("score", "The score must be in [0, 1].")
        return data


@admin.register(Pair)
class PairAdmin(admin.ModelAdmin):
    form = PairAdminForm
    list_display = ["id", "dataset", "item_a", "item_b", "score", "annotator", "source", "updated_at"]
    list_filter = ["dataset", "source", "annotator"]
    list_select_related = ["dataset", "item_a", "item_b", "annotator"]
    search_fields = ["item_a__key", "item_b__key", "item_a__text", "item_b__text", "annotator__username"]
    raw_id_fields = ["item_a", "item_b"]
    readonly_fields = ["created_at", "updated_at"]
    show_full_result_count = False
    list_per_page = 100
