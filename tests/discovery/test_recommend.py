"""Neighbours and recommendations over a real trained CLINC150 slice (MiniLM, MLP head, embedded Qdrant)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from rest_framework.test import APIClient

from apps.training.index import index_alias, vector_store
from tests.discovery.conftest import Trained, state
from tests.factories import DatasetFactory, ItemFactory

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def stored_vectors(clinc: Trained) -> dict[int, np.ndarray]:
    """The active index's vectors (unit length: the model is cosine) of every item."""
    return vector_store().get_vectors(index_alias(clinc.dataset), clinc.ids)


def similarities(clinc: Trained, item_id: int) -> dict[int, float]:
    vectors = stored_vectors(clinc)
    return {other: float(vectors[item_id] @ v) for other, v in vectors.items() if other != item_id}


def labels_of(results: list[dict[str, Any]]) -> list[str]:
    return [r["item"]["label"] for r in results]


# -- neighbours ---------------------------------------------------------------------------------------------


def test_neighbours_leave_the_item_out_and_come_best_first(labeller_api: APIClient, clinc: Trained) -> None:
    item = clinc.by_label["alarm"][0]

    response = labeller_api.get(f"/api/datasets/clinc/items/{item}/neighbours/")

    assert response.status_code == 200
    body = response.json()
    results = body["results"]
    expected = sorted(similarities(clinc, item).items(), key=lambda kv: -kv[1])[:10]
    assert body["version"] == 1
    assert [r["item"]["id"] for r in results] == [other for other, _ in expected]
    assert item not in [r["item"]["id"] for r in results]
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    for r, (_, similarity) in zip(results, expected, strict=True):
        assert r["score"] == pytest.approx(similarity, abs=1e-5)
        assert r["distance"] == pytest.approx(1.0 - r["score"], abs=2e-6)
        assert r["explanation"] == {"closest_example": {"item_id": item}, "similarity": r["score"]}
        row = clinc.item[r["item"]["id"]]
        assert r["item"] == {
            "id": row["id"],
            "key": row["key"],
            "label": row["label"],
            "text": row["text"],
            "metadata": row["metadata"],
        }
    assert labels_of(results) == ["alarm"] * 10  # the other 11 alarm queries are the nearest


def test_neighbours_limit(labeller_api: APIClient, clinc: Trained) -> None:
    item = clinc.by_label["apr"][3]

    three = labeller_api.get(f"/api/datasets/clinc/items/{item}/neighbours/?limit=3").json()["results"]
    ten = labeller_api.get(f"/api/datasets/clinc/items/{item}/neighbours/").json()["results"]

    assert [r["item"]["id"] for r in three] == [r["item"]["id"] for r in ten[:3]]


@pytest.mark.parametrize(
    ("query", "check", "count"),
    [
        ("label=apr", lambda m, label: label == "apr", 10),
        ("labelled=true", lambda m, label: bool(label), 10),
        ("metadata.group=odd", lambda m, label: m["group"] == "odd", 10),
        ("metadata.n=7", lambda m, label: m["n"] == 7, 1),
        ("min.n=10&max.n=20", lambda m, label: 10 <= m["n"] <= 20, 10),
        ("min.weight=40.5", lambda m, label: m["weight"] >= 40.5, 10),
        ("max.weight=5", lambda m, label: m["weight"] <= 5, 5),  # n = 0..4
        (
            "label=alarm&metadata.group=even&min.n=30",
            lambda m, label: label == "alarm" and m["group"] == "even" and m["n"] >= 30,
            3,  # the alarm queries are n = 24..35
        ),
        ("label=no_such_intent", lambda m, label: False, 0),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_neighbours_respect_filters(
    labeller_api: APIClient, clinc: Trained, query: str, check: Any, count: int
) -> None:
    item = clinc.by_label["alarm"][0]
    assert clinc.item[item]["metadata"]["n"] == 24

    response = labeller_api.get(f"/api/datasets/clinc/items/{item}/neighbours/?{query}")

    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == count
    assert all(check(r["item"]["metadata"], r["item"]["label"]) for r in results)
    assert item not in [r["item"]["id"] for r in results]
    # Best first among the items that pass the filter.
    sims = similarities(clinc, item)
    passing = [i for i in sims if check(clinc.item[i]["metadata"], clinc.item[i]["label"])]
    assert [r["item"]["id"] for r in results] == sorted(passing, key=lambda i: -sims[i])[:10]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("metadata.bad-name=1", "must be an identifier"),
        ("min.n=abc", "'abc' is not a number"),
        ("max.n=inf", "must be a finite number"),
        ("labelled=maybe", "must be true or false"),
        ("limit=0", "must be from 1 to 200"),
        ("limit=ten", "'ten' is not an integer"),
        # beyond the engine's 64-bit integers: a TypeError inside it, a 500 (found by tests/test_api_fuzz.py)
        ("metadata.n=99999999999999999999", "integers are matched up to 64 bits"),
    ],
)
def test_neighbours_with_a_bad_query_are_400(
    labeller_api: APIClient, clinc: Trained, query: str, message: str
) -> None:
    item = clinc.ids[0]
    before = state()

    response = labeller_api.get(f"/api/datasets/clinc/items/{item}/neighbours/?{query}")

    assert response.status_code == 400 and message in str(response.json())
    assert state() == before


