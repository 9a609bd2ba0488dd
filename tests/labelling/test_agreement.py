"""Agreement between annotators: the statistics against hand-computed textbook examples, and the selector
over a dataset's pairs."""

from __future__ import annotations

from typing import Any

import pytest

from apps.labelling.agreement import cohen_kappa, krippendorff_alpha_interval, mean_pairwise_kappa
from apps.labelling.models import Pair
from apps.labelling.selectors import Agreement, agreement
from tests.factories import DatasetFactory, ItemFactory, UserFactory

# Wikipedia's "Cohen's kappa" example: 50 proposals, A and B both yes 20, A yes B no 5, A no B yes 10,
# both no 15. p_o = 35/50 = 0.7; p_yes = 0.5 * 0.6 = 0.30, p_no = 0.5 * 0.4 = 0.20, p_e = 0.5;
# kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4.
TEXTBOOK_A = [1] * 20 + [1] * 5 + [0] * 10 + [0] * 15
TEXTBOOK_B = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: four observers, twelve
# units, values 1..5, missing values (None). Interval alpha = 0.849 (nominal 0.743).
KRIPPENDORFF = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}


def krippendorff_units(scale: Any = float) -> list[dict[str, float]]:
    return [
        {who: scale(values[u]) for who, values in KRIPPENDORFF.items() if values[u] is not None}
        for u in range(12)
    ]


def test_cohen_kappa_of_the_textbook_example_is_0_4() -> None:
    assert cohen_kappa(TEXTBOOK_A, TEXTBOOK_B) == pytest.approx(0.4)


def test_cohen_kappa_is_1_for_perfect_agreement_and_undefined_without_variation() -> None:
    assert cohen_kappa([1, 0, 1, 0], [1, 0, 1, 0]) == 1.0
    assert cohen_kappa([1, 1, 1], [1, 1, 1]) is None  # chance already agrees perfectly
    assert cohen_kappa([1], [1]) is None  # one shared unit is no overlap


