"""The analysts' pages: browse items, an item's neighbours steered by likes and dislikes, the anomaly
dashboard, and classification.

Server-rendered. The interactive parts are htmx partials of the same views: a request that htmx sends to
swap one element (its ``HX-Target``) gets only that element, anything else the whole page, so every page
also works as plain links and forms, and a reload keeps what the URL says. The current likes, dislikes,
filters and anomaly threshold travel in the query string; nothing of them is stored, except the
threshold when staff save it as the dataset's setting.

Views parse the request, call ``services`` / ``selectors`` and render. What cannot be answered (no active
model yet, a bad filter value, an empty text, the vector store down) is a message on the page.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.common.store_health import needs_index
from apps.datasets.models import Dataset, Item
from apps.datasets.options import DatasetOptions
from apps.datasets.selectors import dataset_label_counts, item_list
from apps.datasets.services import dataset_update
from apps.discovery import selectors, services
from apps.discovery.models import AnomalyFeedback
from apps.training.index import NoActiveModel, require_active_model
from apps.training.models import ModelVersion
from simapp.vectors import Filter, Range, VectorStoreUnavailable

T = TypeVar("T")

ITEMS_PER_PAGE = 50
ANOMALIES_PER_PAGE = 25
RESULT_LIMITS = (10, 20, 50)
STRATEGIES = {
    "average_vector": "Average vector",
    "best_score": "Best score",
}
MAX_EXAMPLES = 100  # liked or disliked items, as the API allows
MAX_TEXT = 10_000
HISTOGRAM_BINS = 40
VERDICT_FILTERS = {"unreviewed": "Unreviewed", "anomaly": "Confirmed anomalies", "normal": "Not anomalies"}
VERDICT_FILTERS_ALL = {"all": "All", **VERDICT_FILTERS}


class BadInput(ValueError):
    """A request parameter that cannot be used; the message says which and why."""


@dataclass
class Problem:
    """Why a page (or part) cannot show its answer, for ``discovery/_problem.html``."""

    message: str
    no_model: bool = False
    status: int = 400


def _attempt(call: Callable[[], T]) -> tuple[T | None, Problem | None]:
    """``call()``, or the problem that stopped it, as the page shows it."""
    try:
        return call(), None
    except NoActiveModel:
        return None, Problem("No model yet: train it first.", no_model=True, status=200)
    except VectorStoreUnavailable as exc:
        return None, Problem(f"The vector store is unavailable: {exc}", status=503)
    except (services.DiscoveryError, BadInput) as exc:
        return None, Problem(_sentence(str(exc)))


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def _dataset(slug: str) -> Dataset:
    return get_object_or_404(Dataset, slug=slug)


def _swapping(request: HttpRequest, target: str) -> bool:
    """Whether htmx asks for the element ``target`` only (a history restore asks for the whole page)."""
    return (
        request.headers.get("HX-Request") == "true"
        and request.headers.get("HX-Target") == target
        and request.headers.get("HX-History-Restore-Request") != "true"
    )


def _render(
    request: HttpRequest,
    template: str,
    partial: str,
    target: str,
    context: dict[str, Any],
    status: int = 200,
) -> HttpResponse:
    """The page, or only its ``partial`` when htmx swaps ``target``. A partial answers 200 even for a
    problem, because htmx swaps only successful answers and the message belongs where the result was."""
    if _swapping(request, target):
        response = render(request, partial, context)
    else:
        response = render(request, template, context, status=status)
    patch_vary_headers(response, ["HX-Request", "HX-Target"])
    return response


def _number(params: QueryDict, name: str, what: str) -> float | None:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BadInput(f"{what}: '{raw}' is not a number") from None
    if not math.isfinite(value):
        raise BadInput(f"{what}: '{raw}' is not a finite number")
    return value


def _ids(values: list[str], what: str) -> list[int]:
    ids = []
    for raw in values:
        if not raw.strip().isdigit():
            raise BadInput(f"{what}: '{raw}' is not an item id")
        if int(raw) not in ids:
            ids.append(int(raw))
    return ids


# -- items ------------------------------------------------------------------------------------------------


@require_GET
@login_required
def item_browse(request: HttpRequest, slug: str) -> HttpResponse:
    """The dataset's items: a text or key search and a label filter, 50 to a page."""
    dataset = _dataset(slug)
    # NUL cannot be compared in PostgreSQL (a 500); no text or label holds one anyway.
    search = request.GET.get("q", "").replace("\x00", "").strip()[:200]
    label = request.GET.get("label", "").replace("\x00", "")
    items = item_list(dataset=dataset, label=label or None, search=search)
    page = Paginator(items, ITEMS_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "dataset": dataset,
        "search": search,
        "label": label,
        "labels": dataset_label_counts(dataset=dataset, limit=1000),
        "page": page,
        "query": query.urlencode(),
    }
    return _render(request, "discovery/item_browse.html", "discovery/_item_table.html", "item-table", context)


