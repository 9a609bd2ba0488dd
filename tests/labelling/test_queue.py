"""The annotation queue: each strategy offers a valid pair of the dataset that the user has not labelled
(nor just skipped); uncertain and hard over a real trained CLINC150 slice."""

from __future__ import annotations

import random
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
import pytest

from apps.datasets.formats import text_hash
from apps.datasets.models import Dataset, Item
from apps.labelling.models import Pair
from apps.labelling.queue import STRATEGIES, UnknownStrategy, pair_next
from apps.training.index import index_alias, vector_store
from tests.discovery.conftest import Trained, clinc_slice, committed_module_data, trained_summary
from tests.factories import DatasetFactory, PairFactory, UserFactory
from tests.training.conftest import make_dataset, run_to_end

pytestmark = pytest.mark.django_db


def bulk_items(dataset: Any, n: int, *, label: str = "") -> list[int]:
    created = Item.objects.bulk_create(
        Item(
            dataset=dataset,
            key=f"{dataset.slug}-{i}",
            text=f"text {i}",
            label=label,
            content_hash=text_hash(f"t{i}"),
        )
        for i in range(n)
    )
    return [item.pk for item in created]


def key(found: Any) -> tuple[int, int]:
    assert found.items is not None
    a, b = found.items
    return a.pk, b.pk


def labelled_by(user: Any) -> set[tuple[int, int]]:
    return set(Pair.objects.filter(annotator=user).values_list("item_a_id", "item_b_id"))


# -- random ----------------------------------------------------------------------------------------------


def test_random_offers_two_different_items_of_the_dataset_in_id_order(labeller: Any) -> None:
    dataset = DatasetFactory()
    ids = set(bulk_items(dataset, 500))

    picks = [key(pair_next(dataset=dataset, annotator=labeller, strategy="random")) for _ in range(30)]

    assert all(a < b and {a, b} <= ids for a, b in picks)
    assert len(set(picks)) > 25  # random, not one pair again and again


def test_random_never_offers_a_pair_the_user_labelled_or_skipped(labeller: Any) -> None:
    dataset = DatasetFactory()
    ids = bulk_items(dataset, 8)
    every = list(combinations(sorted(ids), 2))  # 28 pairs
    mine, skipped, free = every[:20], every[20:26], every[26:]
    Pair.objects.bulk_create(
        Pair(dataset=dataset, item_a_id=a, item_b_id=b, score=1.0, annotator=labeller) for a, b in mine
    )
    other = UserFactory(username="other")
    Pair.objects.bulk_create(
        Pair(dataset=dataset, item_a_id=a, item_b_id=b, score=1.0, annotator=other) for a, b in free
    )

    picks = {key(pair_next(dataset=dataset, annotator=labeller, skipped=skipped)) for _ in range(30)}

    assert picks == set(free)  # labelled by someone else is still open to this user


def test_skipped_pairs_come_back_only_when_nothing_else_is_left(labeller: Any) -> None:
    dataset = DatasetFactory()
    a, b, c = bulk_items(dataset, 3)
    Pair.objects.create(dataset=dataset, item_a_id=a, item_b_id=b, score=1.0, annotator=labeller)

    assert key(pair_next(dataset=dataset, annotator=labeller, skipped=[(c, a)])) == (b, c)
    assert key(pair_next(dataset=dataset, annotator=labeller, skipped=[(a, c), (b, c)])) in {(a, c), (b, c)}


def test_when_every_pair_is_labelled_there_is_nothing_to_offer(labeller: Any) -> None:
    dataset = DatasetFactory()
    a, b, c = bulk_items(dataset, 3)
    for x, y in ((a, b), (a, c), (b, c)):
        Pair.objects.create(dataset=dataset, item_a_id=x, item_b_id=y, score=0.0, annotator=labeller)

    found = pair_next(dataset=dataset, annotator=labeller)

    assert (found.items, found.used) == (None, "random")
    assert pair_next(dataset=DatasetFactory(), annotator=labeller).items is None  # no items at all


def test_random_samples_ids_instead_of_loading_every_item(
    labeller: Any, django_assert_max_num_queries: Any
) -> None:
    # Two datasets whose ids interleave: the sampled ids of one are half misses.
    first, second = DatasetFactory(slug="first"), DatasetFactory(slug="second")
    for n in range(300):
        bulk_items_one = Item(dataset=first if n % 2 else second, key=f"k{n}", text="t", content_hash="h")
        bulk_items_one.save()
    ids = set(first.items.values_list("id", flat=True))

    with django_assert_max_num_queries(5):  # id bounds (2), sampled ids, labelled check, the two items
        found = pair_next(dataset=first, annotator=labeller, rng=random.Random(1))

    assert set(key(found)) <= ids