def test_neighbours_of_an_unknown_item_or_dataset_are_404(labeller_api: APIClient, clinc: Trained) -> None:
    elsewhere = ItemFactory(dataset=DatasetFactory(slug="other"))

    assert labeller_api.get("/api/datasets/clinc/items/999999/neighbours/").status_code == 404
    assert labeller_api.get(f"/api/datasets/clinc/items/{elsewhere.pk}/neighbours/").status_code == 404
    assert labeller_api.get(f"/api/datasets/nope/items/{clinc.ids[0]}/neighbours/").status_code == 404


# -- recommendations ----------------------------------------------------------------------------------------


def recommend(api: APIClient, payload: dict[str, Any]) -> Any:
    return api.post("/api/datasets/clinc/recommend/", payload, format="json")


def test_recommend_from_positive_items_explains_each_result(labeller_api: APIClient, clinc: Trained) -> None:
    a, b = clinc.by_label["alarm"][:2]

    response = recommend(labeller_api, {"positive": [a, b]})

    assert response.status_code == 200
    results = response.json()["results"]
    ids = [r["item"]["id"] for r in results]
    assert len(results) == 10 and a not in ids and b not in ids
    assert labels_of(results) == ["alarm"] * 10
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    vectors = stored_vectors(clinc)
    for r in results:
        v = vectors[r["item"]["id"]]
        to_a, to_b = float(vectors[a] @ v), float(vectors[b] @ v)
        closest = a if to_a >= to_b else b
        assert r["explanation"] == {
            "closest_example": {"item_id": closest},
            "similarity": pytest.approx(max(to_a, to_b), abs=1e-5),
        }
        assert r["distance"] == pytest.approx(1.0 - r["score"], abs=2e-6)


def test_recommend_from_a_text(labeller_api: APIClient, clinc: Trained) -> None:
    text = "please wake me up with an alarm at 6 am"

    response = recommend(labeller_api, {"positive_texts": [text], "limit": 5})

    assert response.status_code == 200
    results = response.json()["results"]
    assert labels_of(results) == ["alarm"] * 5
    for r in results:
        assert r["explanation"]["closest_example"] == {"text": text}
        assert r["explanation"]["similarity"] == pytest.approx(r["score"], abs=1e-5)


def test_recommend_mixes_an_item_and_a_text_and_names_the_closer_one(
    labeller_api: APIClient, clinc: Trained
) -> None:
    alarm = clinc.by_label["alarm"][0]
    text = "what is the interest rate on my credit card"

    results = recommend(labeller_api, {"positive": [alarm], "positive_texts": [text], "limit": 20}).json()[
        "results"
    ]

    closest = {r["item"]["label"]: set() for r in results}
    for r in results:
        closest[r["item"]["label"]].add(str(r["explanation"]["closest_example"]))
    # Alarm results are explained by the alarm item, APR results by the APR question.
    assert closest["alarm"] == {str({"item_id": alarm})}
    assert closest["apr"] == {str({"text": text})}


def test_recommend_leaves_negative_examples_out(labeller_api: APIClient, clinc: Trained) -> None:
    positive = clinc.by_label["alarm"][0]
    negative = clinc.by_label["alarm"][1]
    plain = recommend(labeller_api, {"positive": [positive], "limit": 59}).json()["results"]
    assert negative in [r["item"]["id"] for r in plain]

    results = recommend(labeller_api, {"positive": [positive], "negative": [negative], "limit": 59}).json()[
        "results"
    ]

    ids = [r["item"]["id"] for r in results]
    assert positive not in ids and negative not in ids and len(ids) == 58


def test_recommend_best_score_strategy(labeller_api: APIClient, clinc: Trained) -> None:
    positive = clinc.by_label["apr"][:2]
    negative = clinc.by_label["alarm"][:2]

    response = recommend(
        labeller_api, {"positive": positive, "negative": negative, "strategy": "best_score", "limit": 8}
    )

    assert response.status_code == 200
    results = response.json()["results"]
    ids = [r["item"]["id"] for r in results]
    assert len(ids) == 8 and not set(ids) & set(positive + negative)
    assert labels_of(results) == ["apr"] * 8
    assert all("distance" not in r for r in results)  # best_score ranks; it is not a distance
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert all(r["explanation"]["closest_example"] in [{"item_id": i} for i in positive] for r in results)


def test_recommend_best_score_from_negative_examples_only(labeller_api: APIClient, clinc: Trained) -> None:
    negative = clinc.by_label["alarm"][:3]

    response = recommend(labeller_api, {"negative": negative, "strategy": "best_score", "limit": 5})

    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 5 and "alarm" not in labels_of(results)
    assert all("explanation" not in r for r in results)  # no positive example to be closest to


