"""Every URL the project routes refuses anonymous visitors, except the few that are public on purpose.

The URLs come from Django's resolver, not from a list kept by hand: a new page or endpoint is walked as
soon as it is routed, and if it answers an anonymous visitor the test names it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client

from apps.training.models import TrainingRun
from tests.conftest import db_snapshot
from tests.security.routes import Route, routes

pytestmark = pytest.mark.django_db

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

# Answer anonymous visitors on purpose; each is checked for exactly what it does in its own test below.
PUBLIC = {
    "healthz": "liveness for load balancers; says nothing but 'ok'",
    "accounts/login/": "the login page",
    "accounts/logout/": "logs out (POST); for a visitor who is not logged in it only redirects to the login",
    "admin/login/": "the admin's login page",
    "admin/logout/": "the admin's log out; not logged in, it redirects to the admin, which asks to log in",
}


def is_login_redirect(response: Any, login: str, path: str) -> bool:
    if response.status_code != 302:
        return False
    location = urlsplit(response["Location"])
    return location.path == login and parse_qs(location.query).get("next") == [path]


def refused(route: Route, response: Any) -> bool:
    """Whether ``response`` turns an anonymous visitor away as ``route`` should."""
    if route.kind == "api":
        return response.status_code == 401 and response.has_header("WWW-Authenticate")
    login = "/admin/login/" if route.kind == "admin" else "/accounts/login/"
    return is_login_redirect(response, login, route.path)


def test_every_routed_url_refuses_anonymous_visitors(client: Client, samples: dict[str, list[str]]) -> None:
    before = db_snapshot()
    found = routes(samples)
    guarded = [route for route in found if route.template not in PUBLIC]

    answers = {(route, method): client.generic(method, route.path) for route in guarded for method in METHODS}

    # A method the view does not take may be answered 405 (nothing ran); the others must refuse.
    let_in = {
        (route.template, method): (response.status_code, response.get("Location", ""))
        for (route, method), response in answers.items()
        if response.status_code != 405 and not refused(route, response)
    }
    assert let_in == {}
    never_refused = {
        route.template for route in guarded if all(answers[route, m].status_code == 405 for m in METHODS)
    }
    assert never_refused == set()
    assert {route.template for route in found} >= {
        "datasets/%(slug)s/training/",
        "api/datasets/%(slug)s/runs/",
        "admin/datasets/dataset/",
        "api/schema/",
        "accounts/password_change/",
    }
    assert len(guarded) >= 100  # the walk reached the admin's and the API's patterns, not a handful
    assert {route.template for route in found if route.template in PUBLIC} == set(PUBLIC)
    assert db_snapshot() == before


def test_the_api_answers_401_and_pages_redirect_to_the_login(client: Client, samples: Any) -> None:
    api = client.post("/api/datasets/d/runs/", {}, content_type="application/json")
    page = client.get("/datasets/d/training/")
    admin = client.get("/admin/training/modelversion/")
    schema = client.get("/api/schema/")
    docs = client.get("/api/docs/")

    assert (api.status_code, api["WWW-Authenticate"]) == (401, "Token")
    assert api.json() == {"detail": "Authentication credentials were not provided."}
    assert (page.status_code, page["Location"]) == (302, "/accounts/login/?next=/datasets/d/training/")
    assert (admin.status_code, admin["Location"]) == (302, "/admin/login/?next=/admin/training/modelversion/")
    assert schema.status_code == 401
    assert (docs.status_code, docs["Location"]) == (302, "/accounts/login/?next=/api/docs/")
    assert not TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED).exists()


def test_the_public_urls_do_only_what_they_are_for(client: Client, labeller: Any) -> None:
    health = client.get("/healthz")
    login = client.get("/accounts/login/")
    admin_login = client.get("/admin/login/")
    logout_get = client.get("/accounts/logout/")
    logout = client.post("/accounts/logout/")
    admin_logout = client.post("/admin/logout/")

    assert (health.status_code, health.content) == (200, b"ok")
    assert login.status_code == 200 and b'name="password"' in login.content
    assert admin_login.status_code == 200 and b'name="password"' in admin_login.content
    assert logout_get.status_code == 405
    assert (logout.status_code, logout["Location"]) == (302, "/accounts/login/")
    assert (admin_logout.status_code, admin_logout["Location"]) == (302, "/admin/")


@pytest.mark.parametrize(
    "path", ["/accounts/password_reset/", "/accounts/password_reset/done/", "/accounts/reset/done/"]
)
def test_no_password_reset_pages_for_anonymous_visitors(client: Client, labeller: Any, path: str) -> None:
    # They answered anyone and sent mail, which simapp has no set-up for; staff reset passwords in the admin.
    labeller.email = "labeller@example.com"
    labeller.save()

    response = client.post(path, {"email": "labeller@example.com"})

    assert response.status_code == 404


def test_static_files_are_served_to_anonymous_visitors(client: Client) -> None:
    response = client.get("/static/simapp/app.css")

    assert response.status_code == 200 and response["Content-Type"].startswith("text/css")
    assert b"".join(response.streaming_content)  # type: ignore[attr-defined]
