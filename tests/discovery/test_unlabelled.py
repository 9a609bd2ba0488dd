"""An unlabelled vector dataset (ODDS cardio, all 1,831 rows) indexed with the frozen encoder (head
"identity"): its anomaly scores against the known outliers, vector queries, and feedback that makes it
trainable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rest_framework.test import APIClient

from apps.datasets.models import Dataset, Item
from apps.datasets.services import dataset_import
from apps.discovery.models import AnomalyScore
from apps.labelling.models import Pair
from apps.training.index import index_alias, vector_store
from apps.training.models import ModelVersion
from apps.training.services import TrainingRefused, training_data_check
from simapp.learning import auroc
from tests.discovery.conftest import Trained, committed_module_data, state, trained_summary
from tests.training.conftest import run_to_end

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


@pytest.fixture(scope="module")
def cardio(
    django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: Any, shared_data: Path
) -> Iterator[Trained]:
    with committed_module_data(django_db_blocker, tmp_path_factory.mktemp("cardio")):
        with (shared_data / "odds" / "cardio.mat").open("rb") as fp:
            dataset_import(slug="cardio", fp=fp, source_name="cardio.mat", fmt="odds")
        run = run_to_end(Dataset.objects.get(slug="cardio"), head="identity")
        assert (run.status, run.error) == ("succeeded", "")
        yield trained_summary("cardio")


def plain_knn_scores(x: np.ndarray, k: int = 10) -> np.ndarray:
    """The textbook detector: mean Euclidean distance to the k nearest other rows, standardised features."""
    z = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    sq = (z * z).sum(axis=1)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0))  # (N, N)
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, :k].mean(axis=1)


def test_the_identity_version_serves_the_frozen_space(cardio: Trained) -> None:
    version = ModelVersion.objects.get(dataset__slug="cardio", is_active=True)

    assert version.metrics["head"] == "identity" and version.metrics["data"] == "none"
    assert "classify" not in version.metrics  # nothing to calibrate without labels
    assert version.metrics["anomaly"]["scored"] == 1831
    assert AnomalyScore.objects.filter(version=version).count() == 1831


def test_anomaly_scores_find_the_outliers_at_least_as_well_as_plain_knn(cardio: Trained) -> None:
    rows = list(
        Item.objects.filter(dataset__slug="cardio").order_by("id").values_list("id", "vector", "metadata")
    )
    x = np.asarray([vector for _, vector, _ in rows], dtype=np.float64)
    outlier = np.asarray([metadata["outlier"] for _, _, metadata in rows])
    stored = dict(
        AnomalyScore.objects.filter(version__dataset__slug="cardio").values_list("item_id", "score")
    )

    ours = auroc(np.asarray([stored[item_id] for item_id, _, _ in rows]), outlier)
    plain = auroc(plain_knn_scores(x), outlier)

    assert outlier.sum() == 176  # cardio's known outliers
    assert plain == pytest.approx(0.7046, abs=5e-4)
    assert ours >= plain - 0.005


def test_neighbours_of_a_vector_item_are_nearest_by_euclidean_distance(
    labeller_api: APIClient, cardio: Trained
) -> None:
    item = cardio.ids[10]
    vectors = vector_store().get_vectors(index_alias(Dataset.objects.get(slug="cardio")), cardio.ids)
    dist = {i: float(np.linalg.norm(vectors[item] - v)) for i, v in vectors.items() if i != item}

    results = labeller_api.get(f"/api/datasets/cardio/items/{item}/neighbours/?limit=5").json()["results"]

    assert [r["item"]["id"] for r in results] == sorted(dist, key=dist.get)[:5]
    for r in results:
        assert r["score"] == r["distance"] == pytest.approx(dist[r["item"]["id"]], abs=1e-4)
        assert r["explanation"] == {"closest_example": {"item_id": item}, "distance": r["score"]}
    assert [r["distance"] for r in results] == sorted(r["distance"] for r in results)


def test_recommend_from_a_feature_vector(labeller_api: APIClient, cardio: Trained) -> None:
    raw = Item.objects.get(pk=cardio.ids[0]).vector

    response = labeller_api.post(
        "/api/datasets/cardio/recommend/", {"positive_vectors": [raw], "limit": 3}, format="json"
    )

    assert response.status_code == 200
    results = response.json()["results"]
    # The item's own raw features are the query, and the item is no example: it comes first, at 0.
    assert results[0]["item"]["id"] == cardio.ids[0] and results[0]["distance"] == pytest.approx(0, abs=1e-3)
    assert all(r["explanation"]["closest_example"] == {"vector": 0} for r in results)


@pytest.mark.parametrize(
    ("url", "payload", "message"),
    [
        (
            "recommend",
            {"positive_texts": ["a heart rate"]},
            "dataset 'cardio' holds feature vectors: send 'vector', not text",
        ),
        ("recommend", {"positive_vectors": [[0.5] * 20]}, "'vector' must have 21 numbers"),
        (
            "classify",
            {"text": "a heart rate"},
            "dataset 'cardio' holds feature vectors: send 'vector', not text",
        ),
        (
            "classify",
            {"texts": ["a", "b"]},
            "dataset 'cardio' holds feature vectors: send 'vector', not text",
        ),
        ("classify", {"vector": [0.5] * 22}, "'vector' must have 21 numbers"),
        ("classify", {"vector": [0.5] * 21}, "dataset 'cardio' has no labelled items to classify with"),
    ],
)
def test_queries_that_do_not_fit_a_vector_dataset_are_400(
    labeller_api: APIClient, cardio: Trained, url: str, payload: dict[str, Any], message: str
) -> None:
    before = state()

    response = labeller_api.post(f"/api/datasets/cardio/{url}/", payload, format="json")

    assert response.status_code == 400 and message in str(response.json())
    assert state() == before


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("recommend", '{"positive_vectors": [[%s]]}'),
        ("classify", '{"vector": [%s]}'),
        ("classify", '{"vectors": [[%s]]}'),
    ],
)
def test_an_infinite_feature_is_400(labeller_api: APIClient, cardio: Trained, url: str, body: str) -> None:
    # 1e999 is valid JSON that parses to infinity.
    raw = body % ", ".join(["0.5"] * 20 + ["1e999"])
    before = state()

    response = labeller_api.generic(
        "POST", f"/api/datasets/cardio/{url}/", raw, content_type="application/json"
    )

    assert response.status_code == 400 and "A valid number is required." in str(response.json())
    assert state() == before


@pytest.mark.parametrize(
    ("url", "payload"),
    [
        ("recommend", {"positive_vectors": [[0.5] * 20 + [1e300]]}),
        ("classify", {"vector": [1e20] * 21}),
        ("classify", {"vectors": [[0.5] * 21, [0.5] * 20 + [-1e300]]}),
    ],
)
def test_a_feature_too_far_out_to_embed_is_400(
    labeller_api: APIClient, cardio: Trained, url: str, payload: dict[str, Any]
) -> None:
    # Standardised, such a feature overflows the model's 32-bit floats (or the index's squared distances):
    # it was a 500 from the vector store (found by tests/test_api_fuzz.py).
    before = state()

    response = labeller_api.post(f"/api/datasets/cardio/{url}/", payload, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "detail": "'vector' is out of range: its values are too far from the items' to embed"
    }
    assert state() == before


def test_feedback_makes_an_unlabelled_dataset_trainable(
    staff_api: APIClient, labeller_api: APIClient, cardio: Trained
) -> None:
    dataset = Dataset.objects.get(slug="cardio")
    outliers = [i for i in cardio.ids if cardio.item[i]["metadata"]["outlier"] == 1][:2]
    inliers = [i for i in cardio.ids if cardio.item[i]["metadata"]["outlier"] == 0][:2]
    with pytest.raises(TrainingRefused, match="has nothing to train on"):
        training_data_check(dataset=dataset)
    refused = staff_api.post("/api/datasets/cardio/runs/", {}, format="json")

    added = [
        labeller_api.put(
            f"/api/datasets/cardio/anomalies/{item}/feedback/", {"verdict": verdict}, format="json"
        ).json()["pairs_added"]
        for items, verdict in ((outliers, "anomaly"), (inliers, "normal"))
        for item in items
    ]

    assert refused.status_code == 400 and "has nothing to train on" in refused.json()["detail"]
    # Five per verdict, less those a verdict on a neighbour had already added for the same person.
    assert added[0] == 5 and 16 <= sum(added) <= 20
    assert (
        Pair.objects.filter(dataset=dataset, source="feedback").count() == sum(added) == Pair.objects.count()
    )
    assert set(Pair.objects.values_list("score", flat=True)) == {0.0, 1.0}
    training_data_check(dataset=dataset)  # no longer refused: the verdicts' pairs are training data
    started = staff_api.post("/api/datasets/cardio/runs/", {}, format="json")
    assert started.status_code == 201 and started.json()["status"] == "queued"
