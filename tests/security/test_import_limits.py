"""The import limits (``SIMAPP_MAX_UPLOAD_MB``, ``SIMAPP_MAX_IMPORT_ROWS``) hold on every way in: the
import form, the import API, ``manage.py import_dataset`` and the bulk APIs. Over a limit the import is
refused with the limit's name and nothing is stored; at the limit it goes through."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.test import Client
from rest_framework.test import APIClient

from tests.conftest import REPO, db_snapshot
from tests.factories import DatasetFactory, ItemFactory

pytestmark = pytest.mark.django_db

ROWS_3 = b"key,text,label\nn1,first new text,a\nn2,second new text,b\nn3,third new text,a\n"
ROWS_MESSAGE = (
    "holds more than 2 items and pairs, the limit of this server (SIMAPP_MAX_IMPORT_ROWS); "
    "split it into smaller imports"
)
BIG = b"key,text\n" + b"k,x\n" * (1_300_000 // 4)  # 1.2 MB
SIZE_MESSAGE = "is 1.2 MB; the limit is 1.0 MB (SIMAPP_MAX_UPLOAD_MB)"


@pytest.fixture
def limits(settings: Any) -> None:
    settings.SIMAPP_MAX_IMPORT_ROWS = 2
    settings.SIMAPP_MAX_UPLOAD_BYTES = 1024 * 1024


@pytest.fixture
def dataset() -> Any:
    dataset = DatasetFactory(slug="d")
    ItemFactory(dataset=dataset, key="k0", text="already here")
    return dataset


def csv(content: bytes, name: str = "rows.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, "text/csv")


def page_import(staff_client: Client, content: bytes, name: str) -> tuple[int, str]:
    response = staff_client.post("/datasets/d/import/", {"file": csv(content, name), "format": "csv"})
    return response.status_code, response.content.decode()


def test_the_import_form_refuses_too_many_rows_and_stores_nothing(
    staff_client: Client, dataset: Any, limits: None
) -> None:
    before = db_snapshot()

    status, html = page_import(staff_client, ROWS_3, "rows.csv")
    new = staff_client.post("/datasets/", {"slug": "new", "file": csv(ROWS_3), "format": "csv"})

    assert status == new.status_code == 400
    alert = f'<div class="alert" role="alert"><p>rows.csv: {ROWS_MESSAGE}</p>'
    assert alert in html and alert in new.content.decode()
    assert db_snapshot() == before


def test_the_import_form_refuses_a_file_over_the_size_limit(
    staff_client: Client, dataset: Any, limits: None
) -> None:
    before = db_snapshot()

    status, html = page_import(staff_client, BIG, "big.csv")

    assert status == 400 and f"the upload {SIZE_MESSAGE}" in html
    assert db_snapshot() == before


def test_the_import_api_refuses_too_many_rows_and_a_file_over_the_size_limit(
    staff_api: APIClient, dataset: Any, limits: None
) -> None:
    before = db_snapshot()

    rows = staff_api.post(
        "/api/datasets/d/import/", {"file": csv(ROWS_3), "format": "csv"}, format="multipart"
    )
    size = staff_api.post(
        "/api/datasets/d/import/", {"file": csv(BIG, "big.csv"), "format": "csv"}, format="multipart"
    )

    assert (rows.status_code, rows.json()) == (400, {"detail": f"rows.csv: {ROWS_MESSAGE}"})
    assert (size.status_code, size.json()) == (400, {"file": [f"the upload {SIZE_MESSAGE}"]})
    assert db_snapshot() == before


def test_the_bulk_apis_refuse_too_many_rows(
    staff_api: APIClient, labeller_api: APIClient, dataset: Any, limits: None
) -> None:
    ItemFactory(dataset=dataset, key="k1")
    ItemFactory(dataset=dataset, key="k2")
    before = db_snapshot()
    items = [{"key": f"n{n}", "text": f"new text {n}"} for n in range(3)]
    pairs = [
        {"a": "k0", "b": "k1", "score": 1},
        {"a": "k0", "b": "k2", "score": 0},
        {"a": "k1", "b": "k2", "score": 1},
    ]

    item_bulk = staff_api.post("/api/datasets/d/items/bulk/", {"items": items}, format="json")
    pair_bulk = labeller_api.post("/api/datasets/d/pairs/bulk/", {"pairs": pairs}, format="json")

    assert (item_bulk.status_code, item_bulk.json()) == (400, {"detail": f"items: {ROWS_MESSAGE}"})
    assert (pair_bulk.status_code, pair_bulk.json()) == (400, {"detail": f"pairs: {ROWS_MESSAGE}"})
    assert db_snapshot() == before


def test_the_command_refuses_too_many_rows_and_a_file_over_the_size_limit(
    dataset: Any, limits: None, tmp_path: Path
) -> None:
    rows, big = tmp_path / "rows.csv", tmp_path / "big.csv"
    rows.write_bytes(ROWS_3)
    big.write_bytes(BIG)
    before = db_snapshot()

    with pytest.raises(CommandError) as too_many:
        call_command("import_dataset", "d", str(rows), "--format", "csv", stdout=StringIO())
    with pytest.raises(CommandError) as too_big:
        call_command("import_dataset", "d", str(big), "--format", "csv", stdout=StringIO())

    assert str(too_many.value) == f"{rows}: {ROWS_MESSAGE}"
    assert str(too_big.value) == f"{big}: the file {SIZE_MESSAGE}"
    assert db_snapshot() == before


def test_the_reader_stops_at_the_limit(dataset: Any, limits: None, tmp_path: Path) -> None:
    # Line 5 is malformed; the import is refused for its size before the reader gets there.
    path = tmp_path / "rows.csv"
    path.write_bytes(ROWS_3 + b'n4,"never closed\n')

    with pytest.raises(CommandError) as refused:
        call_command("import_dataset", "d", str(path), "--format", "csv", stdout=StringIO())

    assert str(refused.value) == f"{path}: {ROWS_MESSAGE}"


def test_at_the_limit_the_import_goes_through(staff_client: Client, dataset: Any, limits: None) -> None:
    status, _ = page_import(staff_client, b"key,text\nn1,first new text\nn2,second new text\n", "two.csv")

    assert status == 302
    assert sorted(dataset.items.values_list("key", flat=True)) == ["k0", "n1", "n2"]


def _settings_of(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SIMAPP_MAX_")}
    script = (
        "import django; from django.conf import settings; django.setup(); "
        "print(settings.SIMAPP_MAX_IMPORT_ROWS, settings.SIMAPP_MAX_UPLOAD_BYTES)"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=base | {"DJANGO_SETTINGS_MODULE": "simapp.settings"} | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_limits_come_from_the_environment() -> None:
    default = _settings_of()
    chosen = _settings_of(SIMAPP_MAX_IMPORT_ROWS="5000", SIMAPP_MAX_UPLOAD_MB="7")
    zero = _settings_of(SIMAPP_MAX_IMPORT_ROWS="0")

    assert default.stdout.split() == ["1000000", str(100 * 1024 * 1024)]
    assert chosen.stdout.split() == ["5000", str(7 * 1024 * 1024)]
    assert zero.returncode == 1 and "SIMAPP_MAX_IMPORT_ROWS must be at least 1" in zero.stderr


def test_a_real_command_process_reads_the_limit_from_the_environment(tmp_path: Path) -> None:
    big = tmp_path / "big.csv"
    big.write_bytes(BIG)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SIMAPP_MAX_UPLOAD_MB")}
    env |= {"SIMAPP_DATA_DIR": str(tmp_path / "var"), "SIMAPP_MAX_UPLOAD_MB": "1"}

    result = subprocess.run(
        [sys.executable, "manage.py", "import_dataset", "d", str(big), "--format", "csv"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert (result.returncode, result.stderr.strip().splitlines()) == (
        1,
        [f"CommandError: {big}: the file {SIZE_MESSAGE}"],
    )
    assert not (tmp_path / "var" / "db.sqlite3").exists()  # refused before it touched the database