def test_an_unknown_strategy_is_refused() -> None:
    with pytest.raises(UnknownStrategy, match="unknown strategy 'smart'; choose one of: random, uncertain"):
        pair_next(dataset=DatasetFactory(), annotator=None, strategy="smart")
    assert list(STRATEGIES) == ["random", "uncertain", "hard", "review"]


# -- review ----------------------------------------------------------------------------------------------


def review_dataset(per_pair: int) -> tuple[Dataset, list[int], Any, Any]:
    dataset = DatasetFactory(settings={"annotators_per_pair": per_pair})
    ids = bulk_items(dataset, 10)
    return dataset, ids, UserFactory(username="alice"), UserFactory(username="bob")


def test_review_offers_only_pairs_labelled_by_exactly_one_other_annotator(labeller: Any) -> None:
    dataset, ids, alice, bob = review_dataset(2)
    one_other = (ids[0], ids[1])
    PairFactory(dataset=dataset, item_a_id=ids[0], item_b_id=ids[1], annotator=alice, source="manual")
    for a, b in ((2, 3), (4, 5)):  # two others already: done
        PairFactory(dataset=dataset, item_a_id=ids[a], item_b_id=ids[b], annotator=alice, source="manual")
        PairFactory(dataset=dataset, item_a_id=ids[a], item_b_id=ids[b], annotator=bob, source="manual")
    PairFactory(
        dataset=dataset, item_a_id=ids[6], item_b_id=ids[7], annotator=None, source="import"
    )  # nobody
    PairFactory(
        dataset=dataset, item_a_id=ids[8], item_b_id=ids[9], annotator=labeller, source="manual"
    )  # mine

    found = pair_next(dataset=dataset, annotator=labeller, strategy="review")

    assert (key(found), found.used, found.note) == (one_other, "review", "")
    # For alice, her own pair is not to review, but the labeller's is.
    assert key(pair_next(dataset=dataset, annotator=alice, strategy="review")) == (ids[8], ids[9])
    skipped = pair_next(dataset=dataset, annotator=labeller, strategy="review", skipped=[one_other])
    assert skipped.used == "random" and skipped.note.startswith("Nothing to review")


def test_review_with_three_annotators_per_pair_offers_the_most_annotated_first(labeller: Any) -> None:
    dataset, ids, alice, bob = review_dataset(3)
    PairFactory(dataset=dataset, item_a_id=ids[0], item_b_id=ids[1], annotator=alice, source="manual")
    PairFactory(dataset=dataset, item_a_id=ids[2], item_b_id=ids[3], annotator=alice, source="manual")
    PairFactory(dataset=dataset, item_a_id=ids[2], item_b_id=ids[3], annotator=bob, source="manual")

    assert key(pair_next(dataset=dataset, annotator=labeller, strategy="review")) == (ids[2], ids[3])
    assert key(pair_next(dataset=dataset, annotator=bob, strategy="review")) == (ids[0], ids[1])


def test_review_without_two_annotators_per_pair_falls_back_to_random_and_says_why(labeller: Any) -> None:
    dataset, ids, alice, _ = review_dataset(1)
    PairFactory(dataset=dataset, item_a_id=ids[0], item_b_id=ids[1], annotator=alice, source="manual")

    found = pair_next(dataset=dataset, annotator=labeller, strategy="review")

    assert (found.strategy, found.used) == ("review", "random")
    assert "annotators_per_pair is 1" in found.note
    assert key(found)


def test_without_an_active_model_uncertain_and_hard_fall_back_to_random(labeller: Any) -> None:
    dataset = DatasetFactory()
    bulk_items(dataset, 5, label="x")

    for strategy in ("uncertain", "hard"):
        found = pair_next(dataset=dataset, annotator=labeller, strategy=strategy)
        assert (found.used, found.note) == (
            "random",
            "No active model yet: uncertain and hard pairs need a trained model.",
        )
        assert key(found)


# -- uncertain and hard, with a trained model -------------------------------------------------------------


