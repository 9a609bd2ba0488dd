"""What every discovery endpoint answers when it cannot: no active model (409), the vector store down (503),
no credentials (401), a bad stored or submitted setting (400); and the endpoints in the OpenAPI schema."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from apps.datasets.models import Dataset
from apps.discovery.models import AnomalyFeedback
from apps.training import index
from tests.discovery.conftest import Trained, committed_module_data, state, trained_summary
from tests.factories import DatasetFactory, ItemFactory
from tests.training.conftest import clinc_records, make_dataset, run_to_end

pytestmark = pytest.mark.django_db

NO_MODEL = (
    "dataset 'fresh' has no active model yet: train it first (the admin's Retrain action, "
    "POST /api/datasets/fresh/runs/, or manage.py train fresh)"
)


# (method, url, body) of every discovery endpoint that reads the model or the index; "{item}" stands for an
# item of the dataset, "{slug}" for the dataset.
ENDPOINTS = [
    ("get", "/api/datasets/{slug}/items/{item}/neighbours/", {}),
    ("post", "/api/datasets/{slug}/recommend/", {"positive": ["{item}"]}),
    ("post", "/api/datasets/{slug}/recommend/", {"positive_texts": ["set an alarm"]}),
    ("post", "/api/datasets/{slug}/classify/", {"text": "set an alarm"}),
    ("post", "/api/datasets/{slug}/classify/", {"texts": ["set an alarm", "what is my apr"]}),
    ("get", "/api/datasets/{slug}/anomalies/", {}),
    ("get", "/api/datasets/{slug}/anomalies/histogram/", {}),
    ("get", "/api/datasets/{slug}/anomalies/{item}/", {}),
    ("post", "/api/datasets/{slug}/anomalies/rescore/", {}),
]
FEEDBACK = [
    ("put", "/api/datasets/{slug}/anomalies/{item}/feedback/", {"verdict": "anomaly"}),
    ("delete", "/api/datasets/{slug}/anomalies/{item}/feedback/", {}),
]


def endpoint_id(endpoint: tuple[str, str, dict[str, Any]]) -> str:
    method, url, body = endpoint
    return f"{method} {url.removeprefix('/api/datasets/{slug}/')} {','.join(body)}".strip()


def call(api: APIClient, endpoint: tuple[str, str, dict[str, Any]], *, slug: str, item: int) -> Any:
    method, url, body = endpoint
    url = url.format(slug=slug, item=item)
    body = {
        name: [item if v == "{item}" else v for v in value] if isinstance(value, list) else value
        for name, value in body.items()
    }
    if method == "get":
        return api.get(url)
    return getattr(api, method)(url, body, format="json")


@pytest.fixture
def fresh() -> Any:
    """A dataset with labelled items that was never trained."""
    dataset = DatasetFactory(slug="fresh")
    for label in ("a", "b"):
        ItemFactory.create_batch(2, dataset=dataset, label=label)
    return dataset


# -- no active model ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=endpoint_id)
def test_every_endpoint_is_409_without_an_active_model(
    staff_api: APIClient, fresh: Any, endpoint: Any
) -> None:
    before = state()

    response = call(staff_api, endpoint, slug="fresh", item=fresh.items.first().pk)

    assert response.status_code == 409
    assert response.json() == {"detail": NO_MODEL}
    assert state() == before


def test_feedback_without_an_active_model_is_kept_without_pairs(
    labeller_api: APIClient, labeller: Any, fresh: Any
) -> None:
    # By design (AnomalyFeedback): a verdict needs no index; the pairs it adds do.
    item = fresh.items.first()

    response = labeller_api.put(f"/api/datasets/fresh/anomalies/{item.pk}/feedback/", {"verdict": "anomaly"})

    assert response.status_code == 200
    assert response.json() == {"item": item.pk, "verdict": "anomaly", "pairs_added": 0}
    assert list(AnomalyFeedback.objects.values_list("item_id", "user_id", "verdict", "pair_ids")) == [
        (item.pk, labeller.pk, "anomaly", [])
    ]


# -- anonymous ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", [*ENDPOINTS, *FEEDBACK], ids=endpoint_id)
def test_anonymous_requests_are_401(fresh: Any, endpoint: Any) -> None:
    before = state()

    response = call(APIClient(), endpoint, slug="fresh", item=fresh.items.first().pk)

    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}
    assert state() == before


# -- the vector store down ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(
    django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: Any, shared_data: Path
) -> Iterator[Trained]:
    """Three CLINC150 intents, four queries each, indexed with the frozen encoder (nothing to train)."""
    with committed_module_data(django_db_blocker, tmp_path_factory.mktemp("tiny")):
        dataset = make_dataset("tiny", clinc_records(shared_data, intents=3, per_intent=4))
        run = run_to_end(dataset, head="identity")
        assert (run.status, run.error) == ("succeeded", "")
        yield trained_summary("tiny")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def store_down() -> Iterator[str]:
    """The process's vector store pointed at a Qdrant server that is not there (a closed local port)."""
    url = f"http://127.0.0.1:{closed_port()}"
    index.vector_store_close()
    try:
        with override_settings(QDRANT_URL=url):
            yield url
    finally:
        index.vector_store_close()  # the next use opens the module's embedded store again