def test_cohen_kappa_of_systematic_disagreement_is_negative() -> None:
    # p_o = 0, p_e = 0.5 -> kappa = -1
    assert cohen_kappa([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)


def test_mean_pairwise_kappa_averages_every_two_annotators() -> None:
    # a and b: the textbook 0.4; a and c agree on all 4 shared units (2 yes, 2 no): 1.0;
    # b and c share those 4 units too: b says 1, 1, 1, 0 where c says 1, 1, 0, 0 ->
    # p_o = 3/4, p_e = (3/4 * 2/4) + (1/4 * 2/4) = 0.5, kappa = 0.5.
    units: list[dict[str, int]] = [{"a": x, "b": y} for x, y in zip(TEXTBOOK_A, TEXTBOOK_B, strict=True)]
    units += [
        {"a": 1, "b": 1, "c": 1},
        {"a": 1, "b": 1, "c": 1},
        {"a": 0, "b": 1, "c": 0},
        {"a": 0, "b": 0, "c": 0},
    ]
    # a-b over all 54 units: 20+2 yes/yes, 5 yes/no, 10+1 no/yes, 15+1 no/no
    p_o = (22 + 16) / 54
    p_e = (27 / 54) * (33 / 54) + (27 / 54) * (21 / 54)
    ab = (p_o - p_e) / (1 - p_e)

    result = mean_pairwise_kappa(units)

    assert result is not None
    assert result.value == pytest.approx((ab + 1.0 + 0.5) / 3)
    assert (result.units, result.annotator_pairs) == (54, 3)


def test_krippendorff_alpha_interval_of_the_published_example_is_0_849() -> None:
    result = krippendorff_alpha_interval(krippendorff_units())

    assert result is not None
    assert round(result.value, 3) == 0.849
    assert result.units == 11  # unit 12 has one value only: not pairable


def test_krippendorff_alpha_ignores_a_linear_rescaling_like_grades_to_scores() -> None:
    grades = krippendorff_alpha_interval(krippendorff_units())
    scores = krippendorff_alpha_interval(krippendorff_units(lambda g: (g - 1) / 4))

    assert grades is not None and scores is not None
    assert scores.value == pytest.approx(grades.value)


def test_krippendorff_alpha_by_hand_on_two_units() -> None:
    # Units {0, 1} and {1, 1}: n = 4 values 0, 1, 1, 1. D_o = (1/4) * [2 * 1 / 1 + 0] = 0.5.
    # D_e = (1/(4*3)) * sum over ordered pairs i != j of (v_i - v_j)^2 = (1/12) * 6 = 0.5 -> alpha = 0.
    result = krippendorff_alpha_interval([{"a": 0.0, "b": 1.0}, {"a": 1.0, "b": 1.0}])

    assert result is not None
    assert result.value == pytest.approx(0.0)


def test_krippendorff_alpha_is_undefined_without_overlap_or_variation() -> None:
    assert krippendorff_alpha_interval([{"a": 1.0}, {"b": 0.0}, {"a": 0.5, "b": 0.5}]) is None
    assert krippendorff_alpha_interval([{"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 1.0}]) is None


# -- the selector over stored pairs ----------------------------------------------------------------------


def store(dataset: Any, items: list[Any], user: Any, scores: list[float | None]) -> None:
    """``user``'s score for pair (items[0], items[u + 1]) of each unit u (None: not labelled)."""
    Pair.objects.bulk_create(
        Pair(dataset=dataset, item_a=items[0], item_b=items[u + 1], score=s, annotator=user, source="manual")
        for u, s in enumerate(scores)
        if s is not None
    )


@pytest.mark.django_db
def test_agreement_of_a_binary_dataset_is_the_textbook_kappa_over_the_50_shared_pairs() -> None:
    dataset = DatasetFactory()
    items = [ItemFactory(dataset=dataset) for _ in range(53)]
    alice, bob, carol = (
        UserFactory(username="alice"),
        UserFactory(username="bob"),
        UserFactory(username="carol"),
    )
    store(dataset, items, alice, [float(x) for x in TEXTBOOK_A] + [1.0, None])
    store(dataset, items, bob, [float(x) for x in TEXTBOOK_B] + [None, 1.0])
    store(dataset, items, carol, [None] * 52)  # nobody else
    Pair.objects.create(dataset=dataset, item_a=items[0], item_b=items[1], score=0.0, source="import")

    result = agreement(dataset)

    assert result is not None
    assert result.value == pytest.approx(0.4)
    assert (result.statistic, result.pairs, result.annotators) == ("cohen_kappa", 50, 2)


@pytest.mark.django_db
def test_agreement_of_a_graded_dataset_is_krippendorffs_interval_alpha() -> None:
    dataset = DatasetFactory(settings={"label_mode": "graded"})
    items = [ItemFactory(dataset=dataset) for _ in range(13)]
    for who, grades in KRIPPENDORFF.items():
        store(dataset, items, UserFactory(username=who), [None if g is None else (g - 1) / 4 for g in grades])

    result = agreement(dataset)

    assert isinstance(result, Agreement)
    assert (result.statistic, round(result.value, 3), result.pairs, result.annotators) == (
        "krippendorff_alpha",
        0.849,
        11,
        4,
    )


@pytest.mark.django_db
def test_no_agreement_without_pairs_that_two_annotators_labelled() -> None:
    dataset = DatasetFactory()
    items = [ItemFactory(dataset=dataset) for _ in range(4)]
    store(dataset, items, UserFactory(username="alice"), [1.0, 0.0, None])
    store(dataset, items, UserFactory(username="bob"), [None, None, 1.0])

    assert agreement(dataset) is None
    assert agreement(DatasetFactory()) is None


@pytest.mark.django_db
def test_the_dataset_overview_shows_the_agreement(client: Any) -> None:
    dataset = DatasetFactory(slug="agree")
    items = [ItemFactory(dataset=dataset) for _ in range(53)]
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    store(dataset, items, alice, [float(x) for x in TEXTBOOK_A] + [1.0, None])
    store(dataset, items, bob, [float(x) for x in TEXTBOOK_B] + [None, 1.0])
    client.force_login(alice)

    html = client.get("/datasets/agree/").content.decode()

    assert "0.40" in html and "Cohen" in html and "50 pairs" in html
    client.force_login(UserFactory(username="carol"))
    assert (
        "not enough overlap" in client.get(f"/datasets/{DatasetFactory(slug='solo').slug}/").content.decode()
    )
