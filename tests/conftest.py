from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import models
from django.test import Client, override_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from apps.datasets.models import Dataset, Item
from apps.discovery.models import AnomalyFeedback, AnomalyScore
from apps.labelling.models import Pair
from apps.training.models import ModelVersion, TrainingRun
from tests.factories import UserFactory

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets beside the checkout (CI lays ../shared next to the clone)."""
    path = Path(os.environ.get("SIMAPP_SHARED_DATA", REPO.parent / "shared" / "data"))
    assert path.is_dir(), f"shared data not found at {path}; set SIMAPP_SHARED_DATA"
    return path


@pytest.fixture
def staff_user(db: Any) -> Any:
    return UserFactory(username="admin", is_staff=True, is_superuser=True)


@pytest.fixture
def labeller(db: Any) -> Any:
    return UserFactory(username="labeller")


def session_client(user: Any) -> Client:
    """A new test client with a session of ``user``, as the pages and the admin are used."""
    client = Client()
    client.force_login(user)
    return client


def token_client(user: Any) -> APIClient:
    """A new API client that sends ``user``'s API token (made when they have none), as the API is used."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


@pytest.fixture
def staff_api(staff_user: Any) -> APIClient:
    return token_client(staff_user)


@pytest.fixture
def labeller_api(labeller: Any) -> APIClient:
    return token_client(labeller)


@pytest.fixture
def staff_client(client: Any, staff_user: Any) -> Any:
    """Django's test client, logged in as staff (pages)."""
    client.force_login(staff_user)
    return client


@pytest.fixture
def labeller_client(client: Any, labeller: Any) -> Any:
    """Django's test client, logged in as a labeller (pages)."""
    client.force_login(labeller)
    return client


@pytest.fixture(autouse=True)
def fast_password_hashing() -> Iterator[None]:
    """Test users are made and logged in by the hundred: the default hasher would cost seconds. (Not
    through pytest-django's ``settings`` fixture: some tests have a parameter of that name.)"""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


# Every table that holds something of a dataset (the cascade from Dataset, and what a training adds).
DATASET_MODELS: tuple[type[models.Model], ...] = (
    Dataset,
    Item,
    Pair,
    TrainingRun,
    ModelVersion,
    AnomalyScore,
    AnomalyFeedback,
)


def every_row() -> dict[str, list[tuple[Any, ...]]]:
    """Every row of ``DATASET_MODELS``, by model name."""
    return {model.__name__: list(model.objects.order_by("id").values_list()) for model in DATASET_MODELS}


def db_snapshot() -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the data tables, for asserting that a rejected input changed nothing."""
    return {
        "datasets": list(Dataset.objects.order_by("id").values_list()),
        "items": list(Item.objects.order_by("id").values_list()),
        "pairs": list(Pair.objects.order_by("id").values_list()),
    }


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def celery_connections_reset() -> None:
    """Forget the Celery app's broker connections and producers, as Celery itself does after a fork.

    ``app.close()`` drops the connection pool but keeps the producer pool, whose producers still point at
    the broker an earlier test used (or killed mid-publish, leaving a slot never given back)."""
    from simapp.celery import app

    app.close()
    amqp = app.__dict__.get("amqp")  # a cached property: only there once something was sent
    if amqp is not None:
        amqp._producer_pool = None