@dataclass
class Refinement:
    """What the item page's form asks for: the likes and dislikes so far (this request's click applied),
    the strategy, how many results, and the filter."""

    liked: list[int]
    disliked: list[int]
    strategy: str
    limit: int
    filter: Filter | None

    @property
    def steered(self) -> bool:
        return bool(self.liked or self.disliked)


def _refinement(params: QueryDict, item: Item, fields: list[selectors.MetadataField]) -> Refinement:
    """The request's likes and dislikes with its click (``like``, ``dislike`` or ``undo`` an id) applied,
    and its filters: ``label``, ``metadata.<field>`` (equality), ``min.<field>`` / ``max.<field>``
    (inclusive bounds). ``BadInput`` names the first unusable value; empty form fields are ignored."""
    liked = _ids(params.getlist("liked"), "liked")
    disliked = _ids(params.getlist("disliked"), "disliked")
    for verb in ("like", "dislike", "undo"):
        for clicked in _ids(params.getlist(verb), verb):
            liked = [i for i in liked if i != clicked]
            disliked = [i for i in disliked if i != clicked]
            if clicked != item.pk and verb == "like":
                liked.append(clicked)
            elif clicked != item.pk and verb == "dislike":
                disliked.append(clicked)
    if len(liked) > MAX_EXAMPLES or len(disliked) > MAX_EXAMPLES:
        raise BadInput(f"like or dislike at most {MAX_EXAMPLES} items")
    strategy = params.get("strategy") or "average_vector"
    if strategy not in STRATEGIES:
        raise BadInput(f"unknown strategy '{strategy}'; valid: {', '.join(STRATEGIES)}")
    raw_limit = params.get("limit") or str(RESULT_LIMITS[0])
    if not raw_limit.isdigit() or int(raw_limit) not in RESULT_LIMITS:
        raise BadInput(f"results: '{raw_limit}' is not one of {', '.join(map(str, RESULT_LIMITS))}")

    kinds = {f.name: f.kind for f in fields}
    metadata: dict[str, str | int | bool] = {}
    for name in params:
        field, value = name.removeprefix("metadata."), params[name].strip()
        if not name.startswith("metadata.") or not value:
            continue
        if kinds.get(field) == "bool" or (field not in kinds and value in ("true", "false")):
            if value not in ("true", "false"):
                raise BadInput(f"{field}: '{value}' is not true or false")
            metadata[field] = value == "true"
        elif field not in kinds and re.fullmatch(r"-?\d{1,18}", value):
            metadata[field] = int(value)  # as the API reads a query string
        else:
            metadata[field] = value
    ranges: dict[str, Range] = {}
    for field in sorted({n.partition(".")[2] for n in params if n.startswith(("min.", "max."))}):
        low = _number(params, f"min.{field}", f"minimum {field}")
        high = _number(params, f"max.{field}", f"maximum {field}")
        if low is not None and high is not None and low > high:
            raise BadInput(f"{field}: the minimum {low:g} is above the maximum {high:g}")
        if low is not None or high is not None:
            ranges[field] = Range(gte=low, lte=high)
    try:
        flt = Filter(label=params.get("label", "").strip() or None, metadata=metadata, ranges=ranges)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    return Refinement(liked, disliked, strategy, int(raw_limit), None if flt.is_empty else flt)


@dataclass
class FieldControl:
    """One metadata filter of the item page's form, with what the request typed into it."""

    name: str
    kind: str  # "number": min and max; "bool": any / true / false; "text": equality
    value: str
    low: str
    high: str


