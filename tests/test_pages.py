"""Every admin page, the API docs and the dataset pages render for the people who should see them."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.contrib import admin
from django.core.management import call_command
from django.test import Client, RequestFactory
from django.urls import reverse
from rest_framework.authtoken.models import Token

from apps.datasets.formats import vector_hash
from apps.datasets.models import Item
from tests.conftest import db_snapshot
from tests.factories import DatasetFactory, ItemFactory, PairFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def content(staff_user: Any) -> Any:
    dataset = DatasetFactory(slug="d", name="Demo set")
    ItemFactory(dataset=dataset, label="greet", text="<b>bold</b> hello")
    PairFactory(dataset=dataset, annotator=staff_user, source="manual")
    Token.objects.create(user=staff_user)
    return dataset


def admin_urls(user: Any) -> list[str]:
    """Every admin page the user may open: add pages only where the admin allows adding."""
    request = RequestFactory().get("/admin/")
    request.user = user
    urls = [reverse("admin:index")]
    for model, model_admin in admin.site._registry.items():
        meta = model._meta
        urls.append(reverse("admin:app_list", args=[meta.app_label]))
        urls.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"))
        if model_admin.has_add_permission(request):
            urls.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_add"))
        obj = model.objects.first()
        if obj is not None:
            urls.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk]))
            urls.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_history", args=[obj.pk]))
            urls.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_delete", args=[obj.pk]))
    return urls


def test_every_admin_page_renders_for_staff(client: Client, staff_user: Any, content: Any) -> None:
    client.force_login(staff_user)
    urls = admin_urls(staff_user)

    statuses = {url: client.get(url).status_code for url in urls}

    assert len(urls) >= 30
    assert {url: code for url, code in statuses.items() if code != 200} == {}


def test_admin_search_and_filters_render(client: Client, staff_user: Any, content: Any) -> None:
    client.force_login(staff_user)

    item_search = client.get(reverse("admin:datasets_item_changelist") + "?q=hello&labelled=yes")
    pairs = client.get(
        reverse("admin:labelling_pair_changelist") + f"?dataset__id__exact={content.pk}&source=manual"
    )
    datasets = client.get(reverse("admin:datasets_dataset_changelist") + "?q=demo")

    assert item_search.status_code == pairs.status_code == datasets.status_code == 200
    assert b"&lt;b&gt;bold&lt;/b&gt; hello" in item_search.content
    assert pairs.context["cl"].result_count == 1
    assert b"1 pairs" in datasets.content and b"3 items" in datasets.content


def test_admin_pair_form_orders_items_and_rejects_self_pairs(
    client: Client, staff_user: Any, content: Any
) -> None:
    client.force_login(staff_user)
    first, second = content.items.order_by("-id")[:2]
    url = reverse("admin:labelling_pair_add")
    form = {"dataset": content.pk, "score": "0.5", "source": "manual"}

    rejected = client.post(url, form | {"item_a": first.pk, "item_b": first.pk})
    accepted = client.post(url, form | {"item_a": first.pk, "item_b": second.pk, "annotator": ""})

    assert rejected.status_code == 200 and b"A pair needs two different items." in rejected.content
    assert accepted.status_code == 302
    assert content.pairs.filter(item_a=second, item_b=first, score=0.5).exists()


def test_api_docs_and_schema_render_for_logged_in_users(client: Client, staff_user: Any) -> None:
    client.force_login(staff_user)

    docs = client.get("/api/docs/")
    redoc = client.get("/api/redoc/")
    schema = client.get("/api/schema/?format=json")

    assert docs.status_code == redoc.status_code == schema.status_code == 200
    assert b"swagger-ui" in docs.content and b"cdn." not in docs.content  # assets served locally
    paths = schema.json()["paths"]
    assert {"/api/datasets/", "/api/datasets/{slug}/import/", "/api/datasets/{slug}/pairs/bulk/"} <= set(
        paths
    )


def test_openapi_schema_has_no_warnings() -> None:
    out, err = StringIO(), StringIO()

    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out, stderr=err)

    assert "openapi: 3" in out.getvalue() and err.getvalue() == ""


def test_dataset_pages(client: Client, labeller: Any, content: Any) -> None:
    assert client.get("/datasets/").status_code == 302  # anonymous: to the login page
    client.force_login(labeller)

    listing = client.get("/datasets/")
    detail = client.get("/datasets/d/")

    assert listing.status_code == detail.status_code == 200
    assert b"Demo set" in listing.content
    assert b"&lt;b&gt;bold&lt;/b&gt; hello" in detail.content and b"<b>bold</b>" not in detail.content
    assert b"Edit in admin" not in detail.content  # labellers are not staff
    assert client.get("/datasets/nope/").status_code == 404


def test_login_page_and_login_flow(client: Client, labeller: Any) -> None:
    page = client.get("/accounts/login/")
    bad = client.post("/accounts/login/", {"username": "labeller", "password": "wrong"})
    good = client.post(
        "/accounts/login/", {"username": "labeller", "password": "correct horse battery staple"}
    )

    assert page.status_code == 200 and b"Log in" in page.content
    assert b"didn't match" in bad.content
    assert good.status_code == 302 and good["Location"] == "/"


def test_healthz_answers_anonymous_callers_with_nothing_but_ok(client: Client) -> None:
    response = client.get("/healthz")

    assert (response.status_code, response.content) == (200, b"ok")


# --- found in review --------------------------------------------------------------------------------


@pytest.fixture
def vector_item(db: Any) -> Any:
    dataset = DatasetFactory(slug="v", modality="vector", encoder="vector", vector_dim=2)
    return ItemFactory(dataset=dataset, key="a", text="", vector=[1.0, 2.0], content_hash="h")


@pytest.mark.parametrize(
    ("vector", "field", "message"),
    [
        ('["a"]', "vector", "'a' is not a number"),
        ('{"x": 1}', "vector", "must be a non-empty array of numbers"),
        ("5", "vector", "must be a non-empty array of numbers"),
        ("[true, 2]", "vector", "True is not a number"),
        ("[1, 2, 3]", "vector", "has 3 numbers, but dataset 'v' has 2"),
        ("null", "vector", "is missing"),
    ],
)
def test_admin_item_form_refuses_vectors_an_import_would_refuse(
    client: Client, staff_user: Any, vector_item: Any, vector: str, field: str | None, message: str
) -> None:
    client.force_login(staff_user)
    before = db_snapshot()
    url = reverse("admin:datasets_item_change", args=[vector_item.pk])

    response = client.post(url, {"key": "a", "text": "", "vector": vector, "label": "", "metadata": "{}"})

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors == {field: [message]}
    assert db_snapshot() == before


def test_admin_item_form_refuses_text_in_a_vector_dataset_and_non_object_metadata(
    client: Client, staff_user: Any, vector_item: Any
) -> None:
    client.force_login(staff_user)
    before = db_snapshot()
    form = {"dataset": vector_item.dataset.pk, "key": "b", "vector": "", "label": "", "metadata": "{}"}

    text = client.post(reverse("admin:datasets_item_add"), form | {"text": "hello"})
    metadata = client.post(
        reverse("admin:datasets_item_add"), form | {"text": "", "vector": "[3, 4]", "metadata": "[1]"}
    )

    assert text.context["adminform"].form.errors == {
        "text": ["is a text item, but dataset 'v' makes this a vector dataset"]
    }
    assert metadata.context["adminform"].form.errors == {"metadata": ["must be a JSON object"]}
    assert db_snapshot() == before


def test_admin_item_form_stores_what_an_import_would(
    client: Client, staff_user: Any, vector_item: Any
) -> None:
    client.force_login(staff_user)
    url = reverse("admin:datasets_item_change", args=[vector_item.pk])

    response = client.post(
        url, {"key": " a ", "text": "", "vector": "[3, 4.5]", "label": " x ", "metadata": "{}"}
    )

    item = Item.objects.get()
    assert response.status_code == 302
    assert (item.key, item.vector, item.label, item.content_hash) == (
        "a",
        [3.0, 4.5],
        "x",
        vector_hash([3.0, 4.5]),
    )


def test_admin_keeps_identity_fields_fixed_once_there_is_data(
    client: Client, staff_user: Any, content: Any
) -> None:
    client.force_login(staff_user)
    item = content.items.first()

    dataset_form = (
        client.get(reverse("admin:datasets_dataset_change", args=[content.pk])).context["adminform"].form
    )
    empty = DatasetFactory(slug="empty")
    empty_form = (
        client.get(reverse("admin:datasets_dataset_change", args=[empty.pk])).context["adminform"].form
    )
    item_form = client.get(reverse("admin:datasets_item_change", args=[item.pk])).context["adminform"].form

    assert "slug" not in dataset_form.fields and "modality" not in dataset_form.fields
    assert "slug" not in empty_form.fields and "modality" in empty_form.fields
    assert "dataset" not in item_form.fields


def test_dataset_page_shows_metadata_named_items(client: Client, labeller: Any) -> None:
    ItemFactory(dataset=DatasetFactory(slug="d"), metadata={"items": 5, "keys": "k"})
    client.force_login(labeller)

    response = client.get("/datasets/d/")

    assert response.status_code == 200
    assert b"<span>items: 5</span><span>keys: k</span>" in response.content


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("[1]", 'must be a JSON object, e.g. {"k": 10}'),
        ('{"note": "a\\u0000"}', "contains a NUL character, which the database cannot store"),
    ],
)
def test_admin_dataset_form_refuses_settings_the_api_refuses(
    client: Client, staff_user: Any, settings: str, message: str
) -> None:
    dataset = DatasetFactory(slug="d")
    client.force_login(staff_user)
    before = db_snapshot()
    form = {"name": "d", "description": "", "modality": "text", "encoder": "minilm", "settings": settings}

    response = client.post(reverse("admin:datasets_dataset_change", args=[dataset.pk]), form)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"settings": [message]}
    assert db_snapshot() == before
