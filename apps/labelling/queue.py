"""The annotation queue: the next pair of items a labeller is asked about, by strategy.

Every strategy offers only pairs that this labeller has not labelled yet and has not just skipped
(``skipped``: the page keeps the last skips in the session; skips are never stored as labels). Each
request samples afresh, so the cost does not grow with the dataset: ids are drawn at random between the
dataset's smallest and largest item id and looked up, never loading every item.

- ``random``: two random items.
- ``uncertain``: the pairs the active model is least sure about. Candidates are item-neighbour pairs
  from the active index (the ``NEIGHBOURS`` nearest of a few random anchor items) plus a few random
  partners of each anchor, so that they reach both sides of the decision threshold; the pair whose
  similarity is closest to the threshold wins. The threshold, by default, comes from the data: halfway
  between how similar the anchors are to their ``NEAR`` nearest neighbours (what "the same" looks like to
  this model) and how similar they are to random items (what "unrelated" looks like). A fixed threshold
  such as score 0.5 (cosine 0 under the package's ``(cos + 1) / 2`` convention) does not work as a
  default: on a trained CLINC150 slice (tests/labelling/test_queue.py) every pair has a cosine between
  0.24 and 0.99 (different intents: median 0.47; same intent: median 0.87, lowest 0.72), so score 0.5
  would always pick the pairs the model is surest are unrelated. The dataset setting
  ``uncertain_threshold`` (a [0, 1] score) fixes the threshold where a team knows better. The same
  midpoint rule serves Euclidean indexes (vector datasets), in distances.
- ``hard``: pairs the model gets wrong by the item labels: near neighbours with different labels (the
  nearest first) or far items with the same label (the farthest first), half of the time each.
- ``review``: pairs that other annotators labelled but that have fewer annotators than the dataset's
  ``annotators_per_pair`` (so, at 2, pairs labelled by exactly one other person), most annotated first,
  then oldest first.

``uncertain`` and ``hard`` need an active model (and ``hard`` item labels); ``review`` needs
``annotators_per_pair`` of 2 or more and something to review. When a strategy cannot run, the queue
falls back to ``random`` and ``Next.note`` says why, for the page to show.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Any

import numpy as np
from django.db.models import Count, Min, Q

from apps.common.store_health import vector_store_problem
from apps.datasets.models import Dataset, Item
from apps.labelling.models import Pair
from apps.labelling.options import LabellingOptions
from apps.training.index import active_model, index_alias, vector_store
from simapp.vectors import Filter, VectorStoreError

STRATEGIES: dict[str, str] = {
    "random": "Random pairs",
    "uncertain": "Uncertain: the model is unsure",
    "hard": "Hard: the model disagrees with the labels",
    "review": "Review: pairs another annotator labelled",
}
ANCHORS = 8  # random items whose neighbourhoods give the uncertain and hard candidates
NEIGHBOURS = 50  # nearest neighbours asked for per anchor
# Deeper for hard, since a trained model puts same-label items nearest: at 100,000 CLINC150 items, 50
# found a different label for 19% of the picks, 100 for 27%, 200 for 36% but at 1.5x the time (and the
# allocations that bring Python's full garbage collections, ~160 ms each in a process with torch loaded).
HARD_NEIGHBOURS = 100
NEAR = 10  # the nearest few whose similarity stands for "the same" in the uncertain threshold
PARTNERS = 8  # random partners per anchor (uncertain), so candidates span both sides of the threshold
SAME_LABEL = 64  # same-label items compared per anchor (hard, far side)
SMALL = 200  # datasets whose item ids span at most this many: choose among all pairs
SAMPLE_TRIES = 4

Key = tuple[int, int]


class UnknownStrategy(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown strategy '{name}'; choose one of: {', '.join(STRATEGIES)}")


@dataclass
class Next:
    """What to show: the pair (``items``, ``item_a_id < item_b_id``) or ``None`` when nothing is left."""

    items: tuple[Item, Item] | None
    strategy: str  # the strategy asked for
    used: str  # the strategy that chose the pair
    reason: str = ""  # why this pair, in words
    note: str = ""  # why ``used`` differs from ``strategy``


class _Fallback(Exception):
    """The strategy cannot run here; the message says why."""


@dataclass
class _Context:
    dataset: Dataset
    annotator: Any
    skipped: set[Key]
    options: LabellingOptions
    rng: random.Random
    _bounds: tuple[int, int] | None = field(default=None, init=False)

    @property
    def bounds(self) -> tuple[int, int] | None:
        if self._bounds is None:
            # Two index look-ups: SQLite scans every item of the dataset for MIN and MAX in one query.
            ids = Item.objects.filter(dataset=self.dataset).values_list("id", flat=True)
            lo, hi = ids.order_by("id").first(), ids.order_by("-id").first()
            if lo is not None and hi is not None:
                self._bounds = (lo, hi)
        return self._bounds

    def sample_ids(self, n: int) -> list[int]:
        """About ``n`` distinct random item ids of the dataset (fewer in a small one), in random order."""
        bounds = self.bounds
        if bounds is None:
            return []
        lo, hi = bounds
        if hi - lo + 1 <= 2 * n:
            ids = list(Item.objects.filter(dataset=self.dataset).values_list("id", flat=True))
        else:
            ids = []
            for _ in range(SAMPLE_TRIES):
                drawn = {self.rng.randint(lo, hi) for _ in range(2 * n)}
                ids = list(
                    Item.objects.filter(dataset=self.dataset, pk__in=drawn).values_list("id", flat=True)
                )
                if len(ids) >= min(n, 2):
                    break
            else:  # ids of this dataset are sparse among other datasets' ids
                ids = list(
                    Item.objects.filter(dataset=self.dataset).order_by("?").values_list("id", flat=True)[:n]
                )
        self.rng.shuffle(ids)
        return ids[:n]

    def fresh(self, keys: Iterable[Key]) -> list[Key]:
        """``keys`` (in order, without repeats) that this annotator has neither labelled nor just skipped."""
        wanted = list(dict.fromkeys(k for k in keys if k[0] != k[1] and k not in self.skipped))
        if not wanted:
            return []
        done = set(
            Pair.objects.filter(
                dataset=self.dataset,
                annotator=self.annotator,
                item_a_id__in={a for a, _ in wanted},
                item_b_id__in={b for _, b in wanted},
            ).values_list("item_a_id", "item_b_id")
        )
        return [k for k in wanted if k not in done]


def pair_next(
    *,
    dataset: Dataset,
    annotator: Any,
    strategy: str = "random",
    skipped: Collection[Key] = (),
    options: LabellingOptions | None = None,
    rng: random.Random | None = None,
) -> Next:
    """The next pair for ``annotator`` by ``strategy`` (see the module docstring); ``UnknownStrategy``
    for a name not in ``STRATEGIES``."""
    if strategy not in STRATEGIES:
        raise UnknownStrategy(strategy)
    context = _Context(
        dataset=dataset,
        annotator=annotator,
        skipped={_key(a, b) for a, b in skipped},
        options=options or LabellingOptions.of(dataset),
        rng=rng or random.Random(),
    )
    note = ""
    if strategy != "random":
        try:
            found = _STRATEGIES[strategy](context)
        except _Fallback as reason:
            found, note = None, str(reason)
        if found is not None:
            return _loaded(Next(items=None, strategy=strategy, used=strategy, reason=found[1]), found[0])
        note = note or f"No {strategy} pairs were found for you this time."
    found = _random(context)
    result = Next(items=None, strategy=strategy, used="random", reason="a random pair", note=note)
    if found is None:
        result.reason = ""
        return result
    return _loaded(result, found)


def _key(a: int, b: int) -> Key:
    return (a, b) if a < b else (b, a)


def _loaded(result: Next, key: Key) -> Next:
    items = {i.pk: i for i in Item.objects.filter(pk__in=key)}
    if len(items) == 2:  # else deleted meanwhile: nothing to show this time
        result.items = (items[key[0]], items[key[1]])
    return result


# -- random ----------------------------------------------------------------------------------------------


def _random(context: _Context) -> Key | None:
    bounds = context.bounds
    if bounds is None:
        return None
    if bounds[1] - bounds[0] + 1 > SMALL:
        for _ in range(SAMPLE_TRIES):
            ids = context.sample_ids(32)
            keys = [_key(a, b) for a, b in zip(ids[0::2], ids[1::2], strict=False)]
            fresh = context.fresh(keys)
            if fresh:
                return fresh[0]
    # A small dataset (or one almost fully labelled by this annotator): choose among all its pairs.
    ids = sorted(Item.objects.filter(dataset=context.dataset).values_list("id", flat=True)[: SMALL + 1])
    if len(ids) > SMALL:
        return None  # sampling found nothing in a large dataset: practically everything is labelled
    done = set(
        Pair.objects.filter(dataset=context.dataset, annotator=context.annotator).values_list(
            "item_a_id", "item_b_id"
        )
    )
    left = [(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :] if (a, b) not in done]
    if not left:
        return None
    # Skipped pairs come back only when nothing else is left.
    return context.rng.choice([k for k in left if k not in context.skipped] or left)


# -- the model's view: uncertain and hard ----------------------------------------------------------------


def _model(context: _Context) -> tuple[Any, str, str]:
    """(store, alias, distance) of the active index; ``_Fallback`` without one."""
    try:
        active = active_model(context.dataset)
        if active is None:
            raise _Fallback("No active model yet: uncertain and hard pairs need a trained model.")
        # Known to be down a moment ago: fall back at once instead of waiting for the store's timeout.
        problem = vector_store_problem()
        if problem is not None:
            raise _Fallback(f"The active model or its index cannot be used ({problem}).")
        store, alias = vector_store(), index_alias(context.dataset)
    except (OSError, VectorStoreError) as exc:  # a missing artifact, the store down or locked
        raise _Fallback(f"The active model or its index cannot be used ({exc}).") from exc
    return store, alias, active[1].distance


def _closeness(distance: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Larger is nearer: the cosine of (normalised) rows, or minus the Euclidean distance. (N, D) → (N,)."""
    if distance == "cosine":
        return np.einsum("nd,nd->n", a, b)
    return -np.linalg.norm(a - b, axis=1)


