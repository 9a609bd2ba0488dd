"""The VectorStore contract: every test runs against both backends (server protocol on qdrant-client's
local mode, and embedded Qdrant Edge), and one test checks that the two agree number for number."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from simapp.vectors import (
    ActivationError,
    CollectionNotFound,
    Distance,
    Filter,
    Point,
    Progress,
    Range,
    VectorStore,
    VectorStoreUnavailable,
    activate,
    build_and_activate,
    collection_name,
    make_payload,
    point_id,
    prune_versions,
    verify_collection,
)
from tests.vectors.helpers import assert_hits, exact_nearest, make_points, unit

# Local mode (brute force) warns that payload indexes and search params are no-ops there; the server
# backend still sends them, which is what a real server needs.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning"),
    pytest.mark.filterwarnings("ignore:Local mode performs exact:UserWarning"),
]

DIM = 16


def loaded(
    store: VectorStore, name: str = "docs_v1", *, n: int = 300, distance: Distance = "cosine", **kw: Any
):
    points, vectors = make_points(n, DIM, **kw)
    store.create_collection(
        name,
        dim=DIM,
        distance=distance,
        indexed_fields={"lang": "keyword", "year": "integer", "rating": "float"},
    )
    store.upsert(name, points, batch_size=64)
    return points, vectors


# -- collections and points --------------------------------------------------------------------------------


def test_create_upsert_count_info(store: VectorStore) -> None:
    loaded(store, n=300, distance="euclid")

    assert store.count("docs_v1") == 300
    info = store.info("docs_v1")
    assert (info.name, info.dim, info.distance, info.points) == ("docs_v1", DIM, "euclid", 300)
    assert store.list_collections() == ["docs_v1"]


def test_create_rejects_taken_names_and_bad_arguments(store: VectorStore) -> None:
    loaded(store, n=10)
    store.set_alias("docs", "docs_v1")

    with pytest.raises(ValueError, match="already exists"):
        store.create_collection("docs_v1", dim=DIM, distance="cosine")
    with pytest.raises(ValueError, match="already exists"):
        store.create_collection("docs", dim=DIM, distance="cosine")
    with pytest.raises(ValueError, match="unknown distance"):
        store.create_collection("x_v1", dim=DIM, distance="dot")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        store.create_collection("../escape", dim=DIM, distance="cosine")
    with pytest.raises(ValueError, match="identifier"):
        store.create_collection("x_v1", dim=DIM, distance="cosine", indexed_fields={"a.b": "keyword"})
    assert store.list_collections() == ["docs_v1"]


def test_upsert_rejects_bad_points_and_writes_nothing(store: VectorStore) -> None:
    points, _ = make_points(5, DIM)
    store.create_collection("docs_v1", dim=DIM, distance="cosine")
    nan = Point(id=5, vector=np.full(DIM, np.nan, dtype=np.float32), payload=make_payload("k"))
    short = Point(id=6, vector=np.ones(DIM - 1, dtype=np.float32), payload=make_payload("k"))
    stray = Point(id=7, vector=np.ones(DIM, dtype=np.float32), payload={"key": "k", "label": None, "x": 1})  # type: ignore[typeddict-unknown-key]
    negative = Point(id=-1, vector=np.ones(DIM, dtype=np.float32), payload=make_payload("k"))

    for bad in (nan, short, stray, negative):
        with pytest.raises(ValueError):
            store.upsert("docs_v1", [*points, bad], batch_size=2)

    assert store.count("docs_v1") == 0


def test_reupsert_with_same_ids_overwrites(store: VectorStore) -> None:
    points, vectors = loaded(store, n=50)
    moved = Point(id=point_id(7), vector=vectors[3], payload=make_payload("item-7", "moved", {"year": 2024}))

    store.upsert("docs_v1", [*points, moved])

    assert store.count("docs_v1") == 50
    hits = store.nearest("docs_v1", vectors[3], limit=2)
    assert {h.id for h in hits} == {3, 7}
    assert next(h for h in hits if h.id == 7).payload == {
        "key": "item-7",
        "label": "moved",
        "metadata": {"year": 2024},
    }


def test_delete_and_get_vectors(store: VectorStore) -> None:
    _, vectors = loaded(store, n=40)

    store.delete("docs_v1", [1, 2, 999])

    assert store.count("docs_v1") == 38
    got = store.get_vectors("docs_v1", [0, 1, 3])
    assert sorted(got) == [0, 3]
    np.testing.assert_allclose(got[3], unit(vectors[3]), atol=1e-6)  # cosine stores unit vectors
    assert store.nearest("docs_v1", vectors[1], limit=40)[0].id != 1


# -- search -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("distance", ["cosine", "euclid"])
def test_nearest_is_exact_with_documented_scores(store: VectorStore, distance: Distance) -> None:
    points, vectors = loaded(store, n=300, distance=distance)
    query = np.random.default_rng(1).normal(size=DIM).astype(np.float32)

    hits = store.nearest("docs_v1", query, limit=7)

    assert_hits(hits, exact_nearest(vectors, query, distance, 7))
    assert hits[0].payload == points[hits[0].id].payload
    own = store.nearest("docs_v1", vectors[42], limit=1)[0]
    assert (own.id, round(own.score, 5)) == (42, 1.0 if distance == "cosine" else 0.0)


def test_nearest_batch_equals_nearest_per_row(store: VectorStore) -> None:
    _, vectors = loaded(store, n=200)
    queries = np.random.default_rng(2).normal(size=(5, DIM)).astype(np.float32)

    batch = store.nearest_batch("docs_v1", queries, limit=4, exclude_ids=[0])

    assert len(batch) == 5
    for row, hits in zip(queries, batch, strict=True):
        assert_hits(hits, exact_nearest(vectors, row, "cosine", 4, keep=lambda i: i != 0))
    assert store.nearest_batch("docs_v1", np.zeros((0, DIM), dtype=np.float32)) == []


def test_exclude_ids(store: VectorStore) -> None:
    _, vectors = loaded(store, n=100)
    first_two = [h.id for h in store.nearest("docs_v1", vectors[10], limit=2)]

    hits = store.nearest("docs_v1", vectors[10], limit=5, exclude_ids=first_two)

    assert not set(first_two) & {h.id for h in hits}
    assert_hits(hits, exact_nearest(vectors, vectors[10], "cosine", 5, keep=lambda i: i not in first_two))


def test_filters_label_metadata_and_ranges(store: VectorStore) -> None:
    points, vectors = loaded(store, n=300)
    query = vectors[5]
    meta = [p.payload["metadata"] for p in points]
    labels = [p.payload["label"] for p in points]
    cases = [
        (Filter(label="cards"), lambda i: labels[i] == "cards"),
        (Filter(metadata={"lang": "de"}), lambda i: meta[i]["lang"] == "de"),
        (Filter(metadata={"year": 1995}), lambda i: meta[i]["year"] == 1995),
        (Filter(ranges={"year": Range(gte=2000, lt=2005)}), lambda i: 2000 <= meta[i]["year"] < 2005),
        (Filter(ranges={"rating": Range(gt=2.5)}), lambda i: meta[i]["rating"] > 2.5),
        (
            Filter(label="billing", metadata={"lang": "en"}, ranges={"rating": Range(lte=1.0)}),
            lambda i: labels[i] == "billing" and meta[i]["lang"] == "en" and meta[i]["rating"] <= 1.0,
        ),
    ]
    for flt, keep in cases:
        hits = store.nearest("docs_v1", query, limit=6, filter=flt, exclude_ids=[5])
        assert_hits(hits, exact_nearest(vectors, query, "cosine", 6, keep=lambda i, k=keep: k(i) and i != 5))
        assert hits, flt
    assert store.nearest("docs_v1", query, filter=Filter(label="no-such-label")) == []


def test_filter_on_having_a_label(store: VectorStore) -> None:
    points, vectors = loaded(store, n=120)
    unlabelled = set(range(0, 120, 3))
    store.upsert(
        "docs_v1",
        [Point(id=i, vector=vectors[i], payload={**points[i].payload, "label": None}) for i in unlabelled],
    )
    query = vectors[7]

    with_label = store.nearest("docs_v1", query, limit=8, filter=Filter(labelled=True))
    without = store.nearest("docs_v1", query, limit=8, filter=Filter(labelled=False))

    assert_hits(with_label, exact_nearest(vectors, query, "cosine", 8, keep=lambda i: i not in unlabelled))
    assert_hits(without, exact_nearest(vectors, query, "cosine", 8, keep=lambda i: i in unlabelled))
    assert all(h.payload["label"] is None for h in without)
    assert not Filter(labelled=False).is_empty


def test_filter_rejects_unsafe_field_names() -> None:
    with pytest.raises(ValueError, match="identifier"):
        Filter(metadata={"a.b": 1})
    with pytest.raises(ValueError, match="Range"):
        Filter(metadata={"score": 0.5})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="at least one bound"):
        Range()


def test_filter_values_stop_where_the_engine_stops(store: VectorStore) -> None:
    # given indexed points whose "year" is an indexed integer field
    _, vectors = loaded(store, n=20)

    # then the 64-bit integers match (nothing has these years) ...
    for year in (2**63 - 1, -(2**63)):
        assert store.nearest("docs_v1", vectors[0], filter=Filter(metadata={"year": year})) == []
    # ... and what the engine cannot take is refused before it gets there (it raised a TypeError from
    # inside the engine, a 500 through the API; found by tests/test_api_fuzz.py)
    for value in (2**63, -(2**63) - 1, 10**30):
        with pytest.raises(ValueError, match="integers are matched up to 64 bits"):
            Filter(metadata={"year": value})
    with pytest.raises(ValueError, match="lone surrogate"):
        Filter(metadata={"lang": "d\ud800"})
    with pytest.raises(ValueError, match="lone surrogate"):
        Filter(label="\udfff")


def test_reads_reject_bad_queries(store: VectorStore) -> None:
    loaded(store, n=20)

    with pytest.raises(ValueError):
        store.nearest("docs_v1", np.ones(DIM + 1, dtype=np.float32))
    with pytest.raises(ValueError):
        store.nearest("docs_v1", [float("nan")] * DIM)
    with pytest.raises(ValueError, match="limit"):
        store.nearest("docs_v1", np.ones(DIM), limit=0)
    with pytest.raises(CollectionNotFound):
        store.nearest("missing", np.ones(DIM))
    with pytest.raises(CollectionNotFound):
        store.count("missing")


# -- recommend --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("distance", ["cosine", "euclid"])
def test_recommend_average_vector(store: VectorStore, distance: Distance) -> None:
    _, vectors = loaded(store, n=300, distance=distance)
    raw_negative = np.random.default_rng(3).normal(size=DIM).astype(np.float32) * 5
    examples = vectors[[10, 11]] if distance == "euclid" else unit(vectors[[10, 11]])
    negative = unit(raw_negative) if distance == "cosine" else raw_negative
    target = 2 * examples.mean(axis=0) - negative

    hits = store.recommend(
        "docs_v1", positive=[10, 11], negative=[raw_negative], strategy="average_vector", limit=5
    )

    assert_hits(hits, exact_nearest(vectors, target, distance, 5, keep=lambda i: i not in (10, 11)))


def _best_score(vectors: np.ndarray, pos: np.ndarray, neg: np.ndarray, distance: Distance) -> np.ndarray:
    """Qdrant's best-score rule, from its documentation: sigmoid of the best positive similarity when it
    beats the best negative one, else minus the sigmoid of the best negative; Euclid similarity is -d^2."""

    def similarity(examples: np.ndarray) -> np.ndarray:
        if len(examples) == 0:
            return np.full(len(vectors), -np.inf)
        if distance == "cosine":
            return (unit(vectors) @ unit(examples).T).max(axis=1)
        return (-(((vectors[:, None, :] - examples[None]) ** 2).sum(axis=2))).max(axis=1)

    def sigmoid(x: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):  # -inf (no examples of a kind) is never the chosen branch
            return 0.5 * (x / (1 + np.abs(x)) + 1)

    best_pos, best_neg = similarity(pos), similarity(neg)
    return np.where(best_pos > best_neg, sigmoid(best_pos), -sigmoid(best_neg))


@pytest.mark.parametrize("distance", ["cosine", "euclid"])
def test_recommend_best_score(store: VectorStore, distance: Distance) -> None:
    _, vectors = loaded(store, n=300, distance=distance)

    hits = store.recommend(
        "docs_v1", positive=[20, vectors[21]], negative=[22], strategy="best_score", limit=6, exclude_ids=[23]
    )

    scores = _best_score(vectors, vectors[[20, 21]], vectors[[22]], distance)
    order = [i for i in np.argsort(-scores, kind="stable") if i not in (20, 22, 23)][:6]
    # Point 21 was given as a vector, not an id, so it is not excluded: it matches itself best.
    assert hits[0].id == 21
    assert_hits(hits, [(int(i), float(scores[i])) for i in order])


def test_recommend_best_score_with_negatives_only(store: VectorStore) -> None:
    _, vectors = loaded(store, n=100)

    hits = store.recommend("docs_v1", positive=[], negative=[4], strategy="best_score", limit=3)

    scores = _best_score(vectors, vectors[:0], vectors[[4]], "cosine")
    order = [i for i in np.argsort(-scores, kind="stable") if i != 4][:3]
    assert_hits(hits, [(int(i), float(scores[i])) for i in order])


def test_recommend_with_filter_and_bad_input(store: VectorStore) -> None:
    points, vectors = loaded(store, n=120)

    hits = store.recommend("docs_v1", positive=[0], filter=Filter(label="transfers"), limit=4)

    assert {h.payload["label"] for h in hits} == {"transfers"}
    assert_hits(
        hits,
        exact_nearest(
            vectors, unit(vectors[0]), "cosine", 4, keep=lambda i: points[i].payload["label"] == "transfers"
        ),
    )
    with pytest.raises(ValueError, match="positive"):
        store.recommend("docs_v1", positive=[], negative=[1], strategy="average_vector")
    with pytest.raises(ValueError, match="not in the collection"):
        store.recommend("docs_v1", positive=[12345])
    with pytest.raises(ValueError, match="strategy"):
        store.recommend("docs_v1", positive=[1], strategy="sum_scores")  # type: ignore[arg-type]


@pytest.mark.parametrize("distance", ["cosine", "euclid"])
def test_backends_agree_numerically(both: tuple[VectorStore, VectorStore], distance: Distance) -> None:
    results = []
    for backend in both:
        loaded(backend, n=250, distance=distance)
        queries = np.random.default_rng(4).normal(size=(3, DIM)).astype(np.float32)
        results.append(
            [
                backend.nearest("docs_v1", queries[0], limit=8),
                *backend.nearest_batch("docs_v1", queries, limit=5, filter=Filter(metadata={"lang": "en"})),
                backend.recommend("docs_v1", positive=[1, 2], negative=[queries[1]], limit=6),
                backend.recommend("docs_v1", positive=[1, queries[2]], negative=[3], strategy="best_score"),
            ]
        )
    for server_hits, edge_hits in zip(*results, strict=True):
        assert [h.id for h in server_hits] == [h.id for h in edge_hits]
        assert [h.payload for h in server_hits] == [h.payload for h in edge_hits]
        np.testing.assert_allclose([h.score for h in server_hits], [h.score for h in edge_hits], atol=1e-5)


# -- aliases ----------------------------------------------------------------------------------------------


def test_alias_switch_reads_through_alias(store: VectorStore) -> None:
    loaded(store, "docs_v1", n=30)
    loaded(store, "docs_v2", n=30, seed=1, first_id=1000)
    probe = np.ones(DIM, dtype=np.float32)

    assert store.get_alias("docs") is None
    store.set_alias("docs", "docs_v1")
    assert store.get_alias("docs") == "docs_v1"
    assert all(h.id < 1000 for h in store.nearest("docs", probe))
    assert store.info("docs").name == "docs_v1"

    store.set_alias("docs", "docs_v2")

    assert store.get_alias("docs") == "docs_v2"
    assert all(h.id >= 1000 for h in store.nearest("docs", probe))
    assert store.count("docs") == 30
    with pytest.raises(CollectionNotFound):
        store.set_alias("docs", "docs_v9")
    with pytest.raises(ValueError):
        store.set_alias("docs_v1", "docs_v2")  # an alias may not shadow a collection
    assert store.get_alias("docs") == "docs_v2"


def test_writes_through_alias_reach_the_active_collection(store: VectorStore) -> None:
    loaded(store, "docs_v1", n=10)
    store.set_alias("docs", "docs_v1")
    new, _ = make_points(1, DIM, seed=9, first_id=500)

    store.upsert("docs", new)

    assert store.count("docs_v1") == 11
    store.delete("docs", [500])
    assert store.count("docs_v1") == 10


def test_drop(store: VectorStore) -> None:
    loaded(store, "docs_v1", n=10)
    loaded(store, "docs_v2", n=10)
    store.set_alias("docs", "docs_v2")

    with pytest.raises(ValueError, match="alias"):
        store.drop("docs")
    store.drop("docs_v1")
    store.drop("docs_v1")  # idempotent, so cleanup after a failure is always safe

    assert store.list_collections() == ["docs_v2"]
    assert store.get_alias("docs") == "docs_v2"
    store.drop("docs_v2")
    assert store.list_collections() == []
    assert store.get_alias("docs") is None  # the alias goes with its collection, as on the server
    with pytest.raises(CollectionNotFound):
        store.count("docs_v2")


# -- lifecycle: build, check, switch, prune -----------------------------------------------------------------


def build(store: VectorStore, version: int, *, seed: int = 0, n: int = 120, **kw: Any):
    points, _ = make_points(n, DIM, seed=seed, first_id=version * 1000)
    return build_and_activate(
        store,
        alias="docs",
        collection=collection_name("docs", version),
        dim=DIM,
        distance="cosine",
        points=kw.pop("points", points),
        indexed_fields={"lang": "keyword"},
        batch_size=kw.pop("batch_size", 32),
        **kw,
    )


def test_build_and_activate(store: VectorStore) -> None:
    progress: list[Progress] = []

    first = build(store, 1, on_progress=progress.append)
    second = build(store, 2, seed=1)

    assert (first.collection, first.points, first.previous, first.pruned) == ("docs_v1", 120, None, ())
    assert len(first.canaries) == 5
    assert (second.collection, second.previous) == ("docs_v2", "docs_v1")
    assert store.get_alias("docs") == "docs_v2"
    assert store.list_collections() == ["docs_v1", "docs_v2"]
    assert store.count("docs") == 120
    assert [p.stage for p in progress if p.done == 0] == ["upload", "optimize", "verify", "activate", "prune"]
    uploads = [p.done for p in progress if p.stage == "upload"]
    assert uploads == [0, 32, 64, 96, 120] and progress[0].total == 120


def test_build_from_a_generator_with_explicit_canaries(store: VectorStore) -> None:
    points, _ = make_points(50, DIM, first_id=1000)

    result = build(store, 1, points=(p for p in points), canaries=[1003, 1040])

    assert (result.points, result.canaries) == (50, (1003, 1040))
    assert store.get_alias("docs") == "docs_v1"


class FailingStore:
    """A real store whose upsert breaks on the ``fail_on``-th call, like a connection dropping midway."""

    def __init__(self, inner: VectorStore, fail_on: int) -> None:
        self.inner, self.fail_on, self.calls = inner, fail_on, 0

    def upsert(self, name: str, points: Sequence[Point], **kw: Any) -> None:
        self.calls += 1
        if self.calls == self.fail_on:
            raise VectorStoreUnavailable("connection lost")
        self.inner.upsert(name, points, **kw)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)


def test_failure_while_uploading_keeps_alias_and_drops_half_built(store: VectorStore) -> None:
    build(store, 1)

    with pytest.raises(VectorStoreUnavailable, match="connection lost"):
        build(FailingStore(store, fail_on=3), 2)  # type: ignore[arg-type]

    assert store.get_alias("docs") == "docs_v1"
    assert store.list_collections() == ["docs_v1"]
    assert store.count("docs") == 120


def test_bad_point_midway_keeps_alias_and_drops_half_built(store: VectorStore) -> None:
    build(store, 1)
    points, _ = make_points(100, DIM, first_id=2000)
    points[70] = Point(id=2070, vector=np.full(DIM, np.inf, dtype=np.float32), payload=make_payload("bad"))

    with pytest.raises(ValueError, match="NaN or infinity"):
        build(store, 2, points=points)

    assert store.get_alias("docs") == "docs_v1"
    assert store.list_collections() == ["docs_v1"]


def test_cancel_from_progress_callback_keeps_alias(store: VectorStore) -> None:
    build(store, 1)

    def cancel(progress: Progress) -> None:
        if progress.stage == "optimize":
            raise KeyboardInterrupt  # what a job's cancel flag turns into

    with pytest.raises(KeyboardInterrupt):
        build(store, 2, on_progress=cancel)

    assert store.get_alias("docs") == "docs_v1"
    assert store.list_collections() == ["docs_v1"]


def test_duplicate_ids_fail_the_count_check(store: VectorStore) -> None:
    points, _ = make_points(40, DIM, first_id=1000)
    points[39] = Point(id=1000, vector=points[39].vector, payload=points[39].payload)

    with pytest.raises(ActivationError, match="39 points indexed, 40 uploaded"):
        build(store, 1, points=points)

    assert store.get_alias("docs") is None
    assert store.list_collections() == []


class CorruptingStore(FailingStore):
    """Stores a different vector for one id: the index no longer answers for that item."""

    def __init__(self, inner: VectorStore, victim: int) -> None:
        super().__init__(inner, fail_on=-1)
        self.victim = victim

    def upsert(self, name: str, points: Sequence[Point], **kw: Any) -> None:
        swapped = [
            Point(p.id, np.random.default_rng(0).normal(size=DIM).astype(np.float32), p.payload)
            if p.id == self.victim
            else p
            for p in points
        ]
        self.inner.upsert(name, swapped, **kw)


def test_canary_failure_blocks_the_switch(store: VectorStore) -> None:
    build(store, 1)

    with pytest.raises(ActivationError, match="canary 2007 does not find itself"):
        build(CorruptingStore(store, victim=2007), 2, canaries=[2001, 2007])  # type: ignore[arg-type]

    assert store.get_alias("docs") == "docs_v1"
    assert store.list_collections() == ["docs_v1"]


def test_activate_checks_then_switches_and_rolls_back(store: VectorStore) -> None:
    build(store, 1)
    build(store, 2, seed=1)
    _, v1_vectors = make_points(120, DIM)

    with pytest.raises(ActivationError):
        activate(store, alias="docs", collection="docs_v1", canaries={1000: v1_vectors[5]})
    assert store.get_alias("docs") == "docs_v2"

    previous = activate(store, alias="docs", collection="docs_v1", canaries={1005: v1_vectors[5]})

    assert (previous, store.get_alias("docs")) == ("docs_v2", "docs_v1")
    verify_collection(store, "docs_v1", expected_count=120)
    with pytest.raises(ActivationError, match="121 uploaded"):
        verify_collection(store, "docs_v1", expected_count=121)


def test_pruning_keeps_the_newest_and_never_the_active(store: VectorStore) -> None:
    for version in (1, 2, 3):
        build(store, version, n=20, keep=5)
    activate(store, alias="docs", collection="docs_v1")  # roll back to the oldest

    assert prune_versions(store, alias="docs", keep=1) == ["docs_v2"]
    assert store.list_collections() == ["docs_v1", "docs_v3"]

    result = build(store, 4, n=20, keep=2)  # v1 is no longer active once v4 is

    assert result.pruned == ("docs_v1",)
    assert store.list_collections() == ["docs_v3", "docs_v4"]
    assert store.get_alias("docs") == "docs_v4"


def test_build_refuses_to_overwrite_the_active_collection(store: VectorStore) -> None:
    build(store, 1)

    with pytest.raises(ValueError, match="active"):
        build(store, 1)
    with pytest.raises(ValueError, match="docs_v<N>"):
        build_and_activate(store, alias="docs", collection="other", dim=DIM, distance="cosine", points=[])

    assert store.count("docs") == 120


# -- concurrency ------------------------------------------------------------------------------------------


def test_queries_during_alias_switches_see_no_errors(store: VectorStore) -> None:
    loaded(store, "docs_v1", n=150)
    loaded(store, "docs_v2", n=150, seed=1, first_id=1000)
    store.set_alias("docs", "docs_v1")
    queries = np.random.default_rng(5).normal(size=(20, DIM)).astype(np.float32)
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: list[set[str]] = [set() for _ in range(4)]

    def read(slot: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                if i % 3 == 2:
                    hits = store.recommend("docs", positive=[queries[i % 20]], limit=5)
                else:
                    hits = store.nearest("docs", queries[i % 20], limit=5)
                sources = {"v1" if h.id < 1000 else "v2" for h in hits}
                assert len(hits) == 5 and len(sources) == 1, sources  # one collection per answer
                seen[slot] |= sources
            except BaseException as exc:
                errors.append(exc)
                return
            i += 1

    readers = [threading.Thread(target=read, args=(slot,)) for slot in range(4)]
    for t in readers:
        t.start()
    for switch in range(60):
        store.set_alias("docs", "docs_v2" if switch % 2 == 0 else "docs_v1")
        time.sleep(0.005)
    stop.set()
    for t in readers:
        t.join()

    assert errors == []
    assert set().union(*seen) == {"v1", "v2"}


def test_queries_during_build_with_pruning_see_no_errors(store: VectorStore) -> None:
    build(store, 1, n=150)
    stop = threading.Event()
    errors: list[BaseException] = []
    answered = [0]

    def read() -> None:
        probe = np.ones(DIM, dtype=np.float32)
        while not stop.is_set():
            try:
                assert len(store.nearest("docs", probe, limit=3)) == 3
                answered[0] += 1
            except BaseException as exc:
                errors.append(exc)
                return

    readers = [threading.Thread(target=read) for _ in range(4)]
    for t in readers:
        t.start()
    for version in (2, 3, 4):
        build(store, version, n=150, seed=version, keep=1)  # each build drops the version just replaced
    stop.set()
    for t in readers:
        t.join()

    assert errors == []
    assert answered[0] > 0
    assert store.list_collections() == ["docs_v4"]
