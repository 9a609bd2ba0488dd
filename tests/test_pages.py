"""Every admin page, the API docs and the dataset pages render for the people who should see them."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.contrib import admin
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token

from tests.factories import DatasetFactory, ItemFactory, PairFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def content(staff_user: Any) -> Any:
    dataset = DatasetFactory(slug="d", name="Demo set")
    ItemFactory(dataset=dataset, label="greet", text="<b>bold</b> hello")
    PairFactory(dataset=dataset, annotator=staff_user, source="manual")
    Token.objects.create(user=staff_user)
    return dataset


def admin_urls() -> list[str]:
    urls = [reverse("admin:index")]
    for model, _ in admin.site._registry.items():
        meta = model._meta
        urls.append(reverse("admin:app_list", args=[meta.app_label]))
        urls.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"))
        urls.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_add"))
        obj = model.objects.first()
        if obj is not None:
            urls.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk]))
            urls.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_history", args=[obj.pk]))
            urls.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_delete", args=[obj.pk]))
    return urls


def test_every_admin_page_renders_for_staff(client: Client, staff_user: Any, content: Any) -> None:
    client.force_login(staff_user)
    urls = admin_urls()

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