def _controls(params: QueryDict, fields: list[selectors.MetadataField]) -> list[FieldControl]:
    return [
        FieldControl(
            f.name,
            f.kind,
            params.get(f"metadata.{f.name}", ""),
            params.get(f"min.{f.name}", ""),
            params.get(f"max.{f.name}", ""),
        )
        for f in fields
    ]


def _canonical_query(params: QueryDict, refinement: Refinement) -> str:
    """The query string that shows the same results again: the click folded into the liked and disliked
    sets, empty fields and defaults left out. Pushed to the browser's history after a swap, so a reload keeps them."""
    defaults = {"strategy": "average_vector", "limit": str(RESULT_LIMITS[0])}
    query = QueryDict(mutable=True)
    for name, values in params.lists():
        kept = [v for v in values if v.strip() and v != defaults.get(name)]
        if kept and name not in ("like", "dislike", "undo", "liked", "disliked"):
            query.setlist(name, kept)
    query.setlist("liked", [str(i) for i in refinement.liked])
    query.setlist("disliked", [str(i) for i in refinement.disliked])
    return query.urlencode()


@dataclass
class ResultRow:
    result: services.Result
    score_name: str  # what ``result.score`` is: "similarity", "distance" or (best_score) "score"
    closest_to: str  # "this item", or the liked item's preview
    closeness: str  # "similarity 0.912" / "distance 1.230" to that example
    metadata: list[tuple[str, Any]]


def _rows(
    results: list[services.Result], item: Item, examples: dict[int, Item], best_score: bool
) -> list[ResultRow]:
    rows = []
    for r in results:
        why = r.explanation or {}
        example = (why.get("closest_example") or {}).get("item_id")
        if example is None or example == item.pk:
            closest_to = "this item"
        elif example in examples:
            closest_to = f"liked “{examples[example].preview(60)}”"
        else:
            closest_to = f"item {example}"
        name = "similarity" if "similarity" in why else "distance"
        rows.append(
            ResultRow(
                result=r,
                score_name="score" if best_score else name,
                closest_to=closest_to,
                closeness=f"{name} {why[name]:.3f}" if name in why else "",
                metadata=sorted(r.metadata.items(), key=lambda pair: pair[0]),
            )
        )
    return rows


