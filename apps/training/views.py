"""The training console (staff): start a retrain, watch it live, cancel it; compare, activate and roll back
model versions. The same checks and services as the staff API in ``api.py``.

Actions are plain form posts that redirect back (they work without JavaScript); htmx only polls the live
part of the page (``training/_live.html``) every second while a run is queued or running.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from apps.common.store_health import needs_index
from apps.datasets.models import Dataset
from apps.training import selectors, services
from apps.training.charts import LossChart, loss_chart
from apps.training.config import TrainConfigError, train_config_from
from apps.training.forms import RetrainForm
from apps.training.jobs import JobsUnavailable
from apps.training.models import ModelVersion, TrainingRun
from simapp.vectors import ActivationError, CollectionNotFound, VectorStoreUnavailable

_RUNS_SHOWN = 15
_IDENTITY_HINT = (
    "To serve the items without training (e.g. for anomaly scores before anyone labelled anything), "
    "choose the head “identity”: it indexes them with the frozen encoder."
)
# What can go wrong in the vector store when an index is switched; shown as a message, never a 500.
_INDEX_ERRORS = (ActivationError, CollectionNotFound, VectorStoreUnavailable)


@dataclass(frozen=True)
class RunRow:
    run: TrainingRun
    percent: int
    stage: str  # the stage in words ("Starting" between the claim and the first report)
    elapsed_s: float | None
    options: str  # the options asked for, in words


@dataclass(frozen=True)
class VersionRow:
    version: ModelVersion
    metric: str
    value: float | None
    frozen: float | None  # the same metric with the frozen encoder (no training), when measured
    epochs: str
    items: int | None
    train_seconds: float | None
    anomaly: str


@login_required
@require_http_methods(["GET", "POST"])
@needs_index
def training_console(request: HttpRequest, slug: str) -> HttpResponse:
    """The console; POST starts a retrain with the options of the form."""
    dataset = _staff_dataset(request, slug)
    if request.method == "GET":
        services.training_runs_reap()
        refused = _refusal(dataset, {})
        form = RetrainForm(initial={"head": "identity"} if refused else None)
        return _render(request, dataset, "training/console.html", form=form, notice=refused)

    form = RetrainForm(request.POST)
    refused = ""
    if form.is_valid():
        try:
            config = train_config_from(dataset=dataset, options=form.options())
            services.training_runs_reap()
            result = services.training_run_start(dataset=dataset, config=config, requested_by=request.user)
        except services.TrainingRefused as exc:
            refused = str(exc)
        except (TrainConfigError, JobsUnavailable) as exc:
            form.add_error(None, str(exc))
        else:
            run = result.run
            if result.created:
                messages.success(request, f"Run {run.pk} queued: it starts as soon as the worker is free.")
            else:
                messages.info(request, f"Run {run.pk} was already {run.status}: it is shown below.")
            return redirect(f"{reverse('dataset-training', args=[dataset.slug])}?run={run.pk}")
    return _render(request, dataset, "training/console.html", form=form, refused=refused, status=400)


@login_required
@require_http_methods(["GET"])
def training_live(request: HttpRequest, slug: str) -> HttpResponse:
    """The live part of the console (selected run, runs), polled by htmx while a run is active.

    When the poll finds no active run any more, the versions table comes along out of band, so the page
    shows the version the run created without a reload.
    """
    dataset = _staff_dataset(request, slug)
    services.training_runs_reap()
    return _render(request, dataset, "training/_live.html", oob=True)


@login_required
@require_http_methods(["POST"])
def training_run_cancel(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    dataset = _staff_dataset(request, slug)
    run = get_object_or_404(TrainingRun, pk=pk, dataset=dataset)
    was = run.status
    run = services.training_run_cancel(run=run)
    if was == TrainingRun.Status.QUEUED and run.status == TrainingRun.Status.CANCELLED:
        messages.success(request, f"Run {run.pk} cancelled before it started.")
    elif run.status == TrainingRun.Status.RUNNING:
        messages.success(request, f"Run {run.pk} stops at its next batch.")
    else:
        messages.info(request, f"Run {run.pk} had already ended ({run.get_status_display().lower()}).")
    return redirect(f"{reverse('dataset-training', args=[dataset.slug])}?run={run.pk}")


@login_required
@require_http_methods(["POST"])
def model_version_activate(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    dataset = _staff_dataset(request, slug)
    version = get_object_or_404(ModelVersion, pk=pk, dataset=dataset)
    try:
        version = services.model_version_activate(version=version)
    except _INDEX_ERRORS as exc:
        messages.error(request, f"Cannot activate v{version.number}: {exc}")
    else:
        messages.success(request, f"v{version.number} is active: searches use its index now.")
    return redirect("dataset-training", slug=dataset.slug)


@login_required
@require_http_methods(["POST"])
def model_version_rollback(request: HttpRequest, slug: str) -> HttpResponse:
    dataset = _staff_dataset(request, slug)
    try:
        version = services.model_version_rollback(dataset=dataset)
    except services.TrainingRefused as exc:
        messages.error(request, f"Cannot roll back: {exc}")
    except _INDEX_ERRORS as exc:
        messages.error(request, f"Cannot roll back: {exc}")
    else:
        messages.success(request, f"Rolled back: v{version.number} is active again.")
    return redirect("dataset-training", slug=dataset.slug)


# ---------------------------------------------------------------------------------------------------


def _staff_dataset(request: HttpRequest, slug: str) -> Dataset:
    if not request.user.is_staff:
        raise PermissionDenied("the training console is for staff")
    dataset = Dataset.objects.filter(slug=slug).first()
    if dataset is None:
        raise Http404(f"no dataset '{slug}'")
    return dataset


def _refusal(dataset: Dataset, config: dict[str, Any]) -> str:
    try:
        services.training_data_check(dataset=dataset, config=config)
    except services.TrainingRefused as exc:
        return str(exc)
    return ""


def _render(
    request: HttpRequest, dataset: Dataset, template: str, *, status: int = 200, **extra: Any
) -> HttpResponse:
    context = _context(dataset, selected_id=request.GET.get("run", ""))
    context |= {"identity_hint": _IDENTITY_HINT} | extra
    return render(request, template, context, status=status)


def _context(dataset: Dataset, *, selected_id: str) -> dict[str, Any]:
    runs = list(selectors.training_run_list(dataset=dataset)[:_RUNS_SHOWN])
    selected = next((run for run in runs if str(run.pk) == selected_id), None)
    if selected is None and selected_id.isdigit() and len(selected_id) < 19:  # within a 64-bit id
        selected = selectors.training_run_list(dataset=dataset).filter(pk=int(selected_id)).first()
    if selected is None and runs:
        selected = runs[0]
    versions = [_version_row(v) for v in selectors.model_version_list(dataset=dataset)]
    active = next((row.version for row in versions if row.version.is_active), None)
    now = timezone.now()
    chart: LossChart | None = None
    if selected is not None:
        # The refit phase begins after the epochs that chose the count (recorded when the run succeeded).
        epochs_run = (selected.metrics or {}).get("epochs_run")
        chart = loss_chart(
            selected.loss_history, refit_from=epochs_run if isinstance(epochs_run, int) else None
        )
    return {
        "dataset": dataset,
        "runs": [_run_row(run, now) for run in runs],
        "selected": _run_row(selected, now) if selected else None,
        "chart": chart,
        "live": any(run.is_active for run in runs),
        "versions": versions,
        "active_version": active,
        "can_roll_back": active is not None and any(row.version.number < active.number for row in versions),
    }


def _run_row(run: TrainingRun, now: Any) -> RunRow:
    if run.status == TrainingRun.Status.QUEUED:
        elapsed = (now - run.created_at).total_seconds()
    elif run.started_at is not None:
        elapsed = ((run.finished_at or now) - run.started_at).total_seconds()
    else:
        elapsed = None
    config = run.config or {}
    options = [f"head {config.get('head', 'mlp')}", f"loss {config.get('loss', 'default')}"]
    for name, label in (("epochs", "epochs"), ("lr", "lr"), ("batch_size", "batch"), ("seed", "seed")):
        if name in config:
            options.append(f"{label} {config[name]}")
    stage = run.get_stage_display()
    if run.status == TrainingRun.Status.RUNNING and run.stage == TrainingRun.Stage.QUEUED:
        stage = "Starting"
    return RunRow(
        run=run,
        percent=round(run.progress * 100),
        stage=stage,
        elapsed_s=elapsed,
        options=" · ".join(options),
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _version_row(version: ModelVersion) -> VersionRow:
    metrics = version.metrics or {}
    if metrics.get("head") == "identity" and not metrics.get("metric"):
        epochs = "—"
    elif "epochs_run" in metrics:
        epochs = str(metrics["epochs_run"])
        if metrics.get("best_epoch"):
            epochs += f" (best {metrics['best_epoch']})"
    else:
        epochs = ""
    anomaly = metrics.get("anomaly") or {}
    anomaly_text = ""
    if isinstance(anomaly, dict) and anomaly.get("scored"):
        anomaly_text = f"{anomaly['scored']} scored, k={anomaly.get('k', '?')}"
        feedback = (anomaly.get("feedback_normal") or 0) + (anomaly.get("feedback_anomaly") or 0)
        if feedback:
            anomaly_text += f", {feedback} feedback"
    return VersionRow(
        version=version,
        metric=str(metrics.get("metric") or ("frozen encoder" if metrics.get("head") == "identity" else "")),
        value=_number(metrics.get("value")),
        frozen=_number(metrics.get("frozen")),
        epochs=epochs,
        items=metrics.get("items") if isinstance(metrics.get("items"), int) else None,
        train_seconds=_number(metrics.get("train_seconds")),
        anomaly=anomaly_text,
    )
