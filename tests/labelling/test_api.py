"""Labelling pairs through the REST API."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from apps.labelling.models import Pair
from tests.conftest import db_snapshot
from tests.factories import DatasetFactory, ItemFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def items() -> list[Any]:
    dataset = DatasetFactory(slug="d")
    return [ItemFactory(dataset=dataset, key=f"k{i}") for i in range(4)]


def test_a_labeller_labels_a_pair_and_relabelling_replaces_the_score(
    labeller_api: APIClient, items: list[Any]
) -> None:
    first = labeller_api.post("/api/datasets/d/pairs/", {"a": "k2", "b": "k0", "score": 1}, format="json")
    again = labeller_api.post("/api/datasets/d/pairs/", {"a": "k0", "b": "k2", "score": 0.25}, format="json")

    pair = Pair.objects.get()
    assert first.status_code == again.status_code == 201
    assert again.json() | {"id": 0, "created_at": "", "updated_at": ""} == {
        "id": 0,
        "a": "k0",
        "b": "k2",
        "item_a": items[0].pk,
        "item_b": items[2].pk,
        "score": 0.25,
        "annotator": "labeller",
        "source": "manual",
        "created_at": "",
        "updated_at": "",
    }
    assert (pair.item_a_id, pair.item_b_id, pair.score, pair.annotator.username) == (
        items[0].pk,
        items[2].pk,
        0.25,
        "labeller",
    )


def test_two_annotators_keep_their_own_labels(
    labeller_api: APIClient, staff_api: APIClient, items: list[Any]
) -> None:
    labeller_api.post("/api/datasets/d/pairs/", {"a": "k0", "b": "k1", "score": 1}, format="json")
    staff_api.post("/api/datasets/d/pairs/", {"a": "k0", "b": "k1", "score": 0}, format="json")

    listed = labeller_api.get("/api/datasets/d/pairs/?annotator=labeller").json()
    by_key = labeller_api.get("/api/datasets/d/pairs/?key=k1").json()

    assert sorted(Pair.objects.values_list("annotator__username", "score")) == [
        ("admin", 0.0),
        ("labeller", 1.0),
    ]
    assert [r["score"] for r in listed["results"]] == [1.0]
    assert by_key["count"] == 2


def test_bulk_labelling(labeller_api: APIClient, items: list[Any]) -> None:
    response = labeller_api.post(
        "/api/datasets/d/pairs/bulk/",
        {"pairs": [{"a": "k0", "b": "k1", "score": 1}, {"a": "k2", "b": "k3", "score": 0}]},
        format="json",
    )

    assert response.status_code == 201 and response.json()["pairs_created"] == 2
    assert Pair.objects.filter(annotator__username="labeller", source="manual").count() == 2


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"pairs": [{"a": "k0", "b": "k1", "score": 1.5}]}, "less than or equal to 1"),
        ({"pairs": [{"a": "k0", "b": "k1", "score": -0.1}]}, "greater than or equal to 0"),
        (
            {"pairs": [{"a": "k0", "b": "ghost", "score": 1}]},
            "pairs, entry 1, field 'b': no item with key 'ghost' in this request or dataset 'd'",
        ),
        (
            {"pairs": [{"a": "k0", "b": "k1", "score": 1}, {"a": "k2", "b": "k2", "score": 1}]},
            "entry 2, field 'b': a pair of item 'k2' with itself",
        ),
        (
            {"pairs": [{"a": "k0", "b": "k1", "score": 1}, {"a": "k1", "b": "k0", "score": 0}]},
            "entry 2: duplicate pair ('k0', 'k1') (first at entry 1)",
        ),
        ({"pairs": [{"a": "k0", "score": 1}]}, "required"),
        ({"pairs": []}, "empty"),
    ],
)
def test_bad_pairs_are_400_and_change_nothing(
    labeller_api: APIClient, items: list[Any], payload: dict[str, Any], expected: str
) -> None:
    before = db_snapshot()

    response = labeller_api.post("/api/datasets/d/pairs/bulk/", payload, format="json")

    assert response.status_code == 400 and expected in str(response.json())
    assert db_snapshot() == before


def test_pairs_of_another_dataset_are_unknown_items(labeller_api: APIClient, items: list[Any]) -> None:
    ItemFactory(dataset=DatasetFactory(slug="other"), key="elsewhere")
    before = db_snapshot()

    response = labeller_api.post(
        "/api/datasets/d/pairs/", {"a": "k0", "b": "elsewhere", "score": 1}, format="json"
    )

    assert response.status_code == 400 and "no item with key 'elsewhere'" in response.json()["detail"]
    assert db_snapshot() == before


def test_unknown_dataset_is_404(labeller_api: APIClient) -> None:
    assert (
        labeller_api.post(
            "/api/datasets/nope/pairs/", {"a": "x", "b": "y", "score": 1}, format="json"
        ).status_code
        == 404
    )


def test_a_boolean_is_not_a_score(labeller_api: APIClient, items: list[Any]) -> None:
    before = db_snapshot()

    response = labeller_api.post(
        "/api/datasets/d/pairs/", {"a": "k0", "b": "k1", "score": True}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"score": ["A valid number is required."]}
    assert db_snapshot() == before