def _anchors(context: _Context, store: Any, alias: str, ids: Sequence[int]) -> dict[int, np.ndarray]:
    try:
        vectors = store.get_vectors(alias, list(ids))
    except VectorStoreError as exc:
        raise _Fallback(f"The vector index cannot be read ({exc}).") from exc
    if not vectors:
        raise _Fallback("The sampled items are not in the index yet (a retrain or indexing is pending).")
    return vectors


def _uncertain(context: _Context) -> tuple[Key, str] | None:
    store, alias, distance = _model(context)
    sampled = context.sample_ids(ANCHORS * (PARTNERS + 1))
    vectors = _anchors(context, store, alias, sampled)
    anchors = [i for i in sampled if i in vectors][:ANCHORS]
    partners = [i for i in sampled if i in vectors and i not in anchors]
    try:
        hits = store.nearest_batch(alias, np.stack([vectors[i] for i in anchors]), limit=NEIGHBOURS + 1)
    except VectorStoreError as exc:
        raise _Fallback(f"The vector index cannot be searched ({exc}).") from exc
    # Closeness: larger is nearer (the cosine, or minus the Euclidean distance).
    keys: list[Key] = []
    closeness: list[float] = []
    near: list[float] = []
    sign = 1.0 if distance == "cosine" else -1.0
    for anchor, found in zip(anchors, hits, strict=True):
        others = [hit for hit in found if hit.id != anchor]
        keys += [_key(anchor, hit.id) for hit in others]
        closeness += [sign * hit.score for hit in others]
        near += [sign * hit.score for hit in others[:NEAR]]
    far: list[float] = []
    if partners:
        pairs = [
            (a, partners[(n * PARTNERS + j) % len(partners)])
            for n, a in enumerate(anchors)
            for j in range(PARTNERS)
        ]
        rows = _closeness(
            distance, np.stack([vectors[a] for a, _ in pairs]), np.stack([vectors[p] for _, p in pairs])
        )
        keys += [_key(a, p) for a, p in pairs]
        far = [float(v) for v in rows]
        closeness += far
    if not keys:
        return None
    fixed = context.options.uncertain_threshold
    if fixed is not None and distance == "cosine":
        threshold = 2.0 * fixed - 1.0  # the score as a cosine
    else:
        threshold = (median(near or closeness) + median(far or closeness)) / 2.0
    gaps = [abs(c - threshold) for c in closeness]
    order = sorted(range(len(keys)), key=gaps.__getitem__)
    fresh = context.fresh(keys[i] for i in order)
    if not fresh:
        return None
    return fresh[0], "the model is unsure about this pair"


