"""Dataset pages (server-rendered)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from apps.datasets import selectors
from apps.labelling.selectors import pair_list


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return redirect("dataset-list")


@login_required
def dataset_list(request: HttpRequest) -> HttpResponse:
    return render(request, "datasets/list.html", {"datasets": selectors.dataset_list()})


@login_required
def dataset_detail(request: HttpRequest, slug: str) -> HttpResponse:
    dataset = selectors.dataset_get(slug=slug)
    if dataset is None:
        raise Http404(f"no dataset '{slug}'")
    context = {
        "dataset": dataset,
        "stats": selectors.dataset_stats(dataset=dataset),
        "labels": selectors.dataset_label_counts(dataset=dataset, limit=30),
        "items": selectors.item_list(dataset=dataset)[:20],
        "pairs": pair_list(dataset=dataset).order_by("-updated_at")[:20],
    }
    return render(request, "datasets/detail.html", context)
