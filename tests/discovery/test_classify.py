"""kNN classification with "unknown" over a real trained CLINC150 slice (MiniLM, MLP head, embedded Qdrant)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from rest_framework.test import APIClient

from apps.discovery import services
from apps.training.encoding import text_encoder
from apps.training.models import ModelVersion
from tests.discovery.conftest import Trained, state

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

IN_SCOPE = "set an alarm for 7am"
OUT_OF_SCOPE = "who has the best record in the nfl"  # CLINC150 oos_val


def classify(api: APIClient, payload: dict[str, Any]) -> Any:
    return api.post("/api/datasets/clinc/classify/", payload, format="json")


def unknown_threshold() -> float:
    return ModelVersion.objects.get(dataset__slug="clinc", is_active=True).metrics["classify"][
        "unknown_threshold"
    ]


def test_the_retrain_calibrated_the_unknown_threshold(clinc: Trained) -> None:
    calibration = ModelVersion.objects.get(dataset__slug="clinc", is_active=True).metrics["classify"]

    assert calibration["k"] == 10 and calibration["unknown_rate"] == 0.05
    assert calibration["calibrated_on"] == 60
    assert 0.0 < calibration["unknown_threshold"] < 1.0  # a cosine distance


def test_an_in_scope_text_gets_its_intent(labeller_api: APIClient, clinc: Trained) -> None:
    response = classify(labeller_api, {"text": IN_SCOPE})

    assert response.status_code == 200
    body = response.json()
    assert body["version"] == 1
    assert (body["label"], body["unknown"]) == ("alarm", False)
    assert body["labels"][0]["label"] == "alarm"
    confidences = [entry["confidence"] for entry in body["labels"]]
    assert confidences == sorted(confidences, reverse=True)
    assert 0.0 < sum(confidences) <= 1.0 + 1e-6
    assert body["threshold"] == round(unknown_threshold(), 6)
    assert body["anomaly_score"] <= body["threshold"]
    # The score is the mean distance to the 10 nearest labelled items, which are the neighbours shown.
    neighbours = body["neighbours"]
    assert len(neighbours) == 10 and all(n["item"]["label"] for n in neighbours)
    distances = [n["distance"] for n in neighbours]
    assert distances == sorted(distances)
    assert body["anomaly_score"] == pytest.approx(float(np.mean(distances)), abs=1e-5)


def test_confidences_are_distance_weighted_vote_shares(labeller_api: APIClient, clinc: Trained) -> None:
    # An ambiguous query, so that more than one label gets votes.
    body = classify(labeller_api, {"text": "my card was blocked when i set an alarm"}).json()

    votes: dict[str, float] = {}
    for n in body["neighbours"]:
        votes[n["item"]["label"]] = votes.get(n["item"]["label"], 0.0) + 1.0 / (n["distance"] + 1e-6)
    total = sum(votes.values())
    assert len(body["labels"]) == len(votes) >= 2
    for entry in body["labels"]:
        assert entry["confidence"] == pytest.approx(votes[entry["label"]] / total, abs=1e-4)
    assert sum(e["confidence"] for e in body["labels"]) == pytest.approx(1.0, abs=1e-5)


def test_top_keeps_the_best_labels_only(labeller_api: APIClient, clinc: Trained) -> None:
    text = "my card was blocked when i set an alarm"
    every = classify(labeller_api, {"text": text}).json()["labels"]

    one = classify(labeller_api, {"text": text, "top": 1}).json()["labels"]

    assert one == every[:1] and len(every) >= 2
    assert one[0]["confidence"] < 1.0  # a share of all votes, not of the labels shown


@pytest.mark.parametrize("k", [3, 50])
def test_k_sets_how_many_neighbours_vote_not_what_is_unknown(
    labeller_api: APIClient, clinc: Trained, k: int
) -> None:
    default = classify(labeller_api, {"text": IN_SCOPE}).json()

    body = classify(labeller_api, {"text": IN_SCOPE, "k": k}).json()

    assert len(body["neighbours"]) == k
    assert [n["item"]["id"] for n in body["neighbours"][:3]] == [
        n["item"]["id"] for n in default["neighbours"][:3]
    ]
    # The threshold was calibrated on the mean distance to the dataset's knn_k (10) nearest labelled items:
    # the score stays that statistic whatever number of neighbours the request lets vote.
    assert body["anomaly_score"] == default["anomaly_score"]
    assert (body["label"], body["unknown"]) == ("alarm", False)


def test_an_out_of_scope_text_is_unknown(labeller_api: APIClient, clinc: Trained) -> None:
    response = classify(labeller_api, {"text": OUT_OF_SCOPE})

    assert response.status_code == 200
    body = response.json()
    assert body["threshold"] == round(unknown_threshold(), 6)
    assert body["anomaly_score"] > body["threshold"]
    assert (body["label"], body["unknown"]) == ("unknown", True)
    assert body["labels"] and body["labels"][0]["label"] != "unknown"  # the vote is still shown


def test_texts_give_one_result_per_text_in_order(labeller_api: APIClient, clinc: Trained) -> None:
    texts = ["what is the apr on my credit card", OUT_OF_SCOPE, IN_SCOPE, "why is my bank account frozen"]

    response = classify(labeller_api, {"texts": texts})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"version", "results"}
    assert [r["label"] for r in body["results"]] == ["apr", "unknown", "alarm", "account_blocked"]
    singles = [classify(labeller_api, {"text": t}).json() for t in texts]
    for batched, single in zip(body["results"], singles, strict=True):
        single.pop("version")
        assert batched["label"] == single["label"] and batched["labels"] == single["labels"]
        assert batched["anomaly_score"] == pytest.approx(single["anomaly_score"], abs=1e-5)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({}, "give exactly one of 'text', 'texts', 'vector' or 'vectors'"),
        (
            {"text": IN_SCOPE, "texts": [IN_SCOPE]},
            "give exactly one of 'text', 'texts', 'vector' or 'vectors'",
        ),
        ({"top": 3}, "give exactly one of 'text', 'texts', 'vector' or 'vectors'"),
        ({"texts": []}, "Ensure this field has at least 1 elements."),
        ({"texts": ["ok"] * 257}, "Ensure this field has no more than 256 elements."),
        ({"text": ""}, "This field may not be blank."),
        ({"text": "   "}, "This field may not be blank."),
        ({"text": True}, "Not a valid string."),
        ({"text": ["set an alarm"]}, "Not a valid string."),
        ({"texts": "set an alarm"}, 'Expected a list of items but got type "str".'),
        ({"vector": [0.1, 0.2]}, "dataset 'clinc' holds texts: send 'text', not a vector"),
        ({"text": IN_SCOPE, "top": 0}, "greater than or equal to 1"),
        ({"text": IN_SCOPE, "k": 0}, "greater than or equal to 1"),
        ({"text": IN_SCOPE, "k": 201}, "less than or equal to 200"),
    ],
)
def test_bad_classification_requests_are_400_and_change_nothing(
    labeller_api: APIClient, clinc: Trained, payload: dict[str, Any], message: str
) -> None:
    before = state()

    response = classify(labeller_api, payload)

    assert response.status_code == 400
    assert message in str(response.json())
    assert state() == before


@pytest.fixture
def encode_calls(clinc: Trained, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    """The texts of every call to the MiniLM encoder's ``encode`` from now on.

    The wrapper only counts calls and passes them on to the real encoder; it changes no result.
    """
    encoder = text_encoder("minilm")
    real = encoder.encode
    calls: list[list[str]] = []

    def counting(items: Any, **kwargs: Any) -> Any:
        calls.append(list(items))
        return real(items, **kwargs)

    monkeypatch.setattr(encoder, "encode", counting)
    services.query_cache_clear()
    yield calls
    services.query_cache_clear()


def test_a_repeated_query_text_is_encoded_once(
    labeller_api: APIClient, clinc: Trained, encode_calls: list[list[str]]
) -> None:
    text = "could you set an alarm for half past five"

    first = classify(labeller_api, {"text": text}).json()
    second = classify(labeller_api, {"text": text}).json()
    batch = classify(labeller_api, {"texts": [text, text]}).json()
    other = classify(labeller_api, {"text": "what is my apr"}).json()

    assert encode_calls == [[text], ["what is my apr"]]
    assert second == first
    single = {name: value for name, value in first.items() if name != "version"}
    assert batch["results"] == [single, single]
    assert other["label"] == "apr"
