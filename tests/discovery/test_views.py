"""The analysts' pages through Django's test client: items, an item's neighbours, anomalies, classify.

A real CLINC150 slice is trained once for the module (``clinc``); each test's writes roll back with it.
The same pages in a real browser, htmx included, are in ``tests/browser/test_discovery.py``.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import NoReverseMatch, reverse

from apps.datasets.models import Dataset
from apps.discovery.models import AnomalyFeedback, AnomalyScore
from apps.training.models import ModelVersion
from tests.conftest import session_client
from tests.discovery.conftest import Trained, state
from tests.factories import DatasetFactory, ItemFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

NO_MODEL = "No model yet: train it first."
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def analyst(db: Any) -> Any:
    return UserFactory(username="analyst")


@pytest.fixture
def client_in(analyst: Any) -> Client:
    return session_client(analyst)


@pytest.fixture
def staff_in(staff_user: Any) -> Client:
    return session_client(staff_user)


def text(response: Any) -> str:
    return response.content.decode()


def result_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'class="result" data-item="(\d+)"', html)]


def top_anomalies(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tbody id="anomaly-(\d+)"', html)]


def pages(clinc: Trained) -> list[str]:
    slug, item = clinc.slug, clinc.ids[0]
    return [
        f"/datasets/{slug}/items/",
        f"/datasets/{slug}/items/{item}/",
        f"/datasets/{slug}/anomalies/",
        f"/datasets/{slug}/anomalies/{item}/neighbours/",
        f"/datasets/{slug}/classify/",
    ]


# -- access -----------------------------------------------------------------------------------------------


def test_anonymous_users_are_sent_to_log_in_from_every_page(clinc: Trained) -> None:
    client = Client()
    for url in pages(clinc):
        response = client.get(url)
        assert (response.status_code, response["Location"]) == (302, f"/accounts/login/?next={url}")
    before = state()
    item = clinc.ids[0]
    for url, data in [
        (f"/datasets/{clinc.slug}/anomalies/{item}/feedback/", {"verdict": "normal"}),
        (f"/datasets/{clinc.slug}/anomalies/threshold/", {"threshold": "0.5"}),
        (f"/datasets/{clinc.slug}/classify/", {"text": "set an alarm"}),
    ]:
        response = client.post(url, data)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")
    assert state() == before


def test_every_page_renders_for_a_logged_in_user_with_the_dataset_nav(
    clinc: Trained, client_in: Client
) -> None:
    for url in pages(clinc)[:3] + pages(clinc)[4:]:
        response = client_in.get(url)
        assert response.status_code == 200, url
        html = text(response)
        assert 'aria-label="Dataset"' in html
        for name in ("item-browse", "dataset-anomalies", "dataset-classify"):
            assert f'href="{reverse(name, args=[clinc.slug])}"' in html
        assert "simapp/discovery.css" in html


def test_an_unknown_dataset_or_item_is_a_404(clinc: Trained, client_in: Client) -> None:
    other = DatasetFactory(slug="other")
    foreign = ItemFactory(dataset=other)
    assert client_in.get("/datasets/nope/items/").status_code == 404
    assert client_in.get("/datasets/nope/anomalies/").status_code == 404
    assert client_in.get("/datasets/nope/classify/").status_code == 404
    assert client_in.get(f"/datasets/{clinc.slug}/items/999999/").status_code == 404
    # An item of another dataset is not this dataset's.
    assert client_in.get(f"/datasets/{clinc.slug}/items/{foreign.pk}/").status_code == 404
    before = state()
    response = client_in.post(f"/datasets/{clinc.slug}/anomalies/999999/feedback/", {"verdict": "anomaly"})
    assert response.status_code == 404
    assert state() == before


# -- items ------------------------------------------------------------------------------------------------


def test_browse_lists_items_linked_to_their_pages_with_search_and_label_filter(
    clinc: Trained, client_in: Client
) -> None:
    html = text(client_in.get(f"/datasets/{clinc.slug}/items/"))
    assert "60 items" in html
    first = clinc.item[clinc.ids[0]]
    assert f'href="/datasets/{clinc.slug}/items/{first["id"]}/"' in html

    label = sorted(clinc.by_label)[1]
    html = text(client_in.get(f"/datasets/{clinc.slug}/items/", {"label": label}))
    assert "12 items found" in html
    linked = {int(i) for i in re.findall(rf'href="/datasets/{clinc.slug}/items/(\d+)/"', html)}
    assert linked == set(clinc.by_label[label])

    word = first["text"].split()[-1]
    expected = {i for i, row in clinc.item.items() if word.lower() in row["text"].lower()}
    response = client_in.get(
        f"/datasets/{clinc.slug}/items/", {"q": word}, **HTMX, HTTP_HX_TARGET="item-table"
    )
    html = text(response)
    assert "<html" not in html  # the table only, for htmx to swap
    assert {int(i) for i in re.findall(rf'href="/datasets/{clinc.slug}/items/(\d+)/"', html)} == expected


def test_the_item_page_shows_the_item_and_its_neighbours_with_similarities_and_explanations(
    clinc: Trained, client_in: Client
) -> None:
    item = clinc.by_label[sorted(clinc.by_label)[0]][0]
    response = client_in.get(f"/datasets/{clinc.slug}/items/{item}/")
    html = text(response)
    assert response.status_code == 200
    assert clinc.item[item]["text"] in html
    assert clinc.item[item]["label"] in html
    ids = result_ids(html)
    assert len(ids) == 10 and item not in ids
    assert html.count("closest to: this item · similarity ") == 10
    assert html.count('<span class="r-name">similarity</span>') == 10
    # Most neighbours of an item share its intent after training.
    same = sum(clinc.item[i]["label"] == clinc.item[item]["label"] for i in ids)
    assert same >= 6


def test_a_dislike_removes_that_item_and_re_ranks_through_recommend(
    clinc: Trained, client_in: Client
) -> None:
    item = clinc.ids[0]
    url = f"/datasets/{clinc.slug}/items/{item}/"
    first = result_ids(text(client_in.get(url)))

    response = client_in.get(url, {"dislike": first[0]}, **HTMX, HTTP_HX_TARGET="results")
    html = text(response)
    assert "<html" not in html
    after = result_ids(html)
    assert first[0] not in after and item not in after and len(after) == 10
    assert f'<input type="hidden" name="disliked" value="{first[0]}">' in html
    assert "steered by 0 likes and 1 dislike" in html
    # The history entry holds the folded sets, so a reload shows the same.
    assert response["HX-Push-Url"] == f"{url}?disliked={first[0]}"

    liked = first[1]
    html = text(client_in.get(url, {"disliked": first[0], "like": liked, "strategy": "best_score"}))
    ids = result_ids(html)
    assert liked not in ids and first[0] not in ids
    assert (
        '<span class="r-name">score</span>' in html
    )  # best_score's score is neither similarity nor distance
    assert 'aria-label="Undo like: ' in html

    html = text(client_in.get(url, {"disliked": first[0], "undo": first[0]}))
    assert result_ids(html) == first  # back to the neighbours


def test_filters_on_label_and_metadata_apply_to_the_results(clinc: Trained, client_in: Client) -> None:
    item = clinc.ids[0]
    url = f"/datasets/{clinc.slug}/items/{item}/"
    label = sorted(clinc.by_label)[2]
    ids = result_ids(
        text(client_in.get(url, {"label": label, "metadata.group": "odd", "min.n": "10", "max.n": ""}))
    )
    assert ids
    for i in ids:
        row = clinc.item[i]
        assert (row["label"], row["metadata"]["group"]) == (label, "odd") and row["metadata"]["n"] >= 10
    ids = result_ids(text(client_in.get(url, {"min.weight": "20.5", "max.weight": "30.5"})))
    assert ids and all(20.5 <= clinc.item[i]["metadata"]["weight"] <= 30.5 for i in ids)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"min.n": "ten"}, "Minimum n: &#x27;ten&#x27; is not a number"),
        ({"min.n": "5", "max.n": "2"}, "N: the minimum 5 is above the maximum 2"),
        ({"liked": "x"}, "Liked: &#x27;x&#x27; is not an item id"),
        ({"strategy": "magic"}, "Unknown strategy &#x27;magic&#x27;"),
        ({"liked": "999999"}, "has no item 999999"),
        ({"metadata.a b": "1"}, "Metadata field name &#x27;a b&#x27;"),
    ],
)
def test_a_bad_filter_or_example_is_a_message_on_the_item_page(
    clinc: Trained, client_in: Client, params: dict[str, str], message: str
) -> None:
    before = state()
    response = client_in.get(f"/datasets/{clinc.slug}/items/{clinc.ids[0]}/", params)
    assert response.status_code == 400
    html = text(response)
    assert 'class="problem"' in html and message in html
    assert result_ids(html) == []
    # In the htmx swap the message replaces the results (a 200, which htmx swaps).
    response = client_in.get(
        f"/datasets/{clinc.slug}/items/{clinc.ids[0]}/", params, **HTMX, HTTP_HX_TARGET="results"
    )
    assert response.status_code == 200 and message in text(response)
    assert state() == before


# -- without an active model --------------------------------------------------------------------------------


def test_without_an_active_model_each_page_says_to_train_first(
    clinc: Trained, client_in: Client, staff_in: Client
) -> None:
    dataset = DatasetFactory(slug="fresh")
    item = ItemFactory(dataset=dataset, text="set an alarm for seven", label="alarm")
    urls = [
        f"/datasets/fresh/items/{item.pk}/",
        "/datasets/fresh/anomalies/",
        "/datasets/fresh/classify/",
        f"/datasets/fresh/anomalies/{item.pk}/neighbours/",
    ]
    before = state()
    for url in urls:
        response = client_in.get(url)
        assert response.status_code == 200, url
        assert NO_MODEL in text(response)
        assert "Open the training page" not in text(response)  # only staff start training
    response = client_in.post("/datasets/fresh/classify/", {"text": "set an alarm"})
    assert (response.status_code, NO_MODEL in text(response)) == (200, True)
    assert state() == before

    try:
        training = reverse("dataset-training", args=["fresh"])
    except NoReverseMatch:
        training = None
    html = text(staff_in.get(urls[0]))
    assert NO_MODEL in html
    assert (f'<a href="{training}">Open the training page</a>' in html) == (training is not None)
    assert ("Open the training page" in html) == (training is not None)


# -- anomalies ---------------------------------------------------------------------------------------------


def test_the_dashboard_draws_the_histogram_and_lists_the_items_above_the_threshold(
    clinc: Trained, client_in: Client
) -> None:
    version = ModelVersion.objects.get(dataset__slug=clinc.slug, is_active=True)
    scores = sorted(
        AnomalyScore.objects.filter(version=version).values_list("score", "item_id"), reverse=True
    )
    html = text(client_in.get(f"/datasets/{clinc.slug}/anomalies/"))
    assert '<svg class="hist"' in html
    assert len(re.findall(r'<rect class="bar', html)) == 40
    assert '<line class="threshold"' in html
    # The default threshold is the contamination quantile: 5% of 60 items are above it.
    assert top_anomalies(html) == [item for _, item in scores[:3]]
    assert "<strong>3</strong> items above the threshold" in html

    # Trying a threshold (not saved) lists what is above it, in the htmx swap too.
    middle = scores[9][0]
    response = client_in.get(
        f"/datasets/{clinc.slug}/anomalies/", {"threshold": repr(middle)}, **HTMX, HTTP_HX_TARGET="board"
    )
    html = text(response)
    assert "<html" not in html
    assert top_anomalies(html) == [item for _, item in scores[:9]]
    assert "<strong>9</strong> items above the threshold" in html
    assert "trying it out" in html
    assert Dataset.objects.get(slug=clinc.slug).settings.get("anomaly_threshold") is None


def test_a_non_numeric_threshold_is_a_message_and_the_stored_one_applies(
    clinc: Trained, client_in: Client
) -> None:
    before = state()
    response = client_in.get(f"/datasets/{clinc.slug}/anomalies/", {"threshold": "abc"})
    assert response.status_code == 400
    html = text(response)
    assert "Threshold: &#x27;abc&#x27; is not a number" in html
    assert len(top_anomalies(html)) == 3
    response = client_in.get(f"/datasets/{clinc.slug}/anomalies/", {"verdict": "maybe"})
    assert response.status_code == 400 and "Show: &#x27;maybe&#x27; is not one of" in text(response)
    assert state() == before


def test_a_verdict_is_stored_and_the_row_updates_in_place(
    clinc: Trained, client_in: Client, analyst: Any
) -> None:
    html = text(client_in.get(f"/datasets/{clinc.slug}/anomalies/"))
    item = top_anomalies(html)[0]
    url = f"/datasets/{clinc.slug}/anomalies/{item}/feedback/"

    response = client_in.post(url, {"verdict": "normal"}, **HTMX)
    assert response.status_code == 200
    row = text(response)
    assert row.lstrip().startswith(f'<tbody id="anomaly-{item}"')
    assert '<span class="verdict normal">Not an anomaly</span>' in row
    assert "0 anomaly" in row and "1 normal" in row
    assert 'value="withdraw"' in row
    assert list(AnomalyFeedback.objects.values_list("item_id", "user__username", "verdict")) == [
        (item, "analyst", "normal")
    ]

    response = client_in.post(url, {"verdict": "anomaly"}, **HTMX)
    assert '<span class="verdict anomaly">Confirmed anomaly</span>' in text(response)
    assert AnomalyFeedback.objects.get(item_id=item, user=analyst).verdict == "anomaly"
    # The filters see it.
    html = text(client_in.get(f"/datasets/{clinc.slug}/anomalies/", {"verdict": "anomaly"}))
    assert top_anomalies(html) == [item]
    html = text(client_in.get(f"/datasets/{clinc.slug}/anomalies/", {"verdict": "unreviewed"}))
    assert item not in top_anomalies(html) and len(top_anomalies(html)) == 2

    response = client_in.post(url, {"verdict": "withdraw"}, **HTMX)
    assert '<span class="muted">—</span>' in text(response)
    assert not AnomalyFeedback.objects.exists()

    # Without htmx: back to the dashboard, with a message.
    response = client_in.post(url, {"verdict": "anomaly", "next": "https://evil.example/"})
    assert (response.status_code, response["Location"]) == (302, f"/datasets/{clinc.slug}/anomalies/")
    assert AnomalyFeedback.objects.get(item_id=item).verdict == "anomaly"


def test_an_unknown_verdict_changes_nothing(clinc: Trained, client_in: Client) -> None:
    before = state()
    url = f"/datasets/{clinc.slug}/anomalies/{clinc.ids[0]}/feedback/"
    response = client_in.post(url, {"verdict": "maybe"}, follow=True)
    assert "Unknown verdict &#x27;maybe&#x27;" in text(response)
    assert client_in.get(url).status_code == 405
    assert state() == before


def test_the_drill_down_shows_the_items_neighbours(clinc: Trained, client_in: Client) -> None:
    item = clinc.ids[5]
    html = text(client_in.get(f"/datasets/{clinc.slug}/anomalies/{item}/neighbours/", **HTMX))
    assert "<html" not in html
    assert clinc.item[item]["text"] in html
    assert len(re.findall(rf'href="/datasets/{clinc.slug}/items/(\d+)/"', html)) == 5


def test_staff_save_the_threshold_as_the_datasets_setting(
    clinc: Trained, client_in: Client, staff_in: Client
) -> None:
    url = f"/datasets/{clinc.slug}/anomalies/threshold/"
    before = state()
    assert client_in.post(url, {"threshold": "0.25"}).status_code == 403  # analysts try, staff save
    assert state() == before
    assert "Save threshold" not in text(
        client_in.get(f"/datasets/{clinc.slug}/anomalies/", {"threshold": "0.2"})
    )

    response = staff_in.post(url, {"threshold": "abc"}, follow=True)
    assert "Not saved. Threshold: &#x27;abc&#x27; is not a number." in text(response)
    assert state() == before

    html = text(staff_in.get(f"/datasets/{clinc.slug}/anomalies/", {"threshold": "0.25"}))
    assert "Save threshold" in html
    response = staff_in.post(url, {"threshold": "0.25"}, follow=True)
    assert "Saved: the anomaly threshold is now 0.25." in text(response)
    assert "(the dataset's saved threshold)" in text(response)
    assert Dataset.objects.get(slug=clinc.slug).settings["anomaly_threshold"] == 0.25

    response = staff_in.post(url, {"clear": "1"}, follow=True)
    assert "follows the contamination share again" in text(response)
    assert Dataset.objects.get(slug=clinc.slug).settings["anomaly_threshold"] is None


# -- classify ----------------------------------------------------------------------------------------------


def test_classify_shows_the_top_labels_with_confidences_and_the_nearest_labelled_items(
    clinc: Trained, client_in: Client
) -> None:
    label = sorted(clinc.by_label)[0]
    query = clinc.item[clinc.by_label[label][0]]["text"]
    response = client_in.post(
        f"/datasets/{clinc.slug}/classify/", {"text": query}, **HTMX, HTTP_HX_TARGET="classification"
    )
    html = text(response)
    assert response.status_code == 200 and "<html" not in html
    assert f'<span class="predicted">{label}</span>' in html
    assert re.search(r'class="c-fill" style="width: \d+%"', html)
    assert "Calibrated." in html or "Uncalibrated." in html
    assert len(re.findall(rf'href="/datasets/{clinc.slug}/items/(\d+)/"', html)) == 10

    html = text(client_in.post(f"/datasets/{clinc.slug}/classify/", {"text": query}))
    assert "<html" in html and label in html and query in html  # without htmx: the page, the text kept


def test_classify_far_from_every_label_says_unknown(clinc: Trained, client_in: Client) -> None:
    html = text(
        client_in.post(
            f"/datasets/{clinc.slug}/classify/",
            {"text": "the mitochondria is the powerhouse of the cell; photosynthesis in chloroplasts"},
        )
    )
    version = ModelVersion.objects.get(dataset__slug=clinc.slug, is_active=True)
    if (version.metrics.get("classify") or {}).get("unknown_threshold") is not None:
        assert '<span class="predicted unknown">Unknown</span>' in html
        assert "Calibrated." in html


@pytest.mark.parametrize(
    ("data", "message"), [({"text": "   "}, "Enter a text to classify"), ({}, "Enter a text")]
)
def test_an_empty_text_is_a_message_and_changes_nothing(
    clinc: Trained, client_in: Client, data: dict[str, str], message: str
) -> None:
    before = state()
    response = client_in.post(f"/datasets/{clinc.slug}/classify/", data)
    assert response.status_code == 400
    assert message in text(response) and 'class="problem"' in text(response)
    response = client_in.post(
        f"/datasets/{clinc.slug}/classify/", data, **HTMX, HTTP_HX_TARGET="classification"
    )
    assert response.status_code == 200 and message in text(response)
    assert state() == before


def test_a_vector_dataset_takes_numbers_and_says_which_one_is_not(client_in: Client) -> None:
    DatasetFactory(slug="points", modality=Dataset.Modality.VECTOR, encoder="vector")
    before = state()
    page = text(client_in.get("/datasets/points/classify/"))
    assert "Features" in page and "numbers separated by commas or spaces" in page
    response = client_in.post("/datasets/points/classify/", {"text": "1.5, x, 3"})
    assert response.status_code == 400
    assert "&#x27;x&#x27; is not a number: give the features as numbers" in text(response)
    response = client_in.post("/datasets/points/classify/", {"text": " "})
    assert "Enter the features to classify" in text(response)
    response = client_in.post("/datasets/points/classify/", {"text": "1.5, 2, 3"})
    assert (response.status_code, NO_MODEL in text(response)) == (200, True)
    assert state() == before


def test_odd_paging_and_search_values_still_give_a_page(clinc: Trained, client_in: Client) -> None:
    huge = "9" * 30
    for url, params in [
        (f"/datasets/{clinc.slug}/items/", {"page": huge}),
        (f"/datasets/{clinc.slug}/items/", {"page": "x", "q": "alarm\x00"}),
        (f"/datasets/{clinc.slug}/anomalies/", {"page": huge}),
        (f"/datasets/{clinc.slug}/anomalies/", {"page": "-1"}),
    ]:
        assert client_in.get(url, params).status_code == 200, (url, params)
