"""The vector store unreachable: the API that needs the index answers 503 and changes nothing, pages that
need it show a banner (checked once per few seconds, not on every view), and labelling goes on.

"Unreachable" is real: the process's store is the server backend pointed at a loopback port where
nothing listens (refused at once), or at a socket that accepts and never answers (a hung server). The
dataset is indexed in the embedded store first, so the same rows and versions exist either way; the
discovery endpoints' 503s are in tests/discovery/test_errors.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from apps.common import store_health
from apps.labelling.models import Pair
from apps.training.models import ModelVersion
from tests.discovery.conftest import Trained, committed_module_data, state, trained_summary
from tests.factories import DatasetFactory, ItemFactory
from tests.faults.conftest import HungServer
from tests.training.conftest import clinc_records, make_dataset, run_to_end

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

BANNER = "The vector store is unreachable."
HTMX = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "labelling-work"}


@pytest.fixture(scope="module")
def tiny(
    django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: Any, shared_data: Path
) -> Iterator[Trained]:
    """Three CLINC150 intents, four queries each, indexed twice with the frozen encoder: v1, then v2
    (active), so there is a version to activate and one to roll back to."""
    with committed_module_data(django_db_blocker, tmp_path_factory.mktemp("tiny")):
        dataset = make_dataset("tiny", clinc_records(shared_data, intents=3, per_intent=4))
        for _ in range(2):
            run = run_to_end(dataset, head="identity")
            assert (run.status, run.error) == ("succeeded", "")
        yield trained_summary("tiny")


def versions() -> list[tuple[int, bool]]:
    return list(ModelVersion.objects.order_by("number").values_list("number", "is_active"))


def index_pages(tiny: Trained) -> list[tuple[str, int]]:
    """(url, status while the store is down) of every page that needs the index."""
    return [
        (f"/datasets/tiny/items/{tiny.ids[0]}/", 503),  # its neighbours cannot be shown
        ("/datasets/tiny/anomalies/", 200),  # the scores are in the database
        ("/datasets/tiny/classify/", 200),
        ("/datasets/tiny/training/", 200),
        ("/datasets/tiny/label/?strategy=uncertain", 200),
    ]


PAGES = ["item", "anomalies", "classify", "training", "label"]


# -- pages --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", range(len(PAGES)), ids=PAGES)
def test_pages_that_need_the_index_show_a_banner_while_the_store_is_down(
    staff_client: Client, tiny: Trained, store_down: str, page: int
) -> None:
    url, status = index_pages(tiny)[page]
    before = state()

    response = staff_client.get(url)

    html = response.content.decode()
    assert response.status_code == status
    assert 'role="alert" data-vector-store-down' in html and BANNER in html
    assert f"Qdrant at {store_down} is unreachable" in html  # the reason, as the store gave it
    assert "Labelling still works" in html
    assert state() == before


@pytest.mark.parametrize("page", range(len(PAGES)), ids=PAGES)
def test_no_banner_while_the_store_answers(staff_client: Client, tiny: Trained, page: int) -> None:
    url, _ = index_pages(tiny)[page]

    response = staff_client.get(url)

    assert response.status_code == 200 and BANNER not in response.content.decode()


def test_pages_that_do_not_need_the_index_show_no_banner_while_it_is_down(
    staff_client: Client, tiny: Trained, store_down: str
) -> None:
    responses = [staff_client.get(url) for url in ("/datasets/", "/datasets/tiny/", "/datasets/tiny/items/")]

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert not any(BANNER in r.content.decode() for r in responses)


def test_a_dataset_without_a_model_has_no_index_to_miss(staff_client: Client, store_down: str) -> None:
    dataset = DatasetFactory(slug="fresh")
    ItemFactory.create_batch(2, dataset=dataset)

    response = staff_client.get("/datasets/fresh/label/")

    assert response.status_code == 200 and BANNER not in response.content.decode()


def test_a_hung_store_is_probed_once_then_the_answer_is_reused(
    labeller_client: Client, tiny: Trained, store_hung: HungServer
) -> None:
    # The probe gives a hung server PROBE_TIMEOUT_S seconds (the store's own client would wait 30), and
    # the queue falls back on the probe's answer instead of asking the store itself.
    started = time.monotonic()
    first = labeller_client.get("/datasets/tiny/label/?strategy=uncertain")
    first_s = time.monotonic() - started
    second = labeller_client.get("/datasets/tiny/label/?strategy=uncertain")

    for response in (first, second):
        assert response.status_code == 200 and BANNER in response.content.decode()
        assert response.context["shown"].used == "random"
        assert "The active model or its index cannot be used" in response.context["shown"].note
    assert store_health.PROBE_TIMEOUT_S <= first_s < 20
    assert store_hung.accepted == 1  # one probe for both pages; nothing else waited on the store


# -- labelling goes on ----------------------------------------------------------------------------------------


def test_the_labelling_page_stores_answers_while_the_store_is_down(
    labeller_client: Client, labeller: Any, tiny: Trained, store_down: str
) -> None:
    page = labeller_client.get("/datasets/tiny/label/?strategy=uncertain")
    a, b = (item.pk for item in page.context["items"])

    answered = labeller_client.post(
        "/datasets/tiny/label/answer/", {"a": a, "b": b, "answer": "1", "strategy": "uncertain"}, **HTMX
    )

    assert page.status_code == 200 and page.context["shown"].used == "random"
    assert answered.status_code == 200 and answered.context["items"] is not None  # the next pair
    assert list(Pair.objects.values_list("item_a_id", "item_b_id", "score", "annotator", "source")) == [
        (a, b, 1.0, labeller.pk, "manual")
    ]


def test_the_label_api_stores_pairs_while_the_store_is_down(
    labeller_api: APIClient, labeller: Any, tiny: Trained, store_down: str
) -> None:
    keys = [tiny.item[i]["key"] for i in tiny.ids[:4]]

    one = labeller_api.post(
        "/api/datasets/tiny/pairs/", {"a": keys[0], "b": keys[1], "score": 1.0}, format="json"
    )
    bulk = labeller_api.post(
        "/api/datasets/tiny/pairs/bulk/",
        {"pairs": [{"a": keys[2], "b": keys[3], "score": 0.0}, {"a": keys[0], "b": keys[3], "score": 0.5}]},
        format="json",
    )

    assert (one.status_code, bulk.status_code) == (201, 201)
    assert bulk.json()["pairs_created"] == 2
    stored = Pair.objects.order_by("id").values_list("item_a__key", "item_b__key", "score", "annotator")
    assert [tuple(sorted(row[:2])) + row[2:] for row in stored] == [
        (keys[0], keys[1], 1.0, labeller.pk),
        (keys[2], keys[3], 0.0, labeller.pk),
        (keys[0], keys[3], 0.5, labeller.pk),
    ]


# -- the API that switches indexes ----------------------------------------------------------------------------


def test_activating_or_rolling_back_is_503_and_changes_nothing_while_the_store_is_down(
    staff_api: APIClient, tiny: Trained, store_down: str
) -> None:
    v1 = ModelVersion.objects.get(number=1)
    before = state()

    activated = staff_api.post(f"/api/versions/{v1.pk}/activate/")
    rolled_back = staff_api.post("/api/datasets/tiny/rollback/")

    for response in (activated, rolled_back):
        assert response.status_code == 503
        assert response.json()["detail"].startswith(
            f"the vector store is unavailable: Qdrant at {store_down} is unreachable"
        )
    assert versions() == [(1, False), (2, True)]
    assert state() == before


def test_the_console_says_why_it_cannot_activate_while_the_store_is_down(
    staff_client: Client, tiny: Trained, store_down: str
) -> None:
    v1 = ModelVersion.objects.get(number=1)

    response = staff_client.post(f"/datasets/tiny/training/versions/{v1.pk}/activate/", follow=True)

    html = response.content.decode()
    assert response.status_code == 200
    assert f"Cannot activate v1: Qdrant at {store_down} is unreachable" in html
    assert versions() == [(1, False), (2, True)]