@pytest.mark.slow
def test_every_index_read_is_503_while_the_vector_store_is_down(
    staff_api: APIClient, tiny: Trained, store_down: str
) -> None:
    # Everything that reads the index; the score list and histogram come from the database alone.
    calls = [e for e in [*ENDPOINTS, FEEDBACK[0]] if "/anomalies/" not in e[1] or "{item}" in e[1]]
    before = state()

    responses = [call(staff_api, endpoint, slug="tiny", item=tiny.ids[0]) for endpoint in calls]

    for endpoint, response in zip(calls, responses, strict=True):
        assert response.status_code == 503, endpoint
        assert response.json()["detail"].startswith(
            f"the vector store is unavailable: Qdrant at {store_down} is unreachable"
        ), endpoint
    assert state() == before


@pytest.mark.slow
def test_anomaly_scores_are_still_listed_while_the_vector_store_is_down(
    labeller_api: APIClient, tiny: Trained, store_down: str
) -> None:
    listed = labeller_api.get("/api/datasets/tiny/anomalies/")
    histogram = labeller_api.get("/api/datasets/tiny/anomalies/histogram/")

    assert (listed.status_code, listed.json()["count"]) == (200, 12)
    assert (histogram.status_code, histogram.json()["n"]) == (200, 12)


@pytest.mark.slow
def test_the_store_serves_again_once_it_is_back(labeller_api: APIClient, tiny: Trained) -> None:
    response = labeller_api.get(f"/api/datasets/tiny/items/{tiny.ids[0]}/neighbours/?limit=3")

    assert response.status_code == 200 and len(response.json()["results"]) == 3


# -- settings -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"contamination": 0.7},
            "'contamination' must be a number from 0 up to (not including) 0.5, not 0.7",
        ),
        ({"contamination": "0.1"}, "'contamination' must be a number"),
        ({"unknown_rate": -0.1}, "'unknown_rate' must be a number from 0 up to (not including) 0.5"),
        ({"knn_k": 0}, "'knn_k' must be an integer from 1 to 200, not 0"),
        ({"anomaly_k": 2.5}, "'anomaly_k' must be an integer from 1 to 200, not 2.5"),
        ({"anomaly_k": True}, "'anomaly_k' must be an integer from 1 to 200, not True"),
        ({"anomaly_threshold": "high"}, "'anomaly_threshold' must be a number or null, not 'high'"),
        ({"label_mode": "stars"}, 'The setting label_mode = \'stars\' is not "binary" or "graded"'),
        ({"annotators_per_pair": 0}, "The setting annotators_per_pair = 0 is not an integer from 1 to 10"),
        (["contamination", 0.1], "must be a JSON object"),
    ],
)
def test_bad_dataset_settings_are_400_and_change_nothing(
    staff_api: APIClient, fresh: Any, value: Any, message: str
) -> None:
    before = state()

    response = staff_api.patch("/api/datasets/fresh/", {"settings": value}, format="json")

    assert response.status_code == 400
    assert list(response.json()) == ["settings"] and message in response.json()["settings"][0]
    assert state() == before


def test_good_dataset_settings_are_kept(staff_api: APIClient, fresh: Any) -> None:
    value = {
        "contamination": 0.1,
        "knn_k": 5,
        "anomaly_threshold": 0.4,
        "label_mode": "graded",
        "annotators_per_pair": 2,
        "other_tool": {"x": 1},
    }

    response = staff_api.patch("/api/datasets/fresh/", {"settings": value}, format="json")

    assert response.status_code == 200 and response.json()["settings"] == value
    assert Dataset.objects.get(slug="fresh").settings == value


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", [ENDPOINTS[3], ENDPOINTS[8]], ids=endpoint_id)
def test_a_bad_stored_setting_is_a_400_that_names_it(
    staff_api: APIClient, tiny: Trained, endpoint: Any
) -> None:
    # Stored before the API checked settings, or by another tool: serving refuses it with its name.
    Dataset.objects.filter(slug="tiny").update(settings={"knn_k": 0, "contamination": 0.7})
    before = state()

    response = call(staff_api, endpoint, slug="tiny", item=tiny.ids[0])

    assert response.status_code == 400
    assert response.json()["detail"].startswith("dataset 'tiny' setting '")
    assert state() == before


# -- the schema ---------------------------------------------------------------------------------------------


def test_the_openapi_schema_has_every_discovery_endpoint(labeller_api: APIClient) -> None:
    response = labeller_api.get("/api/schema/?format=json")

    assert response.status_code == 200
    paths = response.json()["paths"]
    expected = {
        "/api/datasets/{slug}/items/{id}/neighbours/": {"get"},
        "/api/datasets/{slug}/recommend/": {"post"},
        "/api/datasets/{slug}/classify/": {"post"},
        "/api/datasets/{slug}/anomalies/": {"get"},
        "/api/datasets/{slug}/anomalies/histogram/": {"get"},
        "/api/datasets/{slug}/anomalies/rescore/": {"post"},
        "/api/datasets/{slug}/anomalies/{id}/": {"get"},
        "/api/datasets/{slug}/anomalies/{id}/feedback/": {"put", "delete"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), path
    operation_ids = [
        op["operationId"] for path in expected for op in paths[path].values() if "operationId" in op
    ]
    assert len(operation_ids) == len(set(operation_ids))
    assert {p["name"] for p in paths["/api/datasets/{slug}/items/{id}/neighbours/"]["get"]["parameters"]} >= {
        "limit",
        "label",
        "metadata.<field>",
        "min.<field>",
        "max.<field>",
    }
