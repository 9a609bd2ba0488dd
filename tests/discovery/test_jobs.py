"""Discovery work that runs in the job thread: new labelled items indexed on arrival (a new class without a
retrain) and rescoring after feedback. The job thread reads committed rows only, hence transactional tests,
each with its own small real training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rest_framework.test import APIClient

from apps.common import background
from apps.datasets.models import Dataset, Item
from apps.discovery.models import AnomalyScore
from apps.training.index import index_alias, vector_store
from apps.training.models import ModelVersion
from simapp.learning.anomaly import trimmed_knn_scores
from tests.discovery.conftest import clinc_slice
from tests.training.conftest import make_dataset, run_to_end

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

NEW_INTENT = "are_you_a_bot"  # the sixth intent in name order: not in the five-intent slice


def intent_texts(shared_data: Path, split: str, intent: str) -> list[str]:
    document = json.loads((shared_data / "clinc150" / "data_full_train_val.json").read_text())
    return [text for text, label in document[split] if label == intent]


def test_a_new_class_gets_the_vote_as_soon_as_its_items_are_indexed(
    data_dir: Path, shared_data: Path, staff_api: APIClient
) -> None:
    dataset = make_dataset("clinc", clinc_slice(shared_data))
    assert run_to_end(dataset, epochs=2).status == "succeeded"
    queries = intent_texts(shared_data, "val", NEW_INTENT)[:8]  # held-out queries of the new intent
    before = staff_api.post("/api/datasets/clinc/classify/", {"texts": queries}, format="json").json()

    for number, text in enumerate(intent_texts(shared_data, "train", NEW_INTENT)[:5]):
        created = staff_api.post(
            "/api/datasets/clinc/items/",
            {"key": f"bot-{number}", "text": text, "label": NEW_INTENT},
            format="json",
        )
        assert created.status_code == 201
    background.drain()  # the items are indexed with the active model in the job thread
    after = staff_api.post("/api/datasets/clinc/classify/", {"texts": queries}, format="json").json()

    new_ids = set(Item.objects.filter(label=NEW_INTENT).values_list("id", flat=True))
    assert ModelVersion.objects.count() == 1  # no retrain
    assert all(NEW_INTENT not in [e["label"] for e in r["labels"]] for r in before["results"])
    for result in after["results"]:
        assert result["labels"][0]["label"] == NEW_INTENT
        nearest_five = {n["item"]["id"] for n in result["neighbours"][:5]}
        assert nearest_five == new_ids
        # Not calibrated yet (the version never saw the class), so no threshold turns it into "unknown".
        assert (result["calibrated"], result["unknown"], result["label"]) == (False, False, NEW_INTENT)
    # The classes the version was trained on keep their calibrated threshold.
    known = Item.objects.exclude(label=NEW_INTENT).values_list("label", flat=True).first()
    old = intent_texts(shared_data, "val", known)[:3]
    for result in staff_api.post("/api/datasets/clinc/classify/", {"texts": old}, format="json").json()[
        "results"
    ]:
        assert result["calibrated"] is True
        assert result["unknown"] is (result["anomaly_score"] > result["threshold"])


def scores_of(version: ModelVersion) -> dict[int, float]:
    return dict(AnomalyScore.objects.filter(version=version).values_list("item_id", "score"))


def test_rescoring_takes_confirmed_anomalies_out_of_the_reference_set(
    data_dir: Path, shared_data: Path, staff_api: APIClient, labeller_api: APIClient
) -> None:
    dataset = make_dataset("clinc", clinc_slice(shared_data))
    assert run_to_end(dataset, epochs=2).status == "succeeded"
    version = ModelVersion.objects.get(is_active=True)
    ids = list(Item.objects.filter(dataset=dataset).order_by("id").values_list("id", flat=True))
    first = scores_of(version)
    # The most typical item, which every scoring so far used as a normal neighbour, and one more.
    confirmed = min(first, key=first.get)
    cleared = max(first, key=first.get)
    labeller_api.put(
        f"/api/datasets/clinc/anomalies/{confirmed}/feedback/", {"verdict": "anomaly"}, format="json"
    )
    labeller_api.put(
        f"/api/datasets/clinc/anomalies/{cleared}/feedback/", {"verdict": "normal"}, format="json"
    )

    refused = labeller_api.post("/api/datasets/clinc/anomalies/rescore/")
    background.drain()
    assert refused.status_code == 403 and scores_of(version) == first
    response = staff_api.post("/api/datasets/clinc/anomalies/rescore/")
    background.drain()

    assert response.status_code == 202
    assert response.json() == {"detail": "rescoring started", "version": 1}
    version.refresh_from_db()
    summary = version.metrics["anomaly"]
    assert (summary["feedback_anomaly"], summary["feedback_normal"], summary["scored"]) == (1, 1, 60)
    vectors = vector_store().get_vectors(index_alias(dataset), ids)
    expected = trimmed_knn_scores(
        np.stack([vectors[i] for i in ids]),
        k=10,
        distance="cosine",
        contamination=0.05,
        # Every other item is labelled, and a label keeps an item in the reference set too.
        normal=[row for row, item_id in enumerate(ids) if item_id != confirmed],
        anomalous=[ids.index(confirmed)],
    )
    assert not expected.reference[ids.index(confirmed)] and expected.reference[ids.index(cleared)]
    assert summary["reference"] == int(expected.reference.sum())
    second = scores_of(version)
    np.testing.assert_allclose([second[i] for i in ids], expected.scores, rtol=1e-4, atol=1e-5)
    assert second != first
    # The confirmed item is no normal neighbour any more: it is scored against the others only.
    assert second[confirmed] >= first[confirmed]


def test_rescoring_scores_items_added_since_the_retrain(
    data_dir: Path, shared_data: Path, staff_api: APIClient
) -> None:
    dataset = make_dataset("clinc", clinc_slice(shared_data, intents=3, per_intent=6))
    assert run_to_end(dataset, head="identity").status == "succeeded"
    version = ModelVersion.objects.get(is_active=True)
    created = staff_api.post(
        "/api/datasets/clinc/items/", {"text": "what is the capital of peru"}, format="json"
    )
    background.drain()
    new = created.json()["id"]
    assert new not in scores_of(version)
    assert staff_api.get(f"/api/datasets/clinc/anomalies/{new}/").json()["score"] is None

    staff_api.post("/api/datasets/clinc/anomalies/rescore/")
    background.drain()

    body = staff_api.get(f"/api/datasets/clinc/anomalies/{new}/").json()
    assert len(scores_of(version)) == 19 == body["scored"]
    assert body["rank"] == 1  # an out-of-scope question among three intents
    assert Dataset.objects.get(slug="clinc").items.count() == 19
