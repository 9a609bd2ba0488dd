from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.datasets.admin import DatasetAdmin
from apps.training import services
from apps.training.config import train_config_from
from apps.training.jobs import JobsUnavailable
from apps.training.models import ModelVersion, TrainingRun
from simapp.vectors import ActivationError, CollectionNotFound


@admin.action(description="Retrain selected datasets")
def retrain_datasets(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Any]) -> None:
    for dataset in queryset:
        try:
            result = services.training_run_start(
                dataset=dataset,
                config=train_config_from(dataset=dataset, options={}),
                requested_by=request.user,
            )
        except (services.TrainingRefused, JobsUnavailable) as exc:
            modeladmin.message_user(request, str(exc), level=messages.ERROR)
            continue
        verb = "started" if result.created else "is already running"
        modeladmin.message_user(
            request, f"{dataset.slug}: retrain run {result.run.pk} {verb}.", level=messages.SUCCESS
        )


# The training app adds its action to the dataset admin, so datasets need not know about training.
DatasetAdmin.actions = [*(DatasetAdmin.actions or []), retrain_datasets]


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "dataset",
        "status",
        "stage",
        "percent",
        "device",
        "requested_by",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "dataset"]
    list_select_related = ["dataset", "requested_by"]
    search_fields = ["dataset__slug", "error"]
    actions = ["cancel_runs"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # runs are started by the retrain action or the API, which check the data first

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="progress")
    def percent(self, obj: TrainingRun) -> str:
        return f"{obj.progress * 100:.0f}%"

    @admin.action(description="Cancel selected runs")
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[TrainingRun]) -> None:
        for run in queryset:
            services.training_run_cancel(run=run)
        self.message_user(request, f"cancel requested for {queryset.count()} run(s)")


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["dataset", "number", "is_active", "collection", "created_at", "activated_at"]
    list_filter = ["dataset", "is_active"]
    list_select_related = ["dataset"]
    actions = ["activate_version"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # versions come from training runs

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The active version serves the index: activate another one (or roll back) before deleting it.
        return obj is None or not obj.is_active

    @admin.action(description="Activate the selected version (one per dataset)")
    def activate_version(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "select exactly one version to activate", level=messages.ERROR)
            return
        version = queryset.get()
        try:
            version = services.model_version_activate(version=version)
        except (ActivationError, CollectionNotFound) as exc:
            # E.g. its index was pruned: say so on the page (as the API does) rather than a server error.
            self.message_user(
                request,
                f"cannot activate {version.dataset.slug} v{version.number}: {exc}",
                level=messages.ERROR,
            )
            return
        self.message_user(request, f"{version.dataset.slug} now serves v{version.number}")
