"""The labellers' page: two items side by side, answered with the keyboard, one request per answer.

``GET /datasets/<slug>/label/?strategy=…`` shows the next pair. Answering, skipping and undoing post the
pair on screen and get the next one back in the same request: as an htmx partial (``labelling/_work.html``)
when htmx sends it, as the whole page otherwise, so the page also works without JavaScript.

The session keeps, per dataset, the last skips (so a skipped pair is not offered again right away; a
skip stores no label) and the answers given on this page (so ``u`` can take the last one back: delete it,
or restore the score it replaced). Bad input — an unknown strategy, a pair of another dataset, a score
the dataset's label mode does not have — answers 400 with the reason where the pair was, and changes
nothing.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_POST

from apps.common.store_health import needs_index
from apps.datasets.models import Dataset, Item
from apps.labelling import selectors, services
from apps.labelling.forms import AnswerForm, PairForm, form_problem
from apps.labelling.options import GRADES, LabellingOptions
from apps.labelling.queue import STRATEGIES, Next, pair_next

MAX_SKIPS = 200  # skips remembered per dataset (the oldest are forgotten, so those pairs come back)
MAX_UNDO = 50  # answers that ``u`` can take back, per dataset
GRADE_WORDS = {1: "unrelated", 2: "barely related", 3: "related", 4: "very similar", 5: "the same"}
MAX_FEATURES = 64  # feature values shown per vector item


def _dataset(slug: str) -> Dataset:
    return get_object_or_404(Dataset, slug=slug)


def _session_key(dataset: Dataset, what: str) -> str:
    return f"labelling:{dataset.pk}:{what}"


def _skipped(request: HttpRequest, dataset: Dataset) -> list[tuple[int, int]]:
    return [(a, b) for a, b in request.session.get(_session_key(dataset, "skipped"), [])]


def _next(request: HttpRequest, dataset: Dataset, options: LabellingOptions, strategy: str) -> Next:
    return pair_next(
        dataset=dataset,
        annotator=request.user,
        strategy=strategy,
        skipped=_skipped(request, dataset),
        options=options,
    )


def _answer_words(options: LabellingOptions, score: float) -> str:
    if options.graded:
        grade = round(score * (GRADES - 1)) + 1
        return f"{grade} ({GRADE_WORDS[grade]})"
    return "similar" if score >= 0.5 else "dissimilar"


def _respond(
    request: HttpRequest,
    dataset: Dataset,
    options: LabellingOptions,
    *,
    strategy: str,
    shown: Next | None,
    status_text: str = "",
    error: str = "",
    status: int = 200,
) -> HttpResponse:
    """The work area (htmx) or the whole page, with the next pair ``shown`` and the progress."""
    mine = selectors.pair_count(dataset=dataset, annotator=request.user)
    items = shown.items if shown else None
    context: dict[str, Any] = {
        "dataset": dataset,
        "options": options,
        "strategy": strategy,
        "strategies": STRATEGIES,
        "shown": shown,
        "items": items,
        "sides": [
            {"name": name, "item": item, "features": _features(item)}
            for name, item in zip("AB", items or (), strict=False)
        ],
        "answers": _answers(options),
        "mine": mine,
        "target": options.label_target,
        "percent": min(100, round(100 * mine / options.label_target)),
        "annotators": selectors.annotator_counts(dataset=dataset),
        "status_text": status_text,
        "error": error,
        # Only when there is nothing to show: counting 100,000 items is not free.
        "too_small": items is None and Item.objects.filter(dataset=dataset)[:2].count() < 2,
    }
    partial = (
        request.headers.get("HX-Request") == "true"
        and request.headers.get("HX-History-Restore-Request") != "true"
    )
    if partial:
        response = render(request, "labelling/_work.html", context | {"oob": True}, status=status)
    else:
        context["agreement"] = selectors.agreement(dataset, label_mode=options.label_mode)
        response = render(request, "labelling/page.html", context, status=status)
    patch_vary_headers(response, ["HX-Request"])
    return response


def _features(item: Item) -> dict[str, Any] | None:
    """A vector item's first values as (name, value) to show, and how many more there are."""
    if item.vector is None:
        return None
    shown = [(f"x{n}", f"{value:.4g}") for n, value in enumerate(item.vector[:MAX_FEATURES])]
    return {"shown": shown, "more": max(0, len(item.vector) - MAX_FEATURES)}


def _answers(options: LabellingOptions) -> list[dict[str, str]]:
    """The answer buttons: value posted, visible text, keyboard shortcut."""
    if options.graded:
        return [
            {"value": str(n), "text": GRADE_WORDS[n].capitalize(), "key": str(n), "tone": f"grade-{n}"}
            for n in range(1, GRADES + 1)
        ]
    return [
        {"value": "1", "text": "Similar", "key": "1", "tone": "yes"},
        {"value": "0", "text": "Dissimilar", "key": "0", "tone": "no"},
    ]


def _shown_again(dataset: Dataset, a: int | None, b: int | None, strategy: str, reason: str) -> Next | None:
    """The pair ``a``, ``b`` as a ``Next``, when both are items of ``dataset``."""
    if a is None or b is None:
        return None
    a, b = sorted((a, b))
    found = {i.pk: i for i in Item.objects.filter(dataset=dataset, pk__in=(a, b))}
    if len(found) != 2:
        return None
    return Next(items=(found[a], found[b]), strategy=strategy, used=strategy, reason=reason)