@pytest.mark.parametrize(
    ("flt", "check"),
    [
        ({"label": "apr"}, lambda m, label: label == "apr"),
        ({"labelled": True}, lambda m, label: bool(label)),
        ({"metadata": {"group": "odd"}}, lambda m, label: m["group"] == "odd"),
        ({"metadata": {"n": 3}}, lambda m, label: m["n"] == 3),
        ({"ranges": {"n": {"gte": 10, "lt": 30}}}, lambda m, label: 10 <= m["n"] < 30),
        ({"ranges": {"weight": {"gt": 50.5}}}, lambda m, label: m["weight"] > 50.5),
        (
            {"label": "alarm", "metadata": {"group": "even"}, "ranges": {"n": {"lte": 30}}},
            lambda m, label: label == "alarm" and m["group"] == "even" and m["n"] <= 30,
        ),
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else "",
)
def test_recommend_with_a_filter(labeller_api: APIClient, clinc: Trained, flt: Any, check: Any) -> None:
    positive = clinc.by_label["alarm"][0]
    sims = similarities(clinc, positive)
    passing = [i for i in sims if check(clinc.item[i]["metadata"], clinc.item[i]["label"])]

    response = recommend(labeller_api, {"positive": [positive], "filter": flt, "limit": 10})

    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["item"]["id"] for r in results] == sorted(passing, key=lambda i: -sims[i])[:10]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"positive": [999999]}, "dataset 'clinc' has no item 999999"),
        # beyond 64 bits: no item id, and no number the database can compare (found by tests/test_api_fuzz.py)
        ({"positive": [2**63]}, "less than or equal to 9223372036854775807"),
        ({"positive": ["first"], "negative": [10**30]}, "less than or equal to 9223372036854775807"),
        ({"positive": [], "positive_texts": []}, "give at least one positive example"),
        ({}, "give at least one positive example"),
        ({"negative": ["first"]}, "give at least one positive example"),  # average_vector needs one
        ({"positive_texts": [""]}, "This field may not be blank."),
        ({"positive_vectors": [[0.1, 0.2]]}, "dataset 'clinc' holds texts: send 'text', not a vector"),
        ({"positive": ["first"], "strategy": "max_sim"}, "is not a valid choice"),
        ({"positive": ["first"], "limit": 0}, "greater than or equal to 1"),
        ({"positive": ["first"], "filter": {"metadata": {"bad-name": "x"}}}, "must be an identifier"),
        ({"positive": ["first"], "filter": {"ranges": {"bad name": {"gte": 1}}}}, "must be an identifier"),
        ({"positive": ["first"], "filter": {"ranges": {"n": {}}}}, "give at least one of gte, gt, lte, lt"),
        ({"positive": ["first"], "filter": {"metadata": {"weight": 1.5}}}, "use 'ranges' for other numbers"),
        ({"positive": ["first"], "filter": {"ranges": {"n": {"gte": True}}}}, "A valid number is required"),
        ({"positive": ["first"], "filter": "label=apr"}, "Expected a dictionary"),
        ({"positive": ["first"], "filter": {"metadata": {"n": 2**64}}}, "integers are matched up to 64 bits"),
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else "",
)
def test_bad_recommendation_requests_are_400_and_change_nothing(
    labeller_api: APIClient, clinc: Trained, payload: dict[str, Any], message: str
) -> None:
    # "first" stands for a real item of the dataset.
    payload = {
        name: [clinc.ids[0] if v == "first" else v for v in value]
        if name in ("positive", "negative")
        else value
        for name, value in payload.items()
    }
    before = state()

    response = recommend(labeller_api, payload)

    assert response.status_code == 400, response.json()
    assert message in str(response.json())
    assert state() == before


def test_a_lone_surrogate_in_a_filter_is_400_and_changes_nothing(
    labeller_api: APIClient, clinc: Trained
) -> None:
    # JSON can spell half of a UTF-16 pair; the engine takes only UTF-8 text. It was a 500 (a TypeError
    # from inside the engine); found by tests/test_api_fuzz.py. The API's JSON parser now refuses it.
    payload = {"positive": [clinc.ids[0]], "filter": {"metadata": {"group": "even\ud800"}}}
    before = state()

    response = labeller_api.generic(
        "POST", "/api/datasets/clinc/recommend/", json.dumps(payload), content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json() == {
        "detail": "JSON parse error - a string holds a lone surrogate (U+D800), which is not valid Unicode text"
    }
    assert state() == before


def test_an_item_of_another_dataset_is_no_example(labeller_api: APIClient, clinc: Trained) -> None:
    elsewhere = ItemFactory(dataset=DatasetFactory(slug="other"))
    before = state()

    response = recommend(labeller_api, {"positive": [clinc.ids[0], elsewhere.pk]})

    assert response.status_code == 400
    assert response.json() == {"detail": f"dataset 'clinc' has no item {elsewhere.pk}"}
    assert state() == before