@dataclass(frozen=True)
class _Hard:
    """What both sides of ``hard`` search from: the active index and the labelled anchor items in it."""

    store: Any
    alias: str
    distance: str
    anchors: list[int]  # item ids
    labels: dict[int, str]  # item id -> label, the anchors' among them
    vectors: dict[int, np.ndarray]  # item id -> (D,) vector in the index


def _hard(context: _Context) -> tuple[Key, str] | None:
    store, alias, distance = _model(context)
    if not Item.objects.filter(dataset=context.dataset).exclude(label="").exists():
        raise _Fallback("Hard pairs need item labels, and no item of this dataset has one.")
    sampled = context.sample_ids(4 * ANCHORS)
    labels = dict(
        Item.objects.filter(pk__in=sampled).exclude(label="").values_list("id", "label")[: 2 * ANCHORS]
    )
    if not labels:  # few items have labels: start from a random place among those that do
        start = context.rng.randint(*context.bounds) if context.bounds else 0
        labelled = Item.objects.filter(dataset=context.dataset).exclude(label="").order_by("id")
        labels = dict(labelled.filter(id__gte=start).values_list("id", "label")[:ANCHORS]) or dict(
            labelled.values_list("id", "label")[:ANCHORS]
        )
    vectors = _anchors(context, store, alias, list(labels))
    anchors = [i for i in labels if i in vectors][:ANCHORS]
    if not anchors:
        return None
    hard = _Hard(store=store, alias=alias, distance=distance, anchors=anchors, labels=labels, vectors=vectors)
    sides = [_near_different, _far_same]
    context.rng.shuffle(sides)
    for side in sides:
        found = side(context, hard)
        if found is not None:
            return found
    return None


