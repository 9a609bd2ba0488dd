"""Staff actions, endpoint by endpoint, through the pages, the API and the admin: a labeller is refused
and nothing changes; staff get the action done.

"Staff" is ``is_staff``; a labeller is any other logged-in user. The pages answer a labeller 403, the
API 403 (the labeller is authenticated, so not 401), and the admin sends them to its login page, which
says that they are not authorised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from apps.common import background
from apps.datasets.formats import vector_hash
from apps.datasets.models import Dataset, Item
from apps.discovery.models import AnomalyScore
from apps.training.models import ModelVersion, TrainingRun
from tests.conftest import db_snapshot, session_client, token_client
from tests.factories import DatasetFactory, ItemFactory, PairFactory
from tests.security.routes import Route, routes
from tests.training.conftest import run_to_end


@dataclass
class World:
    """What the actions act on: dataset ``d`` (items, a pair, a queued run, a version) and dataset ``e``
    (labelled items, no run: a retrain of it starts one)."""

    d: Dataset
    e: Dataset
    item: Item
    run: TrainingRun
    labeller: Any
    staff: Any
    ids: dict[str, int] = field(default_factory=dict)

    def url(self, template: str) -> str:
        return template.format(**self.ids)


@dataclass(frozen=True)
class Action:
    """One staff action: how to ask for it, what staff get back, and what it changes.

    ``effect`` reads the state the action changes; for staff it goes from anything but ``expected`` to
    ``expected``. A read (the console, lists of runs) has no effect: staff get it, labellers do not.
    """

    channel: str  # "page", "api" or "admin"
    name: str
    method: str
    path: str  # with {d}, {e}, {item}, {run}, {v1}, {labeller}, … from ``World.ids``
    staff_status: int
    data: Callable[[World], dict[str, Any]] | None = None
    effect: Callable[[World], Any] | None = None
    expected: Any = True

    @property
    def id(self) -> str:
        return f"{self.channel}-{self.name}"


def csv_upload(name: str = "more.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, b"key,text,label\nn1,a new text,a\nn2,another new text,b\n", "text/csv")


def run_status(world: World) -> str:
    world.run.refresh_from_db()
    return world.run.status


def settings_of(slug: str) -> dict[str, Any]:
    return Dataset.objects.get(slug=slug).settings


def queued_runs_of_e(world: World) -> int:
    return TrainingRun.objects.filter(dataset=world.e, status="queued").count()


ACTIONS = [
    # -- pages -------------------------------------------------------------------------------------------
    Action(
        "page",
        "import-new-dataset",
        "post",
        "/datasets/",
        302,
        data=lambda w: {"slug": "new", "name": "", "file": csv_upload(), "format": "csv"},
        effect=lambda w: Dataset.objects.filter(slug="new").exists(),
    ),
    Action(
        "page",
        "import",
        "post",
        "/datasets/d/import/",
        302,
        data=lambda w: {"file": csv_upload(), "format": "csv"},
        effect=lambda w: Item.objects.filter(dataset=w.d, key__in=["n1", "n2"]).count(),
        expected=2,
    ),
    Action("page", "training-console", "get", "/datasets/d/training/", 200),
    Action("page", "training-live", "get", "/datasets/d/training/live/", 200),
    Action(
        "page",
        "retrain",
        "post",
        "/datasets/e/training/",
        302,
        data=lambda w: {"head": "mlp", "epochs": "2"},
        effect=queued_runs_of_e,
        expected=1,
    ),
    Action(
        "page",
        "cancel",
        "post",
        "/datasets/d/training/runs/{run}/cancel/",
        302,
        effect=run_status,
        expected="cancelled",
    ),
    Action(
        "page",
        "anomaly-threshold",
        "post",
        "/datasets/d/anomalies/threshold/",
        302,
        data=lambda w: {"threshold": "0.5"},
        effect=lambda w: settings_of("d").get("anomaly_threshold"),
        expected=0.5,
    ),
    # -- API ---------------------------------------------------------------------------------------------
    Action(
        "api",
        "dataset-create",
        "post",
        "/api/datasets/",
        201,
        data=lambda w: {"slug": "new", "name": "New"},
        effect=lambda w: Dataset.objects.filter(slug="new").exists(),
    ),
    Action(
        "api",
        "dataset-settings",
        "patch",
        "/api/datasets/d/",
        200,
        data=lambda w: {"settings": {"k": 7}},
        effect=lambda w: settings_of("d"),
        expected={"k": 7},
    ),
    Action(
        "api",
        "dataset-replace",
        "put",
        "/api/datasets/d/",
        200,
        data=lambda w: {"slug": "d", "name": "Renamed", "modality": "text"},
        effect=lambda w: Dataset.objects.get(slug="d").name,
        expected="Renamed",
    ),
    Action(
        "api",
        "dataset-delete",
        "delete",
        "/api/datasets/e/",
        204,
        effect=lambda w: Dataset.objects.filter(slug="e").exists(),
        expected=False,
    ),
    Action(
        "api",
        "item-create",
        "post",
        "/api/datasets/d/items/",
        201,
        data=lambda w: {"key": "n1", "text": "a new text"},
        effect=lambda w: Item.objects.filter(dataset=w.d, key="n1").exists(),
    ),
    Action(
        "api",
        "item-bulk",
        "post",
        "/api/datasets/d/items/bulk/",
        201,
        data=lambda w: {"items": [{"key": "n1", "text": "a new text"}, {"key": "n2", "text": "another"}]},
        effect=lambda w: Item.objects.filter(dataset=w.d, key__in=["n1", "n2"]).count(),
        expected=2,
    ),
    Action(
        "api",
        "item-delete",
        "delete",
        "/api/datasets/d/items/{item}/",
        204,
        effect=lambda w: Item.objects.filter(pk=w.item.pk).exists(),
        expected=False,
    ),
    Action(
        "api",
        "import",
        "post",
        "/api/datasets/d/import/",
        201,
        data=lambda w: {"file": csv_upload(), "format": "csv"},
        effect=lambda w: Item.objects.filter(dataset=w.d, key__in=["n1", "n2"]).count(),
        expected=2,
    ),
    Action("api", "runs", "get", "/api/datasets/d/runs/", 200),
    Action(
        "api",
        "retrain",
        "post",
        "/api/datasets/e/runs/",
        201,
        data=lambda w: {"epochs": 2},
        effect=queued_runs_of_e,
        expected=1,
    ),
    Action("api", "run-detail", "get", "/api/runs/{run}/", 200),
    Action("api", "cancel", "post", "/api/runs/{run}/cancel/", 200, effect=run_status, expected="cancelled"),
    Action("api", "versions", "get", "/api/datasets/d/versions/", 200),
    # -- admin -------------------------------------------------------------------------------------------
    Action("admin", "index", "get", "/admin/", 200),
    Action(
        "admin",
        "retrain-action",
        "post",
        "/admin/datasets/dataset/",
        302,
        data=lambda w: {"action": "retrain_datasets", "_selected_action": [w.e.pk]},
        effect=queued_runs_of_e,
        expected=1,
    ),
    Action(
        "admin",
        "cancel-action",
        "post",
        "/admin/training/trainingrun/",
        302,
        data=lambda w: {"action": "cancel_runs", "_selected_action": [w.run.pk]},
        effect=run_status,
        expected="cancelled",
    ),
    Action(
        "admin",
        "dataset-settings",
        "post",
        "/admin/datasets/dataset/{d}/change/",
        302,
        data=lambda w: {
            "name": "d",
            "description": "",
            "encoder": "minilm",
            "settings": '{"k": 7}',
        },
        effect=lambda w: settings_of("d"),
        expected={"k": 7},
    ),
    Action(
        "admin",
        "dataset-delete",
        "post",
        "/admin/datasets/dataset/{e}/delete/",
        302,
        data=lambda w: {"post": "yes"},
        effect=lambda w: Dataset.objects.filter(slug="e").exists(),
        expected=False,
    ),
    Action(
        "admin",
        "item-delete",
        "post",
        "/admin/datasets/item/{item}/delete/",
        302,
        data=lambda w: {"post": "yes"},
        effect=lambda w: Item.objects.filter(pk=w.item.pk).exists(),
        expected=False,
    ),
    Action(
        "admin",
        "item-add",
        "post",
        "/admin/datasets/item/add/",
        302,
        data=lambda w: {"dataset": w.d.pk, "key": "n1", "text": "a new text", "label": "", "metadata": "{}"},
        effect=lambda w: Item.objects.filter(dataset=w.d, key="n1").exists(),
    ),
    Action(
        "admin",
        "token-for-another-user",
        "post",
        "/admin/authtoken/tokenproxy/add/",
        302,
        data=lambda w: {"user": w.staff.pk},
        effect=lambda w: Token.objects.filter(user=w.staff).exists(),
    ),
    Action(
        "admin",
        "make-staff",
        "post",
        "/admin/auth/user/{labeller}/change/",
        302,
        data=lambda w: {
            "username": "labeller",
            "is_active": "on",
            "is_staff": "on",
            "date_joined_0": "2025-01-01",
            "date_joined_1": "00:00:00",
        },
        effect=lambda w: get_user_model().objects.get(pk=w.labeller.pk).is_staff,
    ),
]


def state() -> dict[str, Any]:
    """Everything a staff action could change, for asserting that a refused one changed nothing."""
    return {
        "rows": db_snapshot(),
        "runs": list(TrainingRun.objects.order_by("id").values_list("id", "status", "cancel_requested")),
        "versions": list(ModelVersion.objects.order_by("id").values_list("id", "is_active", "activated_at")),
        "scores": list(AnomalyScore.objects.order_by("id").values_list()),
        "tokens": sorted(Token.objects.values_list("user_id", flat=True)),
        "users": list(get_user_model().objects.order_by("id").values_list("id", "is_staff", "is_superuser")),
    }


def client_for(action: Action, user: Any) -> Client | APIClient:
    """A session (pages, admin) or a token (API) for ``user``, as each channel is used."""
    return token_client(user) if action.channel == "api" else session_client(user)


def send(action: Action, world: World, user: Any) -> Any:
    client = client_for(action, user)
    data = action.data(world) if action.data else None
    url = world.url(action.path)
    if action.channel != "api":
        if action.method == "get":
            return client.get(url)
        return client.post(url, data or {})
    multipart = data is not None and any(isinstance(v, SimpleUploadedFile) for v in data.values())
    return getattr(client, action.method)(url, data, format="multipart" if multipart else "json")


def assert_refused(action: Action, response: Any, url: str) -> None:
    if action.channel == "admin":
        location = urlsplit(response["Location"])
        assert (response.status_code, location.path) == (302, "/admin/login/")
        assert parse_qs(location.query)["next"] == [url]
    elif action.channel == "api":
        assert response.status_code == 403
        assert response.json() == {"detail": "You do not have permission to perform this action."}
    else:
        assert response.status_code == 403


@pytest.fixture
def world(staff_user: Any, labeller: Any) -> World:
    d = DatasetFactory(slug="d")
    items = [ItemFactory(dataset=d, key=f"k{n}", label="ab"[n % 2]) for n in range(4)]
    PairFactory(dataset=d, item_a=items[0], item_b=items[1], annotator=labeller)
    run = TrainingRun.objects.create(dataset=d, status=TrainingRun.Status.QUEUED)
    done = TrainingRun.objects.create(dataset=d, status=TrainingRun.Status.SUCCEEDED)
    version = ModelVersion.objects.create(dataset=d, run=done, number=1, collection="d.index_v1")
    e = DatasetFactory(slug="e")
    for n in range(4):
        ItemFactory(dataset=e, key=f"e{n}", label="ab"[n % 2])
    ids = {
        "d": d.pk,
        "e": e.pk,
        "item": items[0].pk,
        "run": run.pk,
        "v1": version.pk,
        "labeller": labeller.pk,
    }
    return World(d=d, e=e, item=items[0], run=run, labeller=labeller, staff=staff_user, ids=ids)


@pytest.mark.django_db
@pytest.mark.parametrize("action", ACTIONS, ids=[a.id for a in ACTIONS])
def test_a_labeller_is_refused_and_nothing_changes(world: World, action: Action) -> None:
    before = state()
    tokens = Token.objects.count()

    response = send(action, world, world.labeller)

    assert_refused(action, response, world.url(action.path))
    after = state()
    if action.channel == "api":  # the labeller's own API token, made by the test to call the API
        after["tokens"].remove(world.labeller.pk)
        assert Token.objects.count() == tokens + 1
    assert after == before


@pytest.mark.django_db
@pytest.mark.parametrize("action", ACTIONS, ids=[a.id for a in ACTIONS])
def test_staff_get_the_action_done(world: World, action: Action) -> None:
    before = action.effect(world) if action.effect else None

    response = send(action, world, world.staff)

    assert response.status_code == action.staff_status, response.content[:500]
    if action.effect is not None:
        assert before != action.expected
        assert action.effect(world) == action.expected


# -- actions on a real index ---------------------------------------------------------------------------


def active_version_of_v(world: World) -> int:
    return ModelVersion.objects.get(dataset__slug="v", is_active=True).number


INDEX_ACTIONS = [
    Action(
        "page",
        "activate",
        "post",
        "/datasets/v/training/versions/{v1}/activate/",
        302,
        effect=active_version_of_v,
        expected=1,
    ),
    Action(
        "page",
        "rollback",
        "post",
        "/datasets/v/training/rollback/",
        302,
        effect=active_version_of_v,
        expected=1,
    ),
    Action(
        "api",
        "activate",
        "post",
        "/api/versions/{v1}/activate/",
        200,
        effect=active_version_of_v,
        expected=1,
    ),
    Action(
        "api",
        "rollback",
        "post",
        "/api/datasets/v/rollback/",
        200,
        effect=active_version_of_v,
        expected=1,
    ),
    Action(
        "api",
        "rescore",
        "post",
        "/api/datasets/v/anomalies/rescore/",
        202,
        effect=lambda w: scored_items(),
        expected=31,
    ),
    Action(
        "admin",
        "activate-action",
        "post",
        "/admin/training/modelversion/",
        302,
        data=lambda w: {"action": "activate_version", "_selected_action": [w.ids["v1"]]},
        effect=active_version_of_v,
        expected=1,
    ),
]


def scored_items() -> int:
    """Items of ``v`` with a score from its active version, once the job thread has rescored them."""
    background.drain(timeout=60)
    return AnomalyScore.objects.filter(version__dataset__slug="v", version__is_active=True).count()


@pytest.fixture
def indexed(transactional_db: Any, data_dir: Any, staff_user: Any, labeller: Any) -> World:
    """Dataset ``v`` of 30 feature vectors, indexed twice (v1, then v2, which is active), and an item
    added after that, which a rescore scores."""
    v = DatasetFactory(slug="v", modality="vector", encoder="vector", vector_dim=3)

    def add_item(n: int) -> Item:
        vector = [float(n % 5), float(n % 3), float(n)]
        return ItemFactory(
            dataset=v,
            key=f"k{n}",
            text="",
            vector=vector,
            label="ab"[n % 2],
            content_hash=vector_hash(vector),
        )

    for n in range(30):
        add_item(n)
    first = run_to_end(v, head="identity")
    second = run_to_end(v, head="identity")
    add_item(30)
    assert (first.status, second.status) == ("succeeded", "succeeded")
    v1 = ModelVersion.objects.get(dataset=v, number=1)
    assert ModelVersion.objects.get(dataset=v, is_active=True).number == 2
    item = Item.objects.get(dataset=v, key="k30")
    return World(d=v, e=v, item=item, run=first, labeller=labeller, staff=staff_user, ids={"v1": v1.pk})


@pytest.mark.parametrize("role", ["labeller", "staff"])
@pytest.mark.parametrize("action", INDEX_ACTIONS, ids=[a.id for a in INDEX_ACTIONS])
def test_index_actions_are_for_staff_only(indexed: World, action: Action, role: str) -> None:
    before = state()
    effect = action.effect(indexed) if action.effect else None

    response = send(action, indexed, indexed.labeller if role == "labeller" else indexed.staff)

    if role == "labeller":
        assert_refused(action, response, indexed.url(action.path))
        background.drain(timeout=60)
        after = state()
        after["tokens"] = [u for u in after["tokens"] if u != indexed.labeller.pk]
        assert after == before
    else:
        assert response.status_code == action.staff_status, response.content[:500]
        assert effect != action.expected
        assert action.effect(indexed) == action.expected


@pytest.mark.django_db
def test_labellers_are_not_offered_the_staff_controls(world: World) -> None:
    labeller, staff = session_client(world.labeller), session_client(world.staff)
    controls = [
        'action="/datasets/d/import/"',
        'href="/datasets/d/training/"',
        'href="/admin/"',
        'type="file"',
    ]

    seen_by_labeller = (
        labeller.get("/datasets/d/").content.decode() + labeller.get("/datasets/").content.decode()
    )
    seen_by_staff = staff.get("/datasets/d/").content.decode() + staff.get("/datasets/").content.decode()

    assert [c for c in controls if c in seen_by_labeller] == []
    assert [c for c in controls if c in seen_by_staff] == controls


# -- every route, for a labeller -----------------------------------------------------------------------

# What a labeller may send a change to: their own labels and verdicts, their session and password, and the
# two reads that take a body (classify, recommend). The home page and the health check answer any method.
LABELLER_MAY_CHANGE = {
    "",
    "healthz",
    "accounts/login/",
    "accounts/logout/",
    "accounts/password_change/",
    "admin/login/",
    "datasets/%(slug)s/label/answer/",
    "datasets/%(slug)s/label/skip/",
    "datasets/%(slug)s/label/undo/",
    "datasets/%(slug)s/anomalies/%(pk)s/feedback/",
    "datasets/%(slug)s/classify/",
    "api/datasets/%(slug)s/pairs/",
    "api/datasets/%(slug)s/pairs/bulk/",
    "api/datasets/%(slug)s/recommend/",
    "api/datasets/%(slug)s/classify/",
    "api/datasets/%(slug)s/anomalies/%(pk)s/feedback/",
}
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


def labeller_refused(route: Route, response: Any) -> bool:
    if route.kind == "admin":  # the admin sends a non-staff user to its login (its log out, to its index)
        return response.status_code == 302 and urlsplit(response["Location"]).path in (
            "/admin/login/",
            "/admin/",
        )
    return response.status_code in (403, 405)  # forbidden, or a method the view does not take at all


@pytest.mark.django_db
def test_every_other_route_refuses_a_labellers_changes(labeller: Any, samples: dict[str, list[str]]) -> None:
    # Walked from the resolver: a new endpoint that changes something is refused to labellers, or listed
    # above as theirs. The requests carry no body: whatever a refused request holds, it is not read.
    found = routes(samples)
    pages, api = session_client(labeller), token_client(labeller)
    before = state()

    let_through = {}
    for route in found:
        if route.template in LABELLER_MAY_CHANGE:
            continue
        client = api if route.kind == "api" else pages
        for method in UNSAFE:
            response = client.generic(method, route.path)
            if not labeller_refused(route, response):
                let_through[route.template, method] = response.status_code

    assert let_through == {}
    assert state() == before
    assert {route.template for route in found} >= LABELLER_MAY_CHANGE  # the list names real routes


@pytest.mark.django_db
def test_labellers_reach_their_own_actions(labeller: Any, samples: dict[str, list[str]]) -> None:
    theirs = [route for route in routes(samples) if route.template in LABELLER_MAY_CHANGE]
    statuses = {}
    for route in theirs:
        client = token_client(labeller) if route.kind == "api" else session_client(labeller)
        statuses[route.template] = client.post(route.path).status_code

    assert len(theirs) == len(LABELLER_MAY_CHANGE)
    assert {template: code for template, code in statuses.items() if code in (401, 403)} == {}


# Reads that are staff's too: the training console and its runs and versions, and the dataset archive
# (it names every annotator).
STAFF_ONLY_READS = {
    "datasets/%(slug)s/training/",
    "datasets/%(slug)s/training/live/",
    "api/datasets/%(slug)s/runs/",
    "api/runs/%(pk)s/",
    "api/datasets/%(slug)s/versions/",
    "api/datasets/%(slug)s/archive/",
}


@pytest.mark.django_db
def test_staff_only_reads_are_refused_to_labellers(
    labeller: Any, staff_user: Any, samples: dict[str, list[str]]
) -> None:
    reads = [route for route in routes(samples) if route.template in STAFF_ONLY_READS]
    as_labeller, as_staff = {}, {}
    for user, seen in ((labeller, as_labeller), (staff_user, as_staff)):
        pages, api = session_client(user), token_client(user)
        for route in reads:
            seen[route.template] = (api if route.kind == "api" else pages).get(route.path).status_code

    assert len(reads) == len(STAFF_ONLY_READS)
    assert as_labeller == dict.fromkeys(STAFF_ONLY_READS, 403)
    assert as_staff == dict.fromkeys(STAFF_ONLY_READS, 200)