def _refuse(
    request: HttpRequest, dataset: Dataset, options: LabellingOptions, strategy: str, error: str
) -> HttpResponse:
    """400 with the reason, and a pair to go on with: nothing was stored."""
    return _respond(
        request,
        dataset,
        options,
        strategy=strategy,
        shown=_next(request, dataset, options, strategy),
        error=error,
        status=400,
    )


def _strategy_of(raw: Any) -> str:
    return raw if raw in STRATEGIES else "random"


def _posted(
    request: HttpRequest, slug: str, form: Form
) -> tuple[Dataset, LabellingOptions, str, HttpResponse | None]:
    """The dataset, its options and the strategy of a post about the pair on screen, and the 400 answer
    (``_refuse``) when ``form`` is not valid."""
    dataset = _dataset(slug)
    options = LabellingOptions.of(dataset)
    strategy = _strategy_of(request.POST.get("strategy"))
    refused = None if form.is_valid() else _refuse(request, dataset, options, strategy, form_problem(form))
    return dataset, options, strategy, refused


@require_GET
@login_required
@needs_index
def labelling_page(request: HttpRequest, slug: str) -> HttpResponse:
    """The next pair to label by the chosen strategy (``?strategy=random|uncertain|hard|review``)."""
    dataset = _dataset(slug)
    options = LabellingOptions.of(dataset)
    strategy = request.GET.get("strategy") or "random"
    if strategy not in STRATEGIES:
        return _respond(
            request,
            dataset,
            options,
            strategy="random",
            shown=None,
            error=f"Unknown strategy '{strategy[:40]}'; choose one of: {', '.join(STRATEGIES)}.",
            status=400,
        )
    return _respond(
        request, dataset, options, strategy=strategy, shown=_next(request, dataset, options, strategy)
    )


@require_POST
@login_required
@needs_index
def labelling_answer(request: HttpRequest, slug: str) -> HttpResponse:
    """Store the answer to the pair on screen (source manual, annotator = the user); show the next pair."""
    form = AnswerForm(request.POST)
    dataset, options, strategy, refused = _posted(request, slug, form)
    if refused is not None:
        return refused
    data = form.cleaned_data
    try:
        score = options.score_of(data["answer"])
        labelled = services.pair_label(
            dataset=dataset, item_ids=(data["a"], data["b"]), score=score, annotator=request.user
        )
    except ValueError as exc:  # LabelError is one
        message = str(exc)
        return _refuse(request, dataset, options, strategy, message[:1].upper() + message[1:] + ".")
    pair = labelled.pair
    answers = request.session.get(_session_key(dataset, "answers"), [])
    if not answers or answers[-1][0] != pair.pk:  # a double submit is one answer to take back
        answers.append([pair.pk, pair.item_a_id, pair.item_b_id, labelled.previous_score])
    request.session[_session_key(dataset, "answers")] = answers[-MAX_UNDO:]
    keys = dict(Item.objects.filter(pk__in=(pair.item_a_id, pair.item_b_id)).values_list("id", "key"))
    said = f"Saved: {keys.get(pair.item_a_id)} ~ {keys.get(pair.item_b_id)} {_answer_words(options, score)}."
    shown = _next(request, dataset, options, strategy)
    return _respond(request, dataset, options, strategy=strategy, shown=shown, status_text=said)


@require_POST
@login_required
@needs_index
def labelling_skip(request: HttpRequest, slug: str) -> HttpResponse:
    """Pass on the pair on screen without labelling it; it is not offered again right away."""
    form = PairForm(request.POST)
    dataset, options, strategy, refused = _posted(request, slug, form)
    if refused is not None:
        return refused
    a, b = sorted((form.cleaned_data["a"], form.cleaned_data["b"]))
    if Item.objects.filter(dataset=dataset, pk__in=(a, b)).count() != 2:
        return _refuse(
            request, dataset, options, strategy, f"Items {a} and {b} are not both items of '{dataset.slug}'."
        )
    skipped = request.session.get(_session_key(dataset, "skipped"), [])
    if [a, b] not in skipped:
        skipped.append([a, b])
    request.session[_session_key(dataset, "skipped")] = skipped[-MAX_SKIPS:]
    shown = _next(request, dataset, options, strategy)
    return _respond(request, dataset, options, strategy=strategy, shown=shown, status_text="Skipped.")


@require_POST
@login_required
@needs_index
def labelling_undo(request: HttpRequest, slug: str) -> HttpResponse:
    """Take back the user's last answer on this page and show that pair again."""
    form = PairForm(request.POST, pair_required=False)
    dataset, options, strategy, refused = _posted(request, slug, form)
    if refused is not None:
        return refused
    answers = request.session.get(_session_key(dataset, "answers"), [])
    if answers:
        pair_id, a, b, previous = answers.pop()
        request.session[_session_key(dataset, "answers")] = answers
        services.pair_label_undo(
            dataset=dataset, pair_id=pair_id, annotator=request.user, previous_score=previous
        )
        shown = _shown_again(dataset, a, b, strategy, "your last answer, taken back")
        said = "Undone: your last answer was taken back."
    else:
        shown = _shown_again(dataset, form.cleaned_data["a"], form.cleaned_data["b"], strategy, "")
        said = "Nothing to undo."
    return _respond(
        request,
        dataset,
        options,
        strategy=strategy,
        shown=shown or _next(request, dataset, options, strategy),
        status_text=said,
    )
