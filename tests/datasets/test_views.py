"""The dataset pages: the list with counts and active models, and staff importing files from the browser."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings
from django.utils import timezone

from apps.datasets.models import Dataset, Item
from apps.training.models import ModelVersion, TrainingRun
from tests.conftest import db_snapshot
from tests.factories import DatasetFactory, ItemFactory

pytestmark = pytest.mark.django_db

GOOD_CSV = (
    b"key,text,label\nq1,how do I reset my pin,pin\nq2,change my card's PIN,pin\nq3,where is my card,card\n"
)
BAD_CSV = b"key,text,label\nq1,how do I reset my pin,pin\nq2,only two fields\n"
BAD_CSV_ERROR = "bad.csv, line 3: has 2 fields, but the header has 3"


@pytest.fixture
def faq() -> Any:
    dataset = DatasetFactory(slug="faq", name="FAQ")
    ItemFactory(dataset=dataset, key="old", text="an old question", label="misc")
    return dataset


def upload(name: str, content: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="text/csv")


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def version(dataset: Any, number: int, metrics: dict[str, Any], *, active: bool) -> ModelVersion:
    run = TrainingRun.objects.create(dataset=dataset, status="succeeded", finished_at=timezone.now())
    return ModelVersion.objects.create(
        dataset=dataset,
        run=run,
        number=number,
        artifact_path=f"models/{dataset.slug}/v{number}",
        collection=f"{dataset.slug}.index_v{number}",
        metrics=metrics,
        is_active=active,
    )


def test_the_list_shows_counts_and_each_active_model_with_its_headline_metric(
    labeller_client: Client,
) -> None:
    tuned = DatasetFactory(slug="tuned")
    ItemFactory.create_batch(3, dataset=tuned, label="x")
    version(tuned, 1, {"metric": "knn_accuracy", "value": 0.5}, active=False)
    version(tuned, 2, {"metric": "knn_accuracy", "value": 0.91234}, active=True)
    version(DatasetFactory(slug="raw"), 1, {"head": "identity", "frozen": True}, active=True)
    DatasetFactory(slug="new")

    html = labeller_client.get("/datasets/").content.decode()

    assert 'v2 <span class="muted">knn_accuracy 0.912</span>' in html
    assert 'v1 <span class="muted">frozen encoder</span>' in html
    assert '<td class="num">3</td>' in html and '<span class="muted">none yet</span>' in html
    assert "/training/" not in html and "New dataset from a file" not in html  # not staff


def test_staff_see_the_training_links_and_the_import_forms(staff_client: Client, faq: Any) -> None:
    listing = staff_client.get("/datasets/").content.decode()
    detail = staff_client.get("/datasets/faq/").content.decode()

    assert '<a href="/datasets/faq/training/">Training console</a>' in listing
    assert "New dataset from a file" in listing and '<label for="id_slug">' in listing
    assert "Import a file" in detail and 'action="/datasets/faq/import/"' in detail
    for name in ("file", "format", "split", "key_column", "text_column", "label_column"):
        assert f'<label for="id_{name}">' in detail


def test_labellers_see_no_import_form_and_cannot_post_one(labeller_client: Client, faq: Any) -> None:
    before = db_snapshot()

    detail = labeller_client.get("/datasets/faq/").content.decode()
    into = labeller_client.post(
        "/datasets/faq/import/", {"file": upload("good.csv", GOOD_CSV), "format": "csv"}
    )
    new = labeller_client.post(
        "/datasets/", {"slug": "mine", "file": upload("good.csv", GOOD_CSV), "format": "csv"}
    )

    assert "Import a file" not in detail and 'type="file"' not in detail
    assert (into.status_code, new.status_code) == (403, 403)
    assert "Only staff import files." in into.content.decode()
    assert db_snapshot() == before


def test_staff_import_a_good_file_and_see_the_counts(staff_client: Client, faq: Any) -> None:
    response = staff_client.post(
        "/datasets/faq/import/", {"file": upload("good.csv", GOOD_CSV), "format": "csv"}, follow=True
    )

    assert response.redirect_chain == [("/datasets/faq/", 302)]
    assert messages_of(response) == [
        "good.csv imported into faq: items 3 new, 0 updated, 0 unchanged; pairs 0 new, 0 updated, 0 unchanged."
    ]
    assert sorted(Item.objects.filter(dataset=faq).values_list("key", flat=True)) == ["old", "q1", "q2", "q3"]


def test_a_bad_file_shows_the_importers_error_and_changes_nothing(staff_client: Client, faq: Any) -> None:
    before = db_snapshot()

    response = staff_client.post(
        "/datasets/faq/import/", {"file": upload("bad.csv", BAD_CSV), "format": "csv"}
    )
    html = response.content.decode()

    assert response.status_code == 400
    assert f'<div class="alert" role="alert"><p>{BAD_CSV_ERROR}</p>' in html
    assert db_snapshot() == before


def test_a_clinc150_file_without_a_split_is_refused_with_the_reason(staff_client: Client, faq: Any) -> None:
    before = db_snapshot()

    response = staff_client.post(
        "/datasets/faq/import/", {"file": upload("data.json", b'{"train": []}'), "format": "clinc150"}
    )

    assert response.status_code == 400
    assert (
        "data.json: the clinc150 format needs --split (e.g. train, val, oos_val)" in response.content.decode()
    )
    assert db_snapshot() == before


@override_settings(SIMAPP_MAX_UPLOAD_BYTES=1024 * 1024)
def test_an_upload_over_the_limit_is_refused_with_the_limit(staff_client: Client, faq: Any) -> None:
    before = db_snapshot()
    big = b"key,text\n" + b"k,x\n" * (1_300_000 // 4)

    response = staff_client.post("/datasets/faq/import/", {"file": upload("big.csv", big), "format": "csv"})
    html = response.content.decode()

    assert response.status_code == 400
    assert (
        "the upload is 1.2 MB; the limit is 1.0 MB (SIMAPP_MAX_UPLOAD_MB)" in html and 'role="alert"' in html
    )
    assert db_snapshot() == before


def test_staff_create_a_dataset_from_a_file_on_the_list_page(staff_client: Client) -> None:
    response = staff_client.post(
        "/datasets/",
        {"slug": "banking", "name": "Banking FAQ", "file": upload("good.csv", GOOD_CSV), "format": "csv"},
        follow=True,
    )

    dataset = Dataset.objects.get(slug="banking")
    assert response.redirect_chain == [("/datasets/banking/", 302)]
    assert dataset.name == "Banking FAQ" and dataset.items.count() == 3
    assert messages_of(response)[0].startswith("good.csv created banking: items 3 new")


def test_a_new_dataset_with_a_label_column_of_another_name(staff_client: Client) -> None:
    content = b"id,question,intent\n1,reset my pin,pin\n2,lost card,card\n"

    staff_client.post(
        "/datasets/",
        {
            "slug": "renamed",
            "file": upload("q.csv", content),
            "format": "csv",
            "key_column": "id",
            "text_column": "question",
            "label_column": "intent",
        },
    )

    items = Item.objects.filter(dataset__slug="renamed").order_by("key")
    assert list(items.values_list("key", "text", "label")) == [
        ("1", "reset my pin", "pin"),
        ("2", "lost card", "card"),
    ]


@pytest.mark.parametrize(
    ("slug", "message"),
    [
        ("faq", "dataset &#x27;faq&#x27; exists already; import into it from its page"),
        ("not a slug!", "Enter a valid “slug” consisting of letters, numbers, underscores or hyphens."),
    ],
)
def test_a_new_dataset_with_a_bad_slug_is_refused(
    staff_client: Client, faq: Any, slug: str, message: str
) -> None:
    before = db_snapshot()

    response = staff_client.post(
        "/datasets/", {"slug": slug, "file": upload("good.csv", GOOD_CSV), "format": "csv"}
    )

    assert response.status_code == 400 and message in response.content.decode()
    assert db_snapshot() == before


def test_a_bad_file_for_a_new_dataset_creates_no_dataset(staff_client: Client) -> None:
    before = db_snapshot()

    response = staff_client.post(
        "/datasets/", {"slug": "fresh", "file": upload("bad.csv", BAD_CSV), "format": "csv"}
    )

    assert response.status_code == 400 and BAD_CSV_ERROR in response.content.decode()
    assert db_snapshot() == before
