"""Fixtures for discovery: datasets trained once per module on small real slices, and the row counts that a
rejected request must leave as they were.

A module-scoped dataset is written with the database unblocked, outside any test's transaction, so it
is committed and every test of the module reads it; each test's own writes (feedback, pairs, settings)
still roll back with the test. pytest-django runs such tests before the transactional ones, whose flush
would remove the module's rows, and a module's tests run together, so the rows live exactly as long as
the module does. Tests that need background jobs (indexing new items, rescoring) see only committed rows
and therefore train their own dataset under ``transaction=True``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from apps.common import background
from apps.datasets.formats import ItemRecord
from apps.datasets.models import Dataset, Item
from apps.discovery.models import AnomalyFeedback, AnomalyScore
from apps.labelling.models import Pair
from apps.training import encoding, index
from apps.training.models import ModelVersion
from tests.conftest import db_snapshot
from tests.training.conftest import clinc_records, make_dataset, run_to_end


@contextmanager
def fresh_data_dir(path: Path) -> Iterator[Path]:
    """``SIMAPP_DATA_DIR`` at ``path`` (embedded index, embedding cache, model artifacts) while inside."""
    index.vector_store_close()
    with override_settings(DATA_DIR=path):
        encoding.reset_caches()
        try:
            yield path
        finally:
            background.drain()  # jobs started meanwhile finish in this directory
            index.vector_store_close()
            encoding.reset_caches()


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A fresh data directory for one (transactional) test."""
    with fresh_data_dir(tmp_path) as path:
        yield path


@contextmanager
def committed_module_data(django_db_blocker: Any, path: Path) -> Iterator[None]:
    """Write committed rows for a whole module in a fresh data directory; remove them all afterwards."""
    with django_db_blocker.unblock(), fresh_data_dir(path):
        try:
            yield
        finally:
            background.drain()
            # Versions first: a version protects its run, which the dataset's deletion also removes.
            ModelVersion.objects.all().delete()
            Dataset.objects.all().delete()


def with_metadata(records: list[ItemRecord]) -> list[ItemRecord]:
    """The records with filterable metadata: ``n`` (their position), ``group`` (even / odd), ``weight``."""
    for n, record in enumerate(records):
        record.metadata = {"n": n, "group": "even" if n % 2 == 0 else "odd", "weight": n + 0.5}
    return records


def clinc_slice(shared_data: Path, *, intents: int = 5, per_intent: int = 12) -> list[ItemRecord]:
    return with_metadata(clinc_records(shared_data, intents=intents, per_intent=per_intent))


def counts() -> dict[str, int]:
    return {
        "feedback": AnomalyFeedback.objects.count(),
        "scores": AnomalyScore.objects.count(),
        "pairs": Pair.objects.count(),
        "versions": ModelVersion.objects.count(),
    }


def state() -> dict[str, Any]:
    """Everything a discovery request could change, for asserting that a refused one changed nothing."""
    return {
        "rows": db_snapshot(),
        "counts": counts(),
        "feedback": list(AnomalyFeedback.objects.order_by("id").values_list()),
        "scores": list(AnomalyScore.objects.order_by("id").values_list()),
        "versions": list(ModelVersion.objects.order_by("id").values_list("id", "is_active", "metrics")),
    }


@dataclass
class Trained:
    """A dataset trained once for a module: its slug, its items' ids by label, and each item's row."""

    slug: str
    ids: list[int]
    by_label: dict[str, list[int]]
    item: dict[int, dict[str, Any]]  # id -> {"key", "label", "text", "metadata"}

    @property
    def dataset(self) -> Dataset:
        return Dataset.objects.get(slug=self.slug)


def trained_summary(slug: str) -> Trained:
    rows = list(
        Item.objects.filter(dataset__slug=slug)
        .order_by("id")
        .values("id", "key", "label", "text", "metadata")
    )
    by_label: dict[str, list[int]] = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row["id"])
    return Trained(slug, [r["id"] for r in rows], by_label, {r["id"]: r for r in rows})


@pytest.fixture(scope="module")
def clinc(
    django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: Any, shared_data: Path
) -> Iterator[Trained]:
    """Five CLINC150 intents, twelve queries each, with metadata; trained (MLP head, 2 epochs) once for
    the module that asks for it."""
    with committed_module_data(django_db_blocker, tmp_path_factory.mktemp("clinc")):
        dataset = make_dataset("clinc", clinc_slice(shared_data))
        run = run_to_end(dataset, epochs=2)
        assert (run.status, run.error) == ("succeeded", "")
        yield trained_summary("clinc")
