"""Dataset pages (server-rendered): the list, a dataset's overview, and importing files (staff)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from apps.common.limits import upload_limit_bytes
from apps.datasets import selectors, services
from apps.datasets.formats import DataFormatError
from apps.datasets.forms import ImportForm, NewDatasetImportForm
from apps.datasets.models import Dataset
from apps.datasets.signals import ItemsChangeUnavailable
from apps.labelling.selectors import agreement, pair_list
from apps.training.selectors import model_version_active, model_versions_active

_NOTICES_SHOWN = 5


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return redirect("dataset-list")


@login_required
@require_http_methods(["GET", "POST"])
def dataset_list(request: HttpRequest) -> HttpResponse:
    """Every dataset with its counts and active model; staff also import a file as a new dataset (POST)."""
    form = NewDatasetImportForm() if request.user.is_staff else None
    import_error = ""
    if request.method == "POST":
        _require_staff(request)
        form = NewDatasetImportForm(request.POST, request.FILES)
        if form.is_valid():
            data = form.cleaned_data
            import_error = _import(
                request, form, slug=data["slug"], name=data["name"] or data["slug"], create_missing=True
            )
            if not import_error:
                return redirect("dataset-detail", slug=data["slug"])
        else:
            import_error = _form_problems(form)
    datasets = list(selectors.dataset_list())
    active = model_versions_active()
    for dataset in datasets:
        dataset.active_version = active.get(dataset.pk)
    context = {
        "datasets": datasets,
        "form": form,
        "import_error": import_error,
        "upload_limit_mb": _limit_mb(),
    }
    return render(request, "datasets/list.html", context, status=400 if import_error else 200)


@login_required
@require_http_methods(["GET"])
def dataset_detail(request: HttpRequest, slug: str) -> HttpResponse:
    dataset = _dataset(slug)
    form = ImportForm() if request.user.is_staff else None
    return _render_detail(request, dataset, form=form)


@login_required
@require_http_methods(["POST"])
def dataset_file_import(request: HttpRequest, slug: str) -> HttpResponse:
    """Import a file into the dataset (staff): all or nothing; on a bad file the importer's reason is shown."""
    _require_staff(request)
    dataset = _dataset(slug)
    form = ImportForm(request.POST, request.FILES)
    if form.is_valid():
        import_error = _import(request, form, slug=dataset.slug, name="", create_missing=False)
        if not import_error:
            return redirect("dataset-detail", slug=dataset.slug)
    else:
        import_error = _form_problems(form)
    return _render_detail(request, dataset, form=form, import_error=import_error, status=400)


def _limit_mb() -> str:
    return f"{upload_limit_bytes() / 1048576:g}"


def _require_staff(request: HttpRequest) -> None:
    if not request.user.is_staff:
        raise PermissionDenied("only staff import files")


def _dataset(slug: str) -> Dataset:
    dataset = selectors.dataset_get(slug=slug)
    if dataset is None:
        raise Http404(f"no dataset '{slug}'")
    return dataset


def _import(request: HttpRequest, form: ImportForm, *, slug: str, name: str, create_missing: bool) -> str:
    """Run the import of a valid form; '' and a success message, or the importer's one-line reason."""
    data = form.cleaned_data
    upload = data["file"]
    try:
        with upload.open("rb") as fp:
            result = services.dataset_import(
                slug=slug,
                fp=fp,
                source_name=upload.name,
                fmt=data["format"],
                split=data["split"] or None,
                columns=form.columns(),
                create_missing=create_missing,
                name=name,
            )
    except (DataFormatError, ItemsChangeUnavailable) as exc:
        return str(exc)
    verb = "created" if result.dataset_created else "imported into"
    messages.success(
        request,
        f"{upload.name} {verb} {result.dataset}: items {result.items_created} new, {result.items_updated} "
        f"updated, {result.items_unchanged} unchanged; pairs {result.pairs_created} new, "
        f"{result.pairs_updated} updated, {result.pairs_unchanged} unchanged.",
    )
    for notice in result.notices[:_NOTICES_SHOWN]:
        messages.warning(request, notice)
    if len(result.notices) > _NOTICES_SHOWN:
        messages.warning(request, f"…and {len(result.notices) - _NOTICES_SHOWN} more notices.")
    return ""


def _form_problems(form: ImportForm) -> str:
    """The form's errors in one line, for the alert above it (each is also shown by its field)."""
    problems = []
    for name, errors in form.errors.items():
        field = form.fields.get(name)
        label = (field.label or name.replace("_", " ").capitalize()) if field else ""
        problems.append(f"{label}: {' '.join(errors)}" if label else " ".join(errors))
    return "The import was not started. " + "; ".join(problems)


def _render_detail(
    request: HttpRequest,
    dataset: Dataset,
    *,
    form: ImportForm | None,
    import_error: str = "",
    status: int = 200,
) -> HttpResponse:
    context: dict[str, Any] = {
        "dataset": dataset,
        "stats": selectors.dataset_stats(dataset=dataset),
        "active_version": model_version_active(dataset=dataset),
        "labels": selectors.dataset_label_counts(dataset=dataset, limit=30),
        "items": selectors.item_list(dataset=dataset)[:20],
        "pairs": pair_list(dataset=dataset).order_by("-updated_at")[:20],
        "agreement": agreement(dataset),
        "form": form,
        "import_error": import_error,
        "upload_limit_mb": _limit_mb(),
    }
    return render(request, "datasets/detail.html", context, status=status)
