from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected
from django.contrib.admin.utils import NestedObjects
from django.contrib.auth import get_permission_codename
from django.db import router, transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from apps.datasets import selectors
from apps.datasets.formats import DataFormatError
from apps.datasets.models import Dataset, Item
from apps.datasets.services import (
    dataset_delete,
    item_content_hash,
    item_validate,
    items_delete,
    json_value_problem,
)
from apps.datasets.signals import (
    DatasetDeleteRefused,
    DatasetDeleteUnavailable,
    ItemsChangeUnavailable,
    dataset_will_be_deleted,
    items_changed,
    items_will_change,
)


class _GuardedDelete:
    """Admin mixin: deleting one row (``delete_view``) or the selected ones (the "delete selected" action)
    asks the listeners first (``check_delete``) and refuses with a message, instead of Django's page. A
    refusal that comes only from the deletion itself (the state changed since the check) rolls it back,
    all of it, and is said the same way."""

    # What ``check_delete`` and the deleting services raise to refuse.
    delete_refusals: tuple[type[Exception], ...] = ()

    def check_delete(self, request: HttpRequest, objs: Any) -> None:
        """Raise one of ``delete_refusals`` unless ``objs`` (a list or a queryset) may be deleted now."""
        raise NotImplementedError

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        if "delete_selected" in actions:
            _, name, description = actions["delete_selected"]
            actions["delete_selected"] = (self._delete_selected, name, description)
        return actions

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        obj = self.get_object(request, object_id)
        if request.method == "POST" and obj is not None and not self._may_delete(request, [obj]):
            return HttpResponseRedirect(request.path)
        try:
            # Django's delete_view runs in a transaction: a late refusal rolls it back.
            return super().delete_view(request, object_id, extra_context)
        except self.delete_refusals as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(request.path)

    def _delete_selected(self, modeladmin: Any, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        # Asked before Django's confirmation page, and again at the confirmation's post: nothing is deleted
        # (and no "deleted" message shown) while one of them cannot go. All or nothing.
        if not self._may_delete(request, queryset):
            return None
        try:
            with transaction.atomic(using=router.db_for_write(queryset.model)):
                return delete_selected(modeladmin, request, queryset)
        except self.delete_refusals as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return None

    def _may_delete(self, request: HttpRequest, objs: Any) -> bool:
        """Whether ``check_delete`` lets ``objs`` be deleted now; else says why."""
        try:
            self.check_delete(request, objs)
        except self.delete_refusals as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return False
        return True


class DatasetAdminForm(forms.ModelForm):
    class Meta:
        model = Dataset
        fields = ["slug", "name", "description", "modality", "encoder", "settings"]

    def clean_settings(self) -> Any:
        # As the API checks them: a mapping, and nothing PostgreSQL's jsonb refuses (a 500 otherwise).
        value = self.cleaned_data["settings"]
        if not isinstance(value, dict):
            raise forms.ValidationError('must be a JSON object, e.g. {"k": 10}')
        problem = json_value_problem(value)
        if problem:
            raise forms.ValidationError(problem)
        return value


@admin.register(Dataset)
class DatasetAdmin(_GuardedDelete, admin.ModelAdmin):
    form = DatasetAdminForm
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

    def get_readonly_fields(self, request: HttpRequest, obj: Dataset | None = None) -> list[str]:
        # The index and model files are named after the slug; items are of one modality.
        fixed = ["slug"] if obj else []
        if obj and obj.items.exists():
            fixed.append("modality")
        return fixed + list(self.readonly_fields)

    def get_prepopulated_fields(self, request: HttpRequest, obj: Dataset | None = None) -> dict[str, Any]:
        return {} if obj else dict(self.prepopulated_fields)

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

    # -- deleting: through dataset_delete, which takes the runs, versions, index and model files along ------

    # Why a dataset cannot be deleted now: a run of it trains; its index cannot be reached.
    delete_refusals = (DatasetDeleteRefused, DatasetDeleteUnavailable)

    def check_delete(self, request: HttpRequest, objs: Any) -> None:
        for dataset in objs:
            dataset_will_be_deleted.send(sender=Dataset, dataset=dataset)

    def delete_model(self, request: HttpRequest, obj: Dataset) -> None:
        dataset_delete(dataset=obj)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for dataset in list(queryset):
            dataset_delete(dataset=dataset)

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, Any, set[str], list[Any]]:
        """Django's list of what goes with the datasets, for the confirmation page, less two refusals that
        do not hold when a whole dataset goes: a model version protects its run, and the admin of model
        versions refuses the active one alone. ``dataset_delete`` deletes the versions first, so only the
        user's permission to delete each kind of row counts."""
        to_delete, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        if not protected and not perms_needed:
            return to_delete, model_count, perms_needed, protected
        collector = NestedObjects(using=router.db_for_write(Dataset))
        collector.collect(list(objs))
        deleted = {(type(obj), obj.pk) for instances in collector.data.values() for obj in instances}
        if any((type(obj), obj.pk) not in deleted for obj in collector.protected):
            return to_delete, model_count, perms_needed, protected  # protected by something that stays
        models = {*collector.data, *(type(obj) for obj in collector.protected)}
        perms_needed = {
            str(model._meta.verbose_name)
            for model in models
            if self.admin_site.is_registered(model)
            and not request.user.has_perm(
                f"{model._meta.app_label}.{get_permission_codename('delete', model._meta)}"
            )
        }
        return to_delete, model_count, perms_needed, []


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