@pytest.fixture(scope="module")
def clinc(
    django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: Any, shared_data: Path
) -> Iterator[Trained]:
    """Five CLINC150 intents, twelve queries each, trained (2 epochs) once for this module."""
    with committed_module_data(django_db_blocker, tmp_path_factory.mktemp("queue")):
        run = run_to_end(make_dataset("clinc", clinc_slice(shared_data)), epochs=2)
        assert (run.status, run.error) == ("succeeded", "")
        yield trained_summary("clinc")


def all_similarities(clinc: Trained) -> dict[tuple[int, int], float]:
    """The active model's cosine of every pair of the dataset."""
    vectors = vector_store().get_vectors(index_alias(clinc.dataset), clinc.ids)
    return {(a, b): float(vectors[a] @ vectors[b]) for a, b in combinations(sorted(vectors), 2)}


def by_labels(clinc: Trained, cosines: dict[tuple[int, int], float]) -> tuple[list[float], list[float]]:
    """The cosines of same-label pairs and of different-label pairs."""
    label = {i: row["label"] for i, row in clinc.item.items()}
    same = [c for (a, b), c in cosines.items() if label[a] == label[b]]
    different = [c for (a, b), c in cosines.items() if label[a] != label[b]]
    return same, different


@pytest.mark.slow
def test_uncertain_offers_pairs_between_what_same_and_unrelated_look_like_to_the_model(
    clinc: Trained, labeller: Any
) -> None:
    cosines = all_similarities(clinc)
    same, different = by_labels(clinc, cosines)
    rng = random.Random(7)

    picks = [
        pair_next(dataset=clinc.dataset, annotator=labeller, strategy="uncertain", rng=rng) for _ in range(10)
    ]

    assert {(p.used, p.note, p.reason) for p in picks} == {
        ("uncertain", "", "the model is unsure about this pair")
    }
    for found in picks:
        # Same-intent pairs have a median cosine of about 0.87, different intents about 0.47: the model
        # is unsure in between (by the data-set threshold: halfway between the near and the random level).
        assert median(different) < cosines[key(found)] < median(same)


@pytest.mark.slow
def test_uncertain_follows_the_datasets_threshold_and_skips_labelled_pairs(
    clinc: Trained, labeller: Any
) -> None:
    dataset = clinc.dataset
    dataset.settings = {"uncertain_threshold": 0.5}  # fixed: cosine 0, below every pair of this model
    cosines = all_similarities(clinc)
    first = pair_next(dataset=dataset, annotator=labeller, strategy="uncertain", rng=random.Random(3))
    Pair.objects.create(
        dataset=dataset, item_a_id=key(first)[0], item_b_id=key(first)[1], score=1.0, annotator=labeller
    )

    again = pair_next(dataset=dataset, annotator=labeller, strategy="uncertain", rng=random.Random(3))

    lowest = sorted(cosines.values())
    assert cosines[key(first)] <= lowest[len(lowest) // 20]  # among the 5% least similar pairs
    assert key(again) != key(first) and key(again) not in labelled_by(labeller)
    assert cosines[key(again)] <= lowest[len(lowest) // 20]


@pytest.mark.slow
def test_hard_offers_near_pairs_with_different_labels_or_far_pairs_with_the_same_label(
    clinc: Trained, labeller: Any
) -> None:
    cosines = all_similarities(clinc)
    label = {i: row["label"] for i, row in clinc.item.items()}
    same, different = by_labels(clinc, cosines)
    rng = random.Random(11)

    picks = [
        pair_next(dataset=clinc.dataset, annotator=labeller, strategy="hard", rng=rng) for _ in range(12)
    ]

    reasons = {p.reason for p in picks}
    assert {p.used for p in picks} == {"hard"}
    assert reasons == {"near neighbours with different labels", "far apart, yet the same label"}
    for found in picks:
        a, b = key(found)
        if found.reason.startswith("near"):
            assert label[a] != label[b]
            assert cosines[(a, b)] > float(np.quantile(different, 0.9))
        else:
            assert label[a] == label[b]
            assert cosines[(a, b)] < float(np.quantile(same, 0.1))


@pytest.mark.slow
def test_hard_without_labels_falls_back_to_random(clinc: Trained, labeller: Any) -> None:
    Item.objects.filter(dataset__slug="clinc").update(label="")  # rolled back with the test

    found = pair_next(dataset=clinc.dataset, annotator=labeller, strategy="hard")

    assert (found.used, found.note) == (
        "random",
        "Hard pairs need item labels, and no item of this dataset has one.",
    )
