"""The command line: import_dataset, dataset_stats, export_dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from apps.datasets.models import Item
from tests.conftest import REPO, db_snapshot, write

pytestmark = pytest.mark.django_db


def run_command(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_import_then_stats_json(shared_data: Path) -> None:
    path = str(shared_data / "clinc150" / "data_full_train_val.json")

    summary = run_command("import_dataset", "clinc", path, "--format", "clinc150", "--split", "val")
    stats = json.loads(run_command("dataset_stats", "clinc", "--json"))

    assert (
        summary.strip()
        == "clinc: items +3000 new, 0 updated, 0 unchanged; pairs +0 new, 0 updated, 0 unchanged"
    )
    assert stats == {"items": 3000, "pairs": 0, "labels": 150, "active_version": None}


def test_import_json_output_and_export_round_trip(tmp_path: Path) -> None:
    source = write(
        tmp_path,
        "in.jsonl",
        '{"key": "a", "text": "x"}\n{"key": "b", "text": "y"}\n{"a": "a", "b": "b", "score": 0.5}\n',
    )

    result = json.loads(run_command("import_dataset", "d", str(source), "--format", "jsonl", "--json"))
    run_command("export_dataset", "d", str(tmp_path / "out.jsonl"), "--format", "jsonl")

    assert (result["items_created"], result["pairs_created"]) == (2, 1)
    assert (tmp_path / "out.jsonl").read_text().splitlines() == [
        '{"key": "a", "text": "x", "label": "", "metadata": {}}',
        '{"key": "b", "text": "y", "label": "", "metadata": {}}',
        '{"a": "a", "b": "b", "score": 0.5, "source": "import"}',
    ]


def test_command_errors_are_one_line_and_change_nothing(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.csv", "key,text\na,x\na,y\n")
    before = db_snapshot()

    with pytest.raises(
        CommandError, match=r"^.*bad.csv, line 3, field 'key': duplicate key 'a' \(first at line 2\)$"
    ):
        run_command("import_dataset", "d", str(bad), "--format", "csv")
    with pytest.raises(CommandError, match=r"missing.csv: No such file or directory"):
        run_command("import_dataset", "d", str(tmp_path / "missing.csv"), "--format", "csv")
    with pytest.raises(CommandError, match=r"^no dataset 'nope'$"):
        run_command("dataset_stats", "nope", "--json")
    assert db_snapshot() == before and not Item.objects.exists()


def test_real_processes_exit_non_zero_with_a_one_line_message(tmp_path: Path) -> None:
    # A real manage.py process on its own SQLite database under a temporary data directory.
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {
        "SIMAPP_DATA_DIR": str(tmp_path / "var")
    }

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert manage("migrate", "-v0").returncode == 0
    empty = write(tmp_path, "empty.csv", "")
    failed = manage("import_dataset", "d", str(empty), "--format", "csv")
    unknown = manage("dataset_stats", "nope", "--json")
    good = manage("import_dataset", "d", str(write(tmp_path, "ok.csv", "text\nhello\n")), "--format", "csv")

    assert (failed.returncode, failed.stderr.strip().splitlines()) == (
        1,
        [f"CommandError: {empty}: the file is empty"],
    )
    assert (unknown.returncode, unknown.stderr.strip().splitlines()) == (
        1,
        ["CommandError: no dataset 'nope'"],
    )
    assert good.returncode == 0 and "items +1 new" in good.stdout


def test_drf_create_token_gives_a_working_api_token(staff_user: object) -> None:
    token = run_command("drf_create_token", "admin").split()[2]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    assert client.get("/api/datasets/").status_code == 200


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["Bad Slug!"],
            "cannot create dataset 'Bad Slug!': slug: Enter a valid “slug” consisting of letters, numbers, "
            "underscores or hyphens.",
        ),
        (
            ["d", "--name", "n" * 201],
            "cannot create dataset 'd': name: Ensure this value has at most 200 characters (it has 201).",
        ),
    ],
)
def test_an_invalid_new_dataset_is_a_one_line_error(tmp_path: Path, args: list[str], expected: str) -> None:
    path = write(tmp_path, "ok.csv", "text\nhello\n")

    with pytest.raises(CommandError) as info:
        run_command("import_dataset", args[0], str(path), "--format", "csv", *args[1:])

    assert str(info.value) == expected
    assert db_snapshot() == {"datasets": [], "items": [], "pairs": []}