def _near_different(context: _Context, hard: _Hard) -> tuple[Key, str] | None:
    try:
        hits = hard.store.nearest_batch(
            hard.alias,
            np.stack([hard.vectors[i] for i in hard.anchors]),
            limit=HARD_NEIGHBOURS,
            filter=Filter(labelled=True),
        )
    except VectorStoreError as exc:
        raise _Fallback(f"The vector index cannot be searched ({exc}).") from exc
    # The index's payload labels may lag behind an edit: the database's labels decide.
    found_ids = {h.id for found in hits for h in found}
    current = dict(Item.objects.filter(pk__in=found_ids).exclude(label="").values_list("id", "label"))
    scored: list[tuple[float, Key]] = []
    for anchor, found in zip(hard.anchors, hits, strict=True):
        for hit in found:
            other = current.get(hit.id)
            if hit.id != anchor and other is not None and other != hard.labels[anchor]:
                nearness = hit.score if hard.distance == "cosine" else -hit.score
                scored.append((nearness, _key(anchor, hit.id)))
    scored.sort(key=lambda s: -s[0])
    fresh = context.fresh(k for _, k in scored)
    return (fresh[0], "near neighbours with different labels") if fresh else None


def _far_same(context: _Context, hard: _Hard) -> tuple[Key, str] | None:
    scored: list[tuple[float, Key]] = []
    for anchor in hard.anchors[: ANCHORS // 2]:
        same = Item.objects.filter(dataset=context.dataset, label=hard.labels[anchor]).exclude(pk=anchor)
        start = context.rng.randint(*context.bounds) if context.bounds else 0
        ids = list(same.filter(id__gte=start).order_by("id").values_list("id", flat=True)[:SAME_LABEL])
        if len(ids) < SAME_LABEL:
            ids += list(
                same.filter(id__lt=start).order_by("id").values_list("id", flat=True)[: SAME_LABEL - len(ids)]
            )
        try:
            others = hard.store.get_vectors(hard.alias, ids)
        except VectorStoreError as exc:
            raise _Fallback(f"The vector index cannot be read ({exc}).") from exc
        if not others:
            continue
        other_ids = list(others)
        near = _closeness(
            hard.distance,
            np.repeat(hard.vectors[anchor][None, :], len(other_ids), axis=0),
            np.stack(list(others.values())),
        )
        scored += [(float(v), _key(anchor, o)) for v, o in zip(near, other_ids, strict=True)]
    scored.sort(key=lambda s: s[0])
    fresh = context.fresh(k for _, k in scored)
    return (fresh[0], "far apart, yet the same label") if fresh else None


# -- review ----------------------------------------------------------------------------------------------


def _review(context: _Context) -> tuple[Key, str] | None:
    wanted = context.options.annotators_per_pair
    if wanted < 2:
        raise _Fallback(
            "Review needs two or more annotators per pair (the dataset setting annotators_per_pair is "
            f"{wanted})."
        )
    rows = (
        Pair.objects.filter(dataset=context.dataset, annotator__isnull=False)
        .values("item_a_id", "item_b_id")
        .annotate(n=Count("id"), mine=Count("id", filter=Q(annotator=context.annotator)), first=Min("id"))
        .filter(mine=0, n__lt=wanted)
        .order_by("-n", "first")
    )
    for start in range(0, 1000, 100):
        keys = [(r["item_a_id"], r["item_b_id"]) for r in rows[start : start + 100]]
        if not keys:
            break
        keys = [k for k in keys if k not in context.skipped]
        if keys:
            return keys[0], "another annotator labelled this pair"
    raise _Fallback("Nothing to review: no pair labelled by others is waiting for you.")


_STRATEGIES = {"uncertain": _uncertain, "hard": _hard, "review": _review}