class ItemAdminForm(forms.ModelForm):
    """Accepts what an import would accept, and stores it as an import would (keys and labels trimmed,
    numbers as floats); the model's JSON fields alone take any JSON, e.g. a vector of strings."""

    class Meta:
        model = Item
        fields = ["dataset", "key", "text", "vector", "label", "metadata"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        dataset = data.get("dataset") if "dataset" in self.fields else self.instance.dataset
        if dataset is None or self.errors:
            return data
        names = ("key", "text", "vector", "label", "metadata")
        try:
            record = item_validate(dataset=dataset, values={name: data.get(name) for name in names})
        except DataFormatError as exc:
            raise forms.ValidationError(
                {exc.field if exc.field in self.fields else None: exc.message}
            ) from None
        data.update(key=record.key, text=record.text, vector=record.vector, label=record.label)
        data["metadata"] = record.metadata
        try:
            items_will_change.send(sender=Item, dataset=dataset)  # a listener may refuse: nothing saved
        except ItemsChangeUnavailable as exc:
            raise forms.ValidationError(str(exc)) from None
        return data


@admin.register(Item)
class ItemAdmin(_GuardedDelete, admin.ModelAdmin):
    form = ItemAdminForm
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

    def get_readonly_fields(self, request: HttpRequest, obj: Item | None = None) -> list[str]:
        # Moving an item to another dataset would leave its pairs pointing across datasets.
        return (["dataset"] if obj else []) + list(self.readonly_fields)

    def save_model(self, request: HttpRequest, obj: Item, form: Any, change: bool) -> None:
        # The embedding cache is keyed by content: an edit here must move the hash with the content.
        obj.content_hash = item_content_hash(text=obj.text, vector=obj.vector)
        super().save_model(request, obj, form, change)
        # Listeners (the active index) learn of the edit like of any import.
        transaction.on_commit(lambda: items_changed.send(sender=Item, dataset=obj.dataset, item_ids=[obj.pk]))

    # Why items cannot be deleted now: a listener (the active index) cannot follow the change.
    delete_refusals = (ItemsChangeUnavailable,)

    def check_delete(self, request: HttpRequest, objs: Any) -> None:
        if isinstance(objs, QuerySet):
            dataset_ids = list(objs.values_list("dataset_id", flat=True).distinct())
        else:
            dataset_ids = [item.dataset_id for item in objs]
        for dataset in Dataset.objects.filter(pk__in=dataset_ids):
            items_will_change.send(sender=Item, dataset=dataset)

    def delete_model(self, request: HttpRequest, obj: Item) -> None:
        items_delete(dataset=obj.dataset, item_ids=[obj.pk])

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for dataset_id, ids in _ids_by_dataset(queryset).items():
            items_delete(dataset=Dataset.objects.get(pk=dataset_id), item_ids=ids)


def _ids_by_dataset(queryset: Any) -> dict[int, list[int]]:
    grouped: dict[int, list[int]] = {}
    for pk, dataset_id in queryset.values_list("id", "dataset_id"):
        grouped.setdefault(dataset_id, []).append(pk)
    return grouped
