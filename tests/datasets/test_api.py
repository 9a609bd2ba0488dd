"""REST API for datasets, items, import and export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings
from django.urls import reverse
from rest_framework.test import APIClient

from apps.datasets.models import Dataset, Item
from apps.labelling.models import Pair
from tests.conftest import db_snapshot
from tests.factories import DatasetFactory, ItemFactory, PairFactory

pytestmark = pytest.mark.django_db


def upload(client: APIClient, slug: str, name: str, content: bytes, **fields: str) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = {"file": SimpleUploadedFile(name, content), **fields}
    return client.post(f"/api/datasets/{slug}/import/", data, format="multipart")


@pytest.mark.parametrize(
    "url",
    [
        "/api/datasets/",
        "/api/datasets/d/",
        "/api/datasets/d/items/",
        "/api/datasets/d/pairs/",
        "/api/datasets/d/export/jsonl/",
        "/api/datasets/d/stats/",
        "/api/schema/",
    ],
)
def test_anonymous_requests_get_401_and_no_data(url: str) -> None:
    ItemFactory(dataset=DatasetFactory(slug="d"), text="secret text")

    response = APIClient().get(url)

    assert response.status_code == 401
    assert b"secret" not in response.content


def test_anonymous_docs_page_redirects_to_login() -> None:
    response = APIClient().get("/api/docs/")

    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_dataset_crud_by_staff(staff_api: APIClient) -> None:
    created = staff_api.post(
        "/api/datasets/", {"slug": "faq", "name": "FAQ", "modality": "text"}, format="json"
    )
    assert created.status_code == 201
    assert created.json() | {"created_at": None, "updated_at": None} == {
        "slug": "faq",
        "name": "FAQ",
        "description": "",
        "modality": "text",
        "encoder": "minilm",
        "vector_dim": None,
        "settings": {},
        "item_count": 0,
        "pair_count": 0,
        "label_count": 0,
        "created_at": None,
        "updated_at": None,
    }

    patched = staff_api.patch("/api/datasets/faq/", {"settings": {"k": 10}}, format="json")
    assert patched.status_code == 200 and patched.json()["settings"] == {"k": 10}
    assert staff_api.delete("/api/datasets/faq/").status_code == 204
    assert not Dataset.objects.exists()


def test_labellers_read_but_cannot_change_datasets_items_or_import(labeller_api: APIClient) -> None:
    DatasetFactory(slug="d")
    before = db_snapshot()

    assert labeller_api.get("/api/datasets/").status_code == 200
    assert labeller_api.post("/api/datasets/", {"slug": "x", "name": "x"}, format="json").status_code == 403
    assert labeller_api.delete("/api/datasets/d/").status_code == 403
    assert labeller_api.post("/api/datasets/d/items/", {"text": "t"}, format="json").status_code == 403
    assert (
        labeller_api.post(
            "/api/datasets/d/items/bulk/", {"items": [{"text": "t"}]}, format="json"
        ).status_code
        == 403
    )
    assert upload(labeller_api, "d", "a.csv", b"text\nx\n", format="csv").status_code == 403
    assert db_snapshot() == before


def test_dataset_list_counts(staff_api: APIClient) -> None:
    dataset = DatasetFactory(slug="d")
    ItemFactory(dataset=dataset, label="a")
    ItemFactory(dataset=dataset, label="a")
    ItemFactory(dataset=dataset, label="b")
    PairFactory(dataset=dataset)

    row = staff_api.get("/api/datasets/").json()["results"][0]

    assert (row["item_count"], row["pair_count"], row["label_count"]) == (5, 1, 2)


def test_items_filter_by_label_metadata_and_search_with_pagination(staff_api: APIClient) -> None:
    dataset = DatasetFactory(slug="d")
    for i in range(30):
        ItemFactory(
            dataset=dataset,
            key=f"k{i}",
            text=f"item {i}",
            label="even" if i % 2 == 0 else "odd",
            metadata={"colour": "red" if i < 10 else "blue", "n": i},
        )

    page = staff_api.get("/api/datasets/d/items/?label=even&metadata.colour=red&page_size=3").json()
    numeric = staff_api.get("/api/datasets/d/items/?metadata.n=7").json()
    search = staff_api.get("/api/datasets/d/items/?q=item 2").json()
    bad = staff_api.get("/api/datasets/d/items/?metadata.n__gt=1")

    assert page["count"] == 5 and [r["key"] for r in page["results"]] == ["k0", "k2", "k4"]
    assert page["next"].endswith("page=2&page_size=3") or "page=2" in page["next"]
    assert [r["key"] for r in numeric["results"]] == ["k7"]
    assert search["count"] == 11  # item 2, item 20..29
    assert bad.status_code == 400 and "letters, digits" in bad.json()["metadata"][0]


def test_deleting_a_dataset_while_a_run_of_it_is_queued_is_409_and_deletes_nothing(
    staff_api: APIClient,
) -> None:
    # given a trained dataset (a version and its run) with a retrain queued
    from apps.training.models import ModelVersion, TrainingRun

    dataset = DatasetFactory(slug="d")
    ItemFactory(dataset=dataset)
    run = TrainingRun.objects.create(dataset=dataset, status=TrainingRun.Status.SUCCEEDED)
    ModelVersion.objects.create(
        dataset=dataset, run=run, number=1, artifact_path="models/d/v1", collection="d.index_v1"
    )
    queued = TrainingRun.objects.create(dataset=dataset)
    before = (
        db_snapshot(),
        list(TrainingRun.objects.values_list()),
        list(ModelVersion.objects.values_list()),
    )

    # when staff delete it
    response = staff_api.delete("/api/datasets/d/")

    # then it is refused, names the run to cancel, and everything is still there (the deletion of a trained
    # dataset, its index and files: tests/datasets/test_delete.py)
    assert response.status_code == 409
    assert response.json() == {
        "detail": f"dataset 'd' cannot be deleted while its training run {queued.pk} is queued: cancel the run "
        f"first (POST /api/runs/{queued.pk}/cancel/, or the admin's Cancel action), then delete the dataset "
        "once it has stopped"
    }
    assert (
        db_snapshot(),
        list(TrainingRun.objects.values_list()),
        list(ModelVersion.objects.values_list()),
    ) == before


def test_the_schema_documents_what_deleting_a_dataset_answers(staff_api: APIClient) -> None:
    schema = staff_api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    delete = schema["paths"]["/api/datasets/{slug}/"]["delete"]

    assert set(delete["responses"]) == {"204", "409", "503"}
    assert "everything of it" in delete["description"]


def test_item_create_bulk_and_delete(staff_api: APIClient) -> None:
    DatasetFactory(slug="d")

    one = staff_api.post(
        "/api/datasets/d/items/", {"key": "q1", "text": "hello", "label": "greet"}, format="json"
    )
    bulk = staff_api.post(
        "/api/datasets/d/items/bulk/",
        {
            "items": [
                {"key": "q1", "text": "hello", "label": "greet"},
                {"text": "no key", "metadata": {"m": 1}},
            ]
        },
        format="json",
    )

    assert one.status_code == 201 and one.json()["key"] == "q1" and one.json()["label"] == "greet"
    assert bulk.status_code == 201
    assert (bulk.json()["items_created"], bulk.json()["items_unchanged"]) == (1, 1)
    item_id = one.json()["id"]
    assert staff_api.get(f"/api/datasets/d/items/{item_id}/").json()["text"] == "hello"
    assert staff_api.delete(f"/api/datasets/d/items/{item_id}/").status_code == 204
    assert list(Item.objects.values_list("text", flat=True)) == ["no key"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"items": [{"key": "a", "text": "x"}, {"key": "a", "text": "y"}]}, "duplicate key 'a'"),
        ({"items": [{"key": "a"}]}, "exactly one of 'text' or 'vector'"),
        ({"items": [{"key": "a", "vector": [1, 2]}]}, "is a vector item"),
        ({"items": []}, "empty"),
    ],
)
def test_bulk_items_bad_input_is_400_and_changes_nothing(
    staff_api: APIClient, payload: dict[str, Any], field: str
) -> None:
    ItemFactory(dataset=DatasetFactory(slug="d"), key="k")
    before = db_snapshot()

    response = staff_api.post("/api/datasets/d/items/bulk/", payload, format="json")

    assert response.status_code == 400 and field in json.dumps(response.json())
    assert db_snapshot() == before


def test_file_upload_import_and_reimport(staff_api: APIClient, shared_data: Path) -> None:
    DatasetFactory(slug="bank")
    content = (shared_data / "banking77" / "test.csv").read_bytes()

    first = upload(staff_api, "bank", "test.csv", content, format="csv", label_column="category")
    again = upload(staff_api, "bank", "test.csv", content, format="csv", label_column="category")

    assert first.status_code == 201 and first.json()["items_created"] == 3080
    assert again.json()["items_unchanged"] == 3080 and Item.objects.count() == 3080


def test_upload_errors_are_400_with_the_reason_and_change_nothing(staff_api: APIClient) -> None:
    ItemFactory(dataset=DatasetFactory(slug="d"), key="k")
    before = db_snapshot()

    bad_csv = upload(staff_api, "d", "bad.csv", b'key,text\nx,"open\n', format="csv")
    bad_format = upload(staff_api, "d", "a.csv", b"text\nx\n", format="xml")
    no_file = staff_api.post("/api/datasets/d/import/", {"format": "csv"}, format="multipart")
    with override_settings(SIMAPP_MAX_UPLOAD_BYTES=1024):
        too_big = upload(staff_api, "d", "big.csv", b"text\n" + b"x" * 100_000 + b"\n", format="csv")
        just_big = upload(staff_api, "d", "big.csv", b"text\n" + b"x" * 1100 + b"\n", format="csv")

    assert bad_csv.status_code == 400
    assert bad_csv.json() == {
        "detail": "bad.csv, line 2: malformed CSV: unterminated quote (a quoted field opened on this line never closes)"
    }
    assert bad_format.status_code == 400 and "format" in bad_format.json()
    assert no_file.status_code == 400 and "file" in no_file.json()
    assert too_big.status_code == 400 and "the limit is 0.0 MB" in too_big.json()["file"][0]
    assert just_big.status_code == 400 and "SIMAPP_MAX_UPLOAD_MB" in just_big.json()["file"][0]
    assert db_snapshot() == before


def test_export_streams_a_file_that_imports_back(staff_api: APIClient) -> None:
    dataset = DatasetFactory(slug="d")
    PairFactory(dataset=dataset, score=0.5)

    response = staff_api.get("/api/datasets/d/export/csv/")
    body = b"".join(response.streaming_content).decode()
    copy = (
        upload(staff_api, "copy", "d.csv", body.encode(), format="csv")
        if DatasetFactory(slug="copy")
        else None
    )

    assert response.status_code == 200 and response["Content-Disposition"] == 'attachment; filename="d.csv"'
    assert body.splitlines()[0] == "key,text,label,metadata,a,b,score,annotator,source"
    assert copy is not None and (copy.json()["items_created"], copy.json()["pairs_created"]) == (2, 1)
    assert Pair.objects.filter(dataset__slug="copy", score=0.5).count() == 1
    assert staff_api.get("/api/datasets/d/export/xml/").status_code == 400


def test_stats_endpoint(staff_api: APIClient) -> None:
    ItemFactory(dataset=DatasetFactory(slug="d"), label="x")

    assert staff_api.get(reverse("dataset-stats", args=["d"])).json() == {
        "items": 1,
        "pairs": 0,
        "labels": 1,
        "active_version": None,
    }
    assert staff_api.get("/api/datasets/nope/stats/").status_code == 404


def test_session_auth_works_for_logged_in_users(staff_user: Any, client: Any) -> None:
    client.force_login(staff_user)

    assert client.get("/api/datasets/").status_code == 200


# --- found in review --------------------------------------------------------------------------------


def test_metadata_filters_on_fields_named_like_django_lookups(staff_api: APIClient) -> None:
    dataset = DatasetFactory(slug="d")
    ItemFactory(
        dataset=dataset,
        key="hit",
        metadata={"contains": "x", "in": "y", "isnull": "no", "regex": "r", "has_key": "k", "n": 1},
    )
    ItemFactory(dataset=dataset, key="miss", metadata={"n": 2})

    found = {
        query: [r["key"] for r in staff_api.get(f"/api/datasets/d/items/?{query}").json()["results"]]
        for query in (
            "metadata.contains=x",
            "metadata.in=y",
            "metadata.isnull=no",
            "metadata.regex=r",
            "metadata.has_key=k",
            "metadata.has_key=n",
            "metadata.exact=x",
        )
    }

    assert found == {
        "metadata.contains=x": ["hit"],
        "metadata.in=y": ["hit"],
        "metadata.isnull=no": ["hit"],
        "metadata.regex=r": ["hit"],
        "metadata.has_key=k": ["hit"],
        "metadata.has_key=n": [],
        "metadata.exact=x": [],
    }


def test_item_metadata_beyond_float_range_is_400_and_changes_nothing(staff_api: APIClient) -> None:
    ItemFactory(dataset=DatasetFactory(slug="d"), key="k")
    before = db_snapshot()

    response = staff_api.post(
        "/api/datasets/d/items/bulk/",
        b'{"items": [{"key": "n", "text": "x", "metadata": {"mass": 1e400}}]}',
        content_type="application/json",
    )

    assert response.status_code == 400
    assert response.json() == {
        "detail": "items, entry 1, field 'metadata': contains the number inf; JSON numbers must be finite"
    }
    assert db_snapshot() == before


@pytest.mark.parametrize(
    "url", ["/api/datasets/d/items/", "/api/datasets/d/items/bulk/", "/api/datasets/d/pairs/bulk/"]
)
def test_deeply_nested_json_body_is_400_and_changes_nothing(staff_api: APIClient, url: str) -> None:
    ItemFactory(dataset=DatasetFactory(slug="d"), key="k")
    before = db_snapshot()

    response = staff_api.post(
        url, b'{"items": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json() == {"detail": "JSON parse error - nested too deeply"}
    assert db_snapshot() == before


def test_request_body_over_the_memory_limit_is_a_400_that_says_so(staff_api: APIClient) -> None:
    DatasetFactory(slug="d")
    before = db_snapshot()
    items = [{"key": f"k{i}", "text": "x" * 100} for i in range(20)]

    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000):
        response = staff_api.post("/api/datasets/d/items/bulk/", {"items": items}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "detail": "the request body is over the limit of 1000 bytes (DATA_UPLOAD_MAX_MEMORY_SIZE); "
        "send fewer entries per request, or import a file"
    }
    assert db_snapshot() == before


def test_a_datasets_slug_cannot_change(staff_api: APIClient) -> None:
    ItemFactory(dataset=DatasetFactory(slug="d"))
    before = db_snapshot()

    response = staff_api.patch("/api/datasets/d/", {"slug": "renamed"}, format="json")
    same = staff_api.patch("/api/datasets/d/", {"slug": "d", "name": "D"}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "slug": ["a dataset's slug cannot change: its URLs, index and model files are named after it"]
    }
    assert same.status_code == 200 and Dataset.objects.get().name == "D"
    assert db_snapshot()["items"] == before["items"]


def test_patching_an_empty_datasets_modality_or_blank_encoder_keeps_the_encoder_consistent(
    staff_api: APIClient,
) -> None:
    staff_api.post("/api/datasets/", {"slug": "d", "name": "d"}, format="json")

    to_vector = staff_api.patch("/api/datasets/d/", {"modality": "vector"}, format="json")
    blank = staff_api.patch("/api/datasets/d/", {"encoder": ""}, format="json")
    to_text_with_own_encoder = staff_api.patch(
        "/api/datasets/d/", {"modality": "text", "encoder": "/models/mine"}, format="json"
    )

    assert (to_vector.json()["modality"], to_vector.json()["encoder"]) == ("vector", "vector")
    assert (blank.json()["modality"], blank.json()["encoder"]) == ("vector", "vector")
    assert (to_text_with_own_encoder.json()["modality"], to_text_with_own_encoder.json()["encoder"]) == (
        "text",
        "/models/mine",
    )


def test_dataset_settings_must_be_an_object(staff_api: APIClient) -> None:
    DatasetFactory(slug="d")
    before = db_snapshot()

    response = staff_api.patch("/api/datasets/d/", {"settings": [1, 2]}, format="json")

    assert response.status_code == 400
    assert response.json() == {"settings": ['must be a JSON object, e.g. {"k": 10}']}
    assert db_snapshot() == before


def test_booleans_are_not_numbers_in_vectors(staff_api: APIClient) -> None:
    DatasetFactory(slug="v", modality="vector", encoder="vector")
    before = db_snapshot()

    response = staff_api.post("/api/datasets/v/items/", {"key": "a", "vector": [True, 2]}, format="json")

    assert response.status_code == 400
    assert response.json() == {"vector": {"0": ["A valid number is required."]}}
    assert db_snapshot() == before


# JSON can spell half of a UTF-16 pair ("\ud800"), which Python reads but which is no Unicode text: no
# database stores it (UnicodeEncodeError on SQLite, refused by PostgreSQL's jsonb), and a response that
# echoes it (DRF's "is not a valid choice") cannot be encoded. Each was a 500; found by tests/test_api_fuzz.py.
LONE_SURROGATE = (
    "JSON parse error - a string holds a lone surrogate (U+D800), which is not valid Unicode text"
)


@pytest.mark.parametrize(
    ("method", "url", "payload"),
    [
        ("POST", "/api/datasets/d/items/", {"key": "a", "text": "x", "metadata": {"colour": "\ud800"}}),
        ("POST", "/api/datasets/d/items/", {"key": "a", "text": "x", "metadata": {"deep": [{"\ud800": 1}]}}),
        (
            "POST",
            "/api/datasets/d/items/bulk/",
            {"items": [{"key": "b", "text": "y", "metadata": {"m": "a\ud800"}}]},
        ),
        ("PATCH", "/api/datasets/d/", {"settings": {"\ud800": 1}}),
        ("POST", "/api/datasets/", {"slug": "e", "name": "E", "modality": "\ud800"}),  # echoed by the error
    ],
)
def test_a_lone_surrogate_in_a_json_body_is_400_and_changes_nothing(
    staff_api: APIClient, method: str, url: str, payload: dict[str, Any]
) -> None:
    ItemFactory(dataset=DatasetFactory(slug="d", settings={"k": 10}), key="k")
    before = db_snapshot()

    # json.dumps escapes the surrogate ("\\ud800"), as a client's JSON encoder would
    response = staff_api.generic(method, url, json.dumps(payload), content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {"detail": LONE_SURROGATE}
    assert db_snapshot() == before


def test_a_lone_surrogate_in_an_imported_file_is_400_and_changes_nothing(staff_api: APIClient) -> None:
    # a JSON Lines file is read by the importer, not the API's parser: the import refuses it itself
    DatasetFactory(slug="d")
    before = db_snapshot()

    response = upload(
        staff_api,
        "d",
        "items.jsonl",
        b'{"key": "a", "text": "x", "metadata": {"m": "\\udfff"}}\n',
        format="jsonl",
    )

    assert response.status_code == 400
    assert response.json() == {
        "detail": "items.jsonl, line 1, field 'metadata': contains a lone surrogate (U+DFFF), which is not "
        "valid Unicode text"
    }
    assert db_snapshot() == before


def test_a_vector_value_beyond_32_bit_floats_is_400_and_changes_nothing(staff_api: APIClient) -> None:
    # 1e300 would become infinity in the encoder, the embedding cache and the index: the item could be
    # neither indexed nor trained on (found while fuzzing the API)
    DatasetFactory(slug="v", modality="vector", encoder="vector")
    before = db_snapshot()

    response = staff_api.post("/api/datasets/v/items/", {"key": "a", "vector": [0.5, -1e300]}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "detail": "items, entry 1, field 'vector': holds -1e+300, beyond the range of the 32-bit floats "
        "vectors are kept as (±3.4e38)"
    }
    assert db_snapshot() == before


def test_an_item_whose_text_is_only_whitespace_is_refused_as_by_the_importers(staff_api: APIClient) -> None:
    DatasetFactory(slug="d")
    before = db_snapshot()

    response = staff_api.post(
        "/api/datasets/d/items/bulk/", {"items": [{"key": "w", "text": " \n\t"}]}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"detail": "items, entry 1, field 'text': is empty"}
    assert db_snapshot() == before


@pytest.mark.parametrize(
    "query",
    [
        "items/?q=%00",
        "items/?label=a%00",
        "items/?metadata.colour=%00",
        "items/?meta%00=x",
        "pairs/?key=%00",
        "pairs/?annotator=%00",
    ],
)
def test_a_nul_character_in_a_query_string_is_a_400(staff_api: APIClient, query: str) -> None:
    DatasetFactory(slug="d")

    response = staff_api.get(f"/api/datasets/d/{query}")

    assert response.status_code == 400
    assert response.json() == {"detail": "the query string contains a NUL character"}


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"note": "a\u0000"}, "contains a NUL character, which the database cannot store"),
        ({"note\u0000": 1}, "contains a NUL character, which the database cannot store"),
    ],
)
def test_dataset_settings_the_database_cannot_store_are_400(
    staff_api: APIClient, settings: dict[str, Any], expected: str
) -> None:
    DatasetFactory(slug="d")
    before = db_snapshot()

    response = staff_api.patch("/api/datasets/d/", {"settings": settings}, format="json")

    assert response.status_code == 400
    assert response.json() == {"settings": [expected]}
    assert db_snapshot() == before


@pytest.mark.parametrize("value", ["NaN", "-Infinity", "1e400", "[" * 5000, "true"])
def test_metadata_filter_values_that_are_not_plain_json_numbers_match_as_text(
    staff_api: APIClient, value: str
) -> None:
    dataset = DatasetFactory(slug="d")
    ItemFactory(dataset=dataset, key="text", metadata={"v": value})
    ItemFactory(dataset=dataset, key="other", metadata={"v": 1})

    response = staff_api.get("/api/datasets/d/items/", {"metadata.v": value})

    assert response.status_code == 200
    assert [r["key"] for r in response.json()["results"]] == ["text"]