@require_GET
@login_required
@needs_index
def item_page(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """One item and its nearest neighbours; likes and dislikes on them steer the list
    (``services.recommend``: positive = the item and the liked ones, negative = the disliked ones)."""
    dataset = _dataset(slug)
    item = get_object_or_404(Item, dataset=dataset, pk=pk)
    fields = selectors.metadata_fields(dataset=dataset)
    params = request.GET
    context: dict[str, Any] = {
        "dataset": dataset,
        "item": item,
        "controls": _controls(params, fields),
        "labels": dataset_label_counts(dataset=dataset, limit=1000),
        "limits": RESULT_LIMITS,
        "strategies": STRATEGIES,
        "form": {
            "label": params.get("label", ""),
            "strategy": params.get("strategy") or "average_vector",
            "limit": params.get("limit") or str(RESULT_LIMITS[0]),
        },
        # Echoed as they came while the request is unusable, so fixing a filter keeps the likes.
        "liked_ids": params.getlist("liked"),
        "disliked_ids": params.getlist("disliked"),
    }
    refinement, problem = _attempt(lambda: _refinement(params, item, fields))
    if refinement is not None:
        chosen = refinement.liked + refinement.disliked
        examples = {i.pk: i for i in item_list(dataset=dataset).filter(pk__in=chosen)}
        context |= {
            "refinement": refinement,
            "liked_ids": refinement.liked,
            "disliked_ids": refinement.disliked,
            "liked": [examples[i] for i in refinement.liked if i in examples],
            "disliked": [examples[i] for i in refinement.disliked if i in examples],
        }

        def answer() -> tuple[ModelVersion, list[services.Result]]:
            if not refinement.steered:
                return services.item_neighbours(
                    dataset=dataset, item_id=item.pk, limit=refinement.limit, filter=refinement.filter
                )
            return services.recommend(
                dataset=dataset,
                positive=services.Examples(item_ids=[item.pk, *refinement.liked]),
                negative=services.Examples(item_ids=refinement.disliked),
                strategy=refinement.strategy,
                limit=refinement.limit,
                filter=refinement.filter,
            )

        found, problem = _attempt(answer)
        if found is not None:
            version, results = found
            best = refinement.steered and refinement.strategy == "best_score"
            context |= {"version": version, "rows": _rows(results, item, examples, best)}
    context["problem"] = problem
    status = problem.status if problem else 200
    response = _render(
        request, "discovery/item_page.html", "discovery/_results.html", "results", context, status
    )
    if refinement is not None and _swapping(request, "results"):
        query = _canonical_query(params, refinement)
        response["HX-Push-Url"] = request.path + (f"?{query}" if query else "")
    return response


# -- anomalies --------------------------------------------------------------------------------------------


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    lo: float
    hi: float
    count: int
    above: bool


@dataclass
class Chart:
    """An SVG histogram's geometry, in the viewBox's units."""

    width: int
    height: int
    left: int
    top: int
    right: int  # x of the plot's right edge
    bottom: float  # y of the x axis
    bars: list[Bar]
    ymax: int
    ticks: list[tuple[float, str, str]]  # (x, label, text-anchor) along the score axis
    line_x: float
    line_note: str  # where the threshold lies when it is off the chart
    label_x: float
    label_anchor: str  # "start" (label right of the line) or "end" (left of it, near the right edge)


def _chart(histogram: dict[str, Any], threshold: float | None) -> Chart | None:
    bins = histogram["bins"]
    if not bins:
        return None
    width, height, left, right, top, bottom = 1000, 240, 44, 12, 20, 30
    lo, hi = bins[0]["lo"], bins[-1]["hi"]
    span = (hi - lo) or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom
    ymax = max(b["count"] for b in bins) or 1

    def x_of(score: float) -> float:
        return left + (score - lo) / span * plot_w

    step = plot_w / len(bins)
    bars = []
    for n, b in enumerate(bins):
        h = b["count"] / ymax * plot_h
        bars.append(
            Bar(
                x=round(left + n * step + 0.5, 2),
                y=round(top + plot_h - h, 2),
                width=round(max(step - 1.0, 1.0), 2),
                height=round(h, 2),
                lo=b["lo"],
                hi=b["hi"],
                count=b["count"],
                above=threshold is not None and b["lo"] >= threshold,
            )
        )
    anchors = ["start", "middle", "middle", "middle", "end"]  # the end labels stay inside the chart
    ticks = [(round(x_of(lo + span * f / 4), 2), f"{lo + span * f / 4:.3g}", anchors[f]) for f in range(5)]
    note = ""
    if threshold is None:
        line_x = x_of(hi)
    elif threshold > hi:
        line_x, note = x_of(hi), "above every score"
    elif threshold < lo:
        line_x, note = x_of(lo), "below every score"
    else:
        line_x = x_of(threshold)
    right_half = line_x > left + plot_w * 0.7
    return Chart(
        width=width,
        height=height,
        left=left,
        top=top,
        right=left + plot_w,
        bottom=top + plot_h,
        bars=bars,
        ymax=ymax,
        ticks=ticks,
        line_x=round(line_x, 2),
        line_note=note,
        label_x=round(line_x - 5 if right_half else line_x + 5, 2),
        label_anchor="end" if right_half else "start",
    )


def _feedback_row(version: ModelVersion, item: Item, user: Any) -> dict[str, Any]:
    """One item as a row of the top-anomalies table (the shape of ``selectors.anomaly_list``'s rows)."""
    detail = selectors.anomaly_item(version=version, item=item, user=user)
    verdicts = [f["verdict"] for f in detail["feedback"]]
    return {
        "item": detail["item"],
        "score": detail["score"],
        "rank": detail["rank"],
        "feedback": {"anomaly": verdicts.count("anomaly"), "normal": verdicts.count("normal")},
        "my_verdict": detail["my_verdict"],
    }


@require_GET
@login_required
@needs_index
def anomaly_dashboard(request: HttpRequest, slug: str) -> HttpResponse:
    """The score histogram with the threshold, and the items above it, most anomalous first.

    ``threshold`` (a query parameter) tries another threshold without saving it; staff can save it.
    """
    dataset = _dataset(slug)
    verdict = request.GET.get("verdict") or "all"
    context: dict[str, Any] = {"dataset": dataset, "verdict": verdict, "verdicts": VERDICT_FILTERS_ALL}
    active, problem = _attempt(lambda: require_active_model(dataset))
    stored = None
    if active is not None:
        stored, problem = _attempt(lambda: services.anomaly_threshold(dataset, active[0]))
    if active is None or stored is None:
        context["problem"] = problem
        status = problem.status if problem else 200
        return _render(
            request, "discovery/anomalies.html", "discovery/_anomaly_board.html", "board", context, status
        )
    version = active[0]
    # A bad parameter is said on the page; the stored threshold and all verdicts apply instead of it.
    wrong = []
    if verdict not in VERDICT_FILTERS_ALL:
        wrong.append(f"show: '{verdict}' is not one of {', '.join(VERDICT_FILTERS_ALL)}")
        verdict = "all"
    threshold = stored.value
    try:
        asked = _number(request.GET, "threshold", "threshold")
    except BadInput as exc:
        wrong.append(str(exc))
    else:
        threshold = stored.value if asked is None else asked
    if wrong:
        context["problem"] = Problem(_sentence("; ".join(wrong)))
    status = 400 if wrong else 200
    histogram = selectors.anomaly_histogram(version=version, bins=HISTOGRAM_BINS)
    raw_page = request.GET.get("page", "1")
    page_number = min(int(raw_page), 10**6) if raw_page.isdigit() and int(raw_page) > 0 else 1
    rows = selectors.anomaly_list(
        dataset=dataset,
        version=version,
        user=request.user,
        verdict="any" if verdict == "all" else verdict,
        above=threshold,
        limit=ANOMALIES_PER_PAGE,
        offset=(page_number - 1) * ANOMALIES_PER_PAGE,
    )
    query = request.GET.copy()
    query.pop("page", None)
    context |= {
        "version": version,
        "verdict": verdict,
        "stored": stored,
        "threshold": threshold,
        # The box shows what was typed; empty, it means the threshold in use (its placeholder).
        "threshold_typed": request.GET.get("threshold", "") if "problem" not in context else "",
        "histogram": histogram,
        "chart": _chart(histogram, threshold),
        "above": selectors.anomaly_count_above(version=version, threshold=threshold),
        "rows": rows.results,
        "count": rows.count,
        "page_number": page_number,
        "first": (page_number - 1) * ANOMALIES_PER_PAGE + 1,
        "last": (page_number - 1) * ANOMALIES_PER_PAGE + len(rows.results),
        "has_next": page_number * ANOMALIES_PER_PAGE < rows.count,
        "query": query.urlencode(),
        "slider_step": _slider_step(histogram),
    }
    return _render(
        request, "discovery/anomalies.html", "discovery/_anomaly_board.html", "board", context, status
    )


def _slider_step(histogram: dict[str, Any]) -> float:
    if not histogram["n"] or histogram["max"] <= histogram["min"]:
        return 0.001
    return float(f"{(histogram['max'] - histogram['min']) / 500:.2g}")


@require_POST
@login_required
def anomaly_threshold_save(request: HttpRequest, slug: str) -> HttpResponse:
    """Staff: keep the threshold as the dataset's ``anomaly_threshold`` setting, or (``clear``) go back to
    the contamination quantile."""
    dataset = _dataset(slug)
    if not request.user.is_staff:
        raise PermissionDenied("only staff change a dataset's settings")
    url = reverse("dataset-anomalies", args=[dataset.slug])
    try:
        value = None if "clear" in request.POST else _number(request.POST, "threshold", "threshold")
        if value is None and "clear" not in request.POST:
            raise BadInput("threshold: give a number")
        changed = {**dataset.settings, "anomaly_threshold": value}
        DatasetOptions.parse(changed)
    except ValueError as exc:
        messages.error(request, f"Not saved. {_sentence(str(exc))}.")
        return redirect(url)
    dataset_update(dataset=dataset, settings=changed)
    if value is None:
        messages.success(request, "Saved: the threshold follows the contamination share again.")
    else:
        messages.success(request, f"Saved: the anomaly threshold is now {value:g}.")
    return redirect(url)


@require_GET
@login_required
def anomaly_neighbours(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """The drill-down of one row: the item in full and its nearest neighbours (an htmx partial)."""
    dataset = _dataset(slug)
    item = get_object_or_404(Item, dataset=dataset, pk=pk)
    found, problem = _attempt(lambda: services.item_neighbours(dataset=dataset, item_id=item.pk, limit=5))
    context = {"dataset": dataset, "item": item, "problem": problem}
    if found is not None:
        context["rows"] = _rows(found[1], item, {}, best_score=False)
    return render(request, "discovery/_neighbours.html", context)


FEEDBACK_ACTIONS = ("anomaly", "normal", "withdraw")


@require_POST
@login_required
def anomaly_feedback(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Your verdict on one item (``verdict``: anomaly, normal, or withdraw). htmx gets the updated row."""
    dataset = _dataset(slug)
    item = get_object_or_404(Item, dataset=dataset, pk=pk)
    verdict = request.POST.get("verdict", "")
    htmx = request.headers.get("HX-Request") == "true"
    if verdict not in FEEDBACK_ACTIONS:
        message = f"Unknown verdict '{verdict}'; valid: {', '.join(FEEDBACK_ACTIONS)}."
        if htmx:
            return HttpResponse(message, status=400, content_type="text/plain")
        messages.error(request, message)
        return redirect("dataset-anomalies", dataset.slug)
    if verdict == "withdraw":
        services.anomaly_feedback_clear(item=item, user=request.user)
    else:
        services.anomaly_feedback_set(item=item, user=request.user, verdict=verdict)
    if not htmx:
        done = "withdrawn" if verdict == "withdraw" else AnomalyFeedback.Verdict(verdict).label.lower()
        messages.success(request, f"Your verdict on “{item.preview(60)}”: {done}.")
        back = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure()):
            back = reverse("dataset-anomalies", args=[dataset.slug])
        return redirect(back)
    active, problem = _attempt(lambda: require_active_model(dataset))
    if active is None:
        assert problem is not None
        return HttpResponse(problem.message, content_type="text/plain")
    row = _feedback_row(active[0], item, request.user)
    return render(request, "discovery/_anomaly_row.html", {"dataset": dataset, "row": row, "saved": True})


# -- classification ---------------------------------------------------------------------------------------


def _vector(raw: str) -> list[float]:
    numbers = []
    for token in re.split(r"[\s,;]+", raw.strip().strip("[]")):
        if not token:
            continue
        try:
            value = float(token)
        except ValueError:
            raise BadInput(f"'{token}' is not a number: give the features as numbers") from None
        if not math.isfinite(value):
            raise BadInput(f"'{token}' is not a finite number")
        numbers.append(value)
    if not numbers:
        raise BadInput("enter the features to classify, as numbers separated by commas or spaces")
    return numbers


@require_http_methods(["GET", "POST"])
@login_required
@needs_index
def classify_page(request: HttpRequest, slug: str) -> HttpResponse:
    """A text (or feature vector) in; its top labels with confidences, or "unknown", and the nearest
    labelled items out."""
    dataset = _dataset(slug)
    vector_data = dataset.modality == Dataset.Modality.VECTOR
    context: dict[str, Any] = {"dataset": dataset, "vector_data": vector_data, "text": ""}
    status = 200
    if request.method == "POST":
        raw = request.POST.get("text", "")
        context["text"] = raw

        def answer() -> tuple[ModelVersion, list[services.Classification]]:
            if vector_data:
                return services.classify(dataset=dataset, vectors=[_vector(raw)])
            if not raw.strip():
                raise BadInput("enter a text to classify")
            if len(raw) > MAX_TEXT:
                raise BadInput(f"the text is over {MAX_TEXT} characters")
            return services.classify(dataset=dataset, texts=[raw])

        found, problem = _attempt(answer)
        if found is not None:
            version, (classification,) = found
            context |= {"version": version, "answer": classification}
        context["problem"] = problem
        status = problem.status if problem else 200
    else:
        _, context["problem"] = _attempt(lambda: require_active_model(dataset))
    return _render(
        request,
        "discovery/classify.html",
        "discovery/_classification.html",
        "classification",
        context,
        status,
    )
