from __future__ import annotations

from django.contrib import admin

from apps.discovery.models import AnomalyFeedback, AnomalyScore


@admin.register(AnomalyScore)
class AnomalyScoreAdmin(admin.ModelAdmin):
    list_display = ["item", "version", "score"]
    list_filter = ["version__dataset"]
    search_fields = ["item__key", "item__text"]
    list_select_related = ["item", "version"]
    raw_id_fields = ["item", "version"]
    ordering = ["version", "-score"]


@admin.register(AnomalyFeedback)
class AnomalyFeedbackAdmin(admin.ModelAdmin):
    list_display = ["item", "verdict", "user", "updated_at"]
    list_filter = ["verdict", "item__dataset"]
    search_fields = ["item__key", "item__text", "user__username"]
    list_select_related = ["item", "user"]
    raw_id_fields = ["item", "user"]
    readonly_fields = ["pair_ids", "created_at", "updated_at"]
