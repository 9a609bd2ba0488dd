"""Whole-dataset archives: export everything of a dataset, import it into a fresh database, get it back
exactly (every row by its natural key, every timestamp), serve it again, and refuse damaged archives without
changing anything."""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import models
from rest_framework.test import APIClient

from apps.common import background
from apps.datasets.archive import TABLES, dataset_archive_export, dataset_archive_import
from apps.datasets.formats import DataFormatError, ItemRecord, PairRecord
from apps.datasets.models import Dataset, Item
from apps.datasets.services import dataset_records_save, dataset_update
from apps.discovery import services as discovery
from apps.discovery.models import AnomalyFeedback, AnomalyScore
from apps.labelling.models import Pair
from apps.labelling.services import pairs_label
from apps.training import index
from apps.training.models import ModelVersion, TrainingRun
from apps.training.services import training_run_cancel, training_run_start
from tests.conftest import db_snapshot, every_row
from tests.discovery.conftest import clinc_slice, fresh_data_dir
from tests.factories import UserFactory
from tests.training.conftest import make_dataset, run_to_end

pytestmark = pytest.mark.django_db

SLUG = "archived"
USERS = ("alice", "bob", "carol")
QUERY = "why is my bank account frozen"


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A fresh, empty SIMAPP_DATA_DIR: the machine the archive is restored on."""
    with fresh_data_dir(tmp_path / "var") as path:
        path.mkdir()
        yield path


# ---------------------------------------------------------------------------------------------------
# A canonical dump: every column of every row of the dataset, with references by natural key.


def canonical(slug: str) -> dict[str, Any]:
    """Every row that belongs to dataset ``slug``, ids replaced by natural keys (item key, username, version
    number, a run's position), so two databases holding the same dataset give equal dumps."""
    dataset = Dataset.objects.get(slug=slug)
    keys = dict(Item.objects.filter(dataset=dataset).values_list("id", "key"))
    runs = list(TrainingRun.objects.filter(dataset=dataset).order_by("id").values_list("id", flat=True))
    numbers = dict(ModelVersion.objects.filter(dataset=dataset).values_list("id", "number"))
    users = dict(get_user_model().objects.values_list("id", "username"))
    pairs = Pair.objects.filter(dataset=dataset)
    pair_keys = {
        pk: (keys[a], keys[b], users.get(annotator))
        for pk, a, b, annotator in pairs.values_list("id", "item_a_id", "item_b_id", "annotator_id")
    }
    references: dict[Any, Callable[[Any], Any]] = {
        Dataset: lambda pk: "(the dataset)",
        Item: keys.__getitem__,
        get_user_model(): lambda pk: None if pk is None else users[pk],
        TrainingRun: lambda pk: f"run #{runs.index(pk) + 1}",
        ModelVersion: lambda pk: f"v{numbers[pk]}",
    }

    def rows(model: type[models.Model], queryset: Any) -> list[dict[str, Any]]:
        dumped = []
        for obj in queryset.order_by("id"):
            row: dict[str, Any] = {}
            for column in model._meta.concrete_fields:
                if column.primary_key:
                    continue
                value = getattr(obj, column.attname)
                if column.is_relation:
                    value = references[column.related_model](value)
                row[column.name] = value
            if model is AnomalyFeedback:
                row["pair_ids"] = [pair_keys[pk] for pk in row["pair_ids"]]
            dumped.append(row)
        return dumped

    return {
        "dataset": rows(Dataset, Dataset.objects.filter(pk=dataset.pk)),
        "items": rows(Item, Item.objects.filter(dataset=dataset)),
        "pairs": rows(Pair, pairs),
        "runs": rows(TrainingRun, TrainingRun.objects.filter(dataset=dataset)),
        "versions": rows(ModelVersion, ModelVersion.objects.filter(dataset=dataset)),
        "feedback": rows(AnomalyFeedback, AnomalyFeedback.objects.filter(item__dataset=dataset)),
        "scores": sorted(
            (f"v{numbers[version]}", keys[item], score)
            for version, item, score in AnomalyScore.objects.filter(version__dataset=dataset).values_list(
                "version_id", "item_id", "score"
            )
        ),
    }


def state(root: Path) -> dict[str, Any]:
    """Every row of every table an import writes, and every file under the data directory."""
    return {
        "rows": db_snapshot(),
        **every_row(),
        "users": list(get_user_model().objects.order_by("id").values_list()),
        "files": sorted(str(p.relative_to(root)) for p in root.rglob("*")),
    }


def served(slug: str) -> dict[str, Any]:
    """What the dataset answers: each item's nearest neighbours (by key) and the label of a query."""
    dataset = Dataset.objects.get(slug=slug)
    discovery.query_cache_clear()
    neighbours = {}
    for item_id, key in Item.objects.filter(dataset=dataset).order_by("id").values_list("id", "key")[:6]:
        _, results = discovery.item_neighbours(dataset=dataset, item_id=item_id, limit=5)
        neighbours[key] = [r.key for r in results]
    _, (classified,) = discovery.classify(dataset=dataset, texts=[QUERY])
    return {
        "neighbours": neighbours,
        "label": classified.label,
        "top": [c["label"] for c in classified.labels],
    }


# ---------------------------------------------------------------------------------------------------
# The archived dataset, built once: real CLINC150 texts, labels from three people, two trained versions,
# a cancelled run, anomaly feedback. Its rows are deleted again before any test runs: only the archives
# and what the dataset looked like stay.


@dataclass(frozen=True)
class Archived:
    full: Path  # with the model files
    plain: Path  # without
    dump: dict[str, Any]
    served: dict[str, Any]


def build_dataset(shared_data: Path) -> Dataset:
    alice, bob, carol = (UserFactory(username=name) for name in USERS)
    records = clinc_slice(shared_data, intents=4, per_intent=8)
    records.append(
        ItemRecord(
            key="odd-ünïcödé",
            text='Ünïcödé with a tab\tand "quotes"\nand a new line',
            metadata={"nested": {"list": [1, 2.5, None, True]}, "emoji": "🙂"},
        )
    )
    dataset = make_dataset(SLUG, records)
    dataset_update(
        dataset=dataset,
        description="everything an archive must keep",
        settings={"knn_k": 5, "label_mode": "graded", "tool": {"own": ["option"]}},
    )
    keys = [record.key for record in records]
    dataset_records_save(
        slug=SLUG,
        records=[PairRecord(a=keys[0], b=keys[1], score=1.0), PairRecord(a=keys[9], b=keys[2], score=0.0)],
        source_name="test",
        pair_source=Pair.Source.IMPORT,
    )
    pairs_label(
        dataset=dataset,
        pairs=[{"a": keys[0], "b": keys[2], "score": 0.75}, {"a": keys[4], "b": keys[3], "score": 0.25}],
        annotator=alice,
    )
    pairs_label(dataset=dataset, pairs=[{"a": keys[0], "b": keys[2], "score": 0.5}], annotator=bob)
    assert run_to_end(dataset, epochs=1).status == "succeeded"
    second = run_to_end(dataset, epochs=2, seed=3)
    assert (second.status, second.error) == ("succeeded", "")
    TrainingRun.objects.filter(pk=second.pk).update(requested_by=carol)
    cancelled = training_run_start(dataset=dataset, config={"epochs": 9}, requested_by=alice, enqueue=False)
    training_run_cancel(run=cancelled.run)
    items = list(Item.objects.filter(dataset=dataset).order_by("id"))
    discovery.anomaly_feedback_set(item=items[5], user=alice, verdict="anomaly")
    discovery.anomaly_feedback_set(item=items[6], user=bob, verdict="normal")
    discovery.anomaly_feedback_set(item=items[5], user=carol, verdict="normal")
    # Times that are not "now", so that an import stamping its own time could not pass.
    Dataset.objects.filter(pk=dataset.pk).update(created_at=datetime(2021, 3, 4, 5, 6, 7, 890123, tzinfo=UTC))
    Pair.objects.filter(annotator=alice).update(created_at=datetime(2022, 1, 2, tzinfo=UTC))
    return dataset


@pytest.fixture(scope="session")
def archived(
    django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: Any, shared_data: Path
) -> Archived:
    out = tmp_path_factory.mktemp("archives")
    with django_db_blocker.unblock(), fresh_data_dir(tmp_path_factory.mktemp("source")):
        try:
            dataset = build_dataset(shared_data)
            dump, answers = canonical(SLUG), served(SLUG)
            with (out / "full.zip").open("wb") as fp:
                dataset_archive_export(dataset=dataset, fp=fp, artifacts=True)
            with (out / "plain.zip").open("wb") as fp:
                dataset_archive_export(dataset=dataset, fp=fp)
        finally:
            background.drain()
            ModelVersion.objects.filter(dataset__slug=SLUG).delete()
            Dataset.objects.filter(slug=SLUG).delete()
            get_user_model().objects.filter(username__in=USERS).delete()
    assert dump["versions"][1]["is_active"] and len(dump["feedback"]) == 3
    return Archived(full=out / "full.zip", plain=out / "plain.zip", dump=dump, served=answers)


def run_command(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def rewrite(
    source: Path,
    target: Path,
    *,
    change: dict[str, Callable[[bytes], bytes] | None] | None = None,
    add: dict[str, bytes] | None = None,
) -> Path:
    """A copy of an archive with members changed (a function of their bytes), dropped (None) or added."""
    change = change or {}
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zout:
        for name in zin.namelist():
            content = zin.read(name)
            if name in change:
                edit = change[name]
                if edit is None:
                    continue
                content = edit(content)
            zout.writestr(name, content)
        for name, content in (add or {}).items():
            zout.writestr(name, content)
    return target


def edit_line(number: int, edit: Callable[[dict[str, Any]], Any]) -> Callable[[bytes], bytes]:
    """Change line ``number`` (from 1) of a JSON Lines member: ``edit`` changes the row in place."""

    def apply(content: bytes) -> bytes:
        lines = content.decode().splitlines(keepends=True)
        row = json.loads(lines[number - 1])
        edit(row)
        lines[number - 1] = json.dumps(row, ensure_ascii=False) + "\n"
        return "".join(lines).encode()

    return apply


def edit_manifest(edit: Callable[[dict[str, Any]], Any]) -> Callable[[bytes], bytes]:
    def apply(content: bytes) -> bytes:
        document = json.loads(content)
        edit(document)
        return json.dumps(document).encode()

    return apply


# ---------------------------------------------------------------------------------------------------
# Round trip


def test_archive_restores_every_row_into_a_fresh_database_and_serves_again(
    archived: Archived, data_dir: Path, tmp_path: Path
) -> None:
    assert not Dataset.objects.exists() and not get_user_model().objects.exists()

    printed = run_command("import_dataset", SLUG, str(archived.full), "--format", "archive")

    assert canonical(SLUG) == archived.dump
    assert printed.splitlines() == [
        f"{SLUG}: restored 33 items, 20 pairs, 3 training runs, 2 model versions, 3 anomaly feedback, "
        "66 anomaly scores; model files of v1, v2; created inactive users alice, bob, carol",
        f"index: {SLUG}.index_v2 (33 items)",
    ]
    users = get_user_model().objects.order_by("username")
    assert [(u.username, u.is_active, u.is_staff, u.has_usable_password()) for u in users] == [
        (name, False, False, False) for name in USERS
    ]
    assert sorted(
        p.relative_to(data_dir).as_posix() for p in (data_dir / "models" / SLUG).rglob("*.json")
    ) == [f"models/{SLUG}/v{n}/{name}" for n in (1, 2) for name in ("head_config.json", "model.json")]
    # It serves as it did: the same neighbours for every item and the same label for a new text.
    assert index.vector_store().get_alias(f"{SLUG}.index") == f"{SLUG}.index_v2"
    assert served(SLUG) == archived.served
    # Exporting the restored dataset writes the same archive, but for the manifest's time.
    again = tmp_path / "again.zip"
    with again.open("wb") as fp:
        dataset_archive_export(dataset=Dataset.objects.get(slug=SLUG), fp=fp, artifacts=True)
    first, second = members(archived.full), members(again)
    assert sorted(first) == sorted(second)
    assert [name for name in first if first[name] != second[name]] == ["manifest.json"]
    manifest = json.loads(second["manifest.json"])
    assert manifest["tables"] == {
        "dataset": 1,
        "users": 3,
        "items": 33,
        "pairs": 20,
        "training_runs": 3,
        "model_versions": 2,
        "anomaly_feedback": 3,
        "anomaly_scores": 66,
    }
    assert (manifest["format"], manifest["version"], manifest["artifacts"]) == (
        "simapp-dataset-archive",
        1,
        [1, 2],
    )


def test_existing_users_keep_their_labels_and_accounts(archived: Archived, data_dir: Path) -> None:
    alice = UserFactory(username="alice", is_staff=True)

    result = dataset_archive_import(fp=archived.plain.open("rb"), source_name="plain.zip")

    alice.refresh_from_db()
    assert result.users_created == ["bob", "carol"]
    assert (alice.is_active, alice.is_staff, alice.has_usable_password()) == (True, True, True)
    assert Pair.objects.filter(annotator=alice).count() == 2 + 5  # two labels and one verdict's pairs
    assert canonical(SLUG) == archived.dump


def test_archive_without_model_files_restores_the_rows_and_says_why_there_is_no_index(
    archived: Archived, data_dir: Path
) -> None:
    printed = run_command("import_dataset", SLUG, str(archived.plain), "--format", "archive")

    assert canonical(SLUG) == archived.dump
    assert printed.splitlines()[-1] == (
        f"index: not built: the model files of dataset '{SLUG}' v2 are not in the data directory "
        f"({data_dir / 'models' / SLUG / 'v2'}); restore them with the data directory, or from an archive "
        f"exported with --artifacts, or train a new version: manage.py train {SLUG}"
    )
    assert not (data_dir / "models").exists()


def test_restore_under_another_slug_then_rebuild_the_index(archived: Archived, data_dir: Path) -> None:
    result = json.loads(
        run_command(
            "import_dataset", "copy", str(archived.full), "--format", "archive", "--no-index", "--json"
        )
    )
    assert index.vector_store().get_alias("copy.index") is None

    printed = run_command("rebuild_index", "copy")

    assert printed.strip() == "copy: copy.index_v2 (33 items)"
    assert (result["dataset"], result["archived_as"], result["artifacts"], result["active_version"]) == (
        "copy",
        SLUG,
        [1, 2],
        2,
    )
    assert result["index"] == "not built (--no-index): manage.py rebuild_index copy"
    dump = canonical("copy")
    assert dump["dataset"][0]["slug"] == "copy"
    assert [(v["artifact_path"], v["collection"]) for v in dump["versions"]] == [
        ("models/copy/v1", "copy.index_v1"),
        ("models/copy/v2", "copy.index_v2"),
    ]
    expected = archived.dump | {"dataset": [archived.dump["dataset"][0] | {"slug": "copy"}]}
    expected["versions"] = [
        v | {"artifact_path": f"models/copy/v{n}", "collection": f"copy.index_v{n}"}
        for n, v in enumerate(archived.dump["versions"], start=1)
    ]
    assert dump == expected
    assert served("copy") == archived.served


def test_rebuild_index_refuses_what_it_cannot_build(archived: Archived, data_dir: Path) -> None:
    dataset_archive_import(fp=archived.plain.open("rb"), source_name="plain.zip")

    with pytest.raises(CommandError, match=rf"^no index rebuilt for {SLUG}$"):
        run_command("rebuild_index", SLUG)
    with pytest.raises(CommandError, match=r"^no dataset 'nope'$"):
        run_command("rebuild_index", "nope")
    with pytest.raises(CommandError, match=r"^give dataset slugs, or --all$"):
        run_command("rebuild_index")


def test_a_run_unfinished_when_archived_is_restored_as_failed(
    archived: Archived, data_dir: Path, tmp_path: Path
) -> None:
    def running(row: dict[str, Any]) -> None:
        row.update(status="running", stage="train", finished_at=None)

    path = rewrite(
        archived.plain, tmp_path / "running.zip", change={"training_runs.jsonl": edit_line(3, running)}
    )
    created = json.loads(members(path)["manifest.json"])["created_at"]

    result = dataset_archive_import(fp=path.open("rb"), source_name="running.zip")

    run = TrainingRun.objects.filter(dataset__slug=SLUG).order_by("id").last()
    assert result.runs_interrupted == 1
    assert (run.status, run.stage, run.finished_at) == ("failed", "train", datetime.fromisoformat(created))
    assert run.error == "interrupted: the run was running when the dataset was archived; it did not finish"


# ---------------------------------------------------------------------------------------------------
# Refused imports change nothing


@pytest.fixture
def other_data(data_dir: Path) -> None:
    """Another dataset and a leftover model directory of the archived slug, which a failed import must
    leave exactly as they are."""
    other = make_dataset("other", [ItemRecord(key="x", text="one"), ItemRecord(key="y", text="two")])
    Pair.objects.create(
        dataset=other, item_a=other.items.get(key="x"), item_b=other.items.get(key="y"), score=1.0
    )
    leftover = data_dir / "models" / SLUG / "v2"
    leftover.mkdir(parents=True)
    (leftover / "model.json").write_text("left by a deleted dataset")


def test_an_existing_slug_is_refused_and_nothing_changes(
    archived: Archived, data_dir: Path, other_data: None
) -> None:
    dataset_archive_import(fp=archived.plain.open("rb"), source_name="plain.zip", slug="other2")
    before = state(data_dir)

    for slug in ("other", "other2"):
        with pytest.raises(
            CommandError,
            match=rf"^{re.escape(str(archived.full))}: dataset '{slug}' exists already; delete it first, or restore the "
            "archive under another slug$",
        ):
            run_command("import_dataset", slug, str(archived.full), "--format", "archive")

    assert state(data_dir) == before


def changed(member: str, edit: Callable[[bytes], bytes] | None) -> Callable[[Path, Path], Path]:
    """Copies an archive with ``member`` changed by ``edit`` (None: dropped)."""
    return lambda source, target: rewrite(source, target, change={member: edit})


def row_set(member: str, line: int, **values: Any) -> Callable[[Path, Path], Path]:
    """Copies an archive with ``values`` set in row ``line`` (from 1) of the JSON Lines ``member``."""
    return changed(member, edit_line(line, lambda row: row.update(values)))


def added(member: str, content: bytes) -> Callable[[Path, Path], Path]:
    """Copies an archive with ``member`` added."""
    return lambda source, target: rewrite(source, target, add={member: content})


def truncated(path: Path, target: Path) -> Path:
    target.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return target


def crc_damaged(path: Path, target: Path) -> Path:
    """The archive with one byte of items.jsonl changed where it is stored uncompressed: a CRC mismatch."""
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(target, "w") as zout:
        for name in zin.namelist():
            compression = zipfile.ZIP_STORED if name == "items.jsonl" else zipfile.ZIP_DEFLATED
            zout.writestr(name, zin.read(name), compress_type=compression)
    data = bytearray(target.read_bytes())
    at = data.index(b'"key": "train-')
    data[at + 8] = ord("X")
    target.write_bytes(bytes(data))
    return target


DAMAGED: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "truncated": (truncated, r"is not a simapp dataset archive: not a zip file, or a truncated one \(.*\)"),
    "a newer format": (
        changed("manifest.json", edit_manifest(lambda m: m.update(version=2))),
        r"manifest.json, field 'version': is version 2 of the archive format, which this simapp cannot read "
        r"\(it reads version 1\); a newer simapp wrote it",
    ),
    "not an archive": (
        changed("manifest.json", edit_manifest(lambda m: m.update(format="other"))),
        r"manifest.json, field 'format': is 'other', not 'simapp-dataset-archive'",
    ),
    "no manifest": (changed("manifest.json", None), r"has no manifest.json: not a simapp dataset archive"),
    "a missing table": (changed("users.jsonl", None), r"has no users.jsonl: a damaged archive"),
    "a bad item": (row_set("items.jsonl", 3, key=7), r"items.jsonl, line 3, field 'key': must be a string"),
    "a duplicate key": (
        row_set("items.jsonl", 3, key="odd-ünïcödé"),
        r"items.jsonl, line 33, field 'key': duplicate key 'odd-ünïcödé' \(first at line 3\)",
    ),
    # Python's json reads a JSON escape of half of a UTF-16 pair, which no database (nor UTF-8) stores.
    "a lone surrogate in a text": (
        changed("items.jsonl", lambda c: c.replace(b'"text": "', b'"text": "\\ud800', 1)),
        r"items.jsonl, line 1, field 'text': contains a lone surrogate \(U\+D800\), which is not valid "
        r"Unicode text",
    ),
    "a lone surrogate in the description": (
        changed("dataset.jsonl", lambda c: c.replace(b'"description": "', b'"description": "\\udfff', 1)),
        r"dataset.jsonl, line 1, field 'description': contains a lone surrogate \(U\+DFFF\), which is not "
        r"valid Unicode text",
    ),
    "an unknown key in a pair": (
        row_set("pairs.jsonl", 2, b="nope"),
        r"pairs.jsonl, line 2, field 'b': no item with key 'nope' in items.jsonl",
    ),
    "a score out of range": (
        row_set("pairs.jsonl", 4, score=1.5),
        r"pairs.jsonl, line 4, field 'score': must be in \[0.0, 1.0\], not 1.5",
    ),
    "an unknown user": (
        row_set("pairs.jsonl", 3, annotator="mallory"),
        r"pairs.jsonl, line 3, field 'annotator': user 'mallory' is not in users.jsonl",
    ),
    "an unknown field": (
        row_set("training_runs.jsonl", 2, gpu=1),
        r"training_runs.jsonl, line 2, field 'gpu': unknown field; this archive format has id, config, .*",
    ),
    "a bad timestamp": (
        row_set("model_versions.jsonl", 1, created_at="2024-01-01"),
        r"model_versions.jsonl, line 1, field 'created_at': '2024-01-01' has no UTC offset",
    ),
    "two active versions": (
        row_set("model_versions.jsonl", 1, is_active=True),
        r"model_versions.jsonl, line 2, field 'is_active': a second active version \(the first at line 1\)",
    ),
    "feedback on a missing pair": (
        row_set("anomaly_feedback.jsonl", 2, pairs=[99]),
        r"anomaly_feedback.jsonl, line 2, field 'pairs': no pair with id 99 in pairs.jsonl",
    ),
    "a bad last row": (
        row_set("anomaly_scores.jsonl", 66, score="high"),
        r"anomaly_scores.jsonl, line 66, field 'score': must be a number",
    ),
    "a line that is not JSON": (
        changed("items.jsonl", lambda c: c.replace(b"}\n", b"\n", 1)),
        r"items.jsonl, line 1: is not valid JSON \(.*\)",
    ),
    "a row missing": (
        changed("pairs.jsonl", lambda c: b"".join(c.splitlines(keepends=True)[:-1])),
        r"pairs.jsonl: holds 19 rows, but the manifest gives 20: a truncated or edited archive",
    ),
    "a cut-off line": (
        changed("pairs.jsonl", lambda c: c[:-1]),
        r"pairs.jsonl, line 20: is cut off \(no line end\): a truncated archive",
    ),
    "a damaged member": (crc_damaged, r"items.jsonl: is damaged \(Bad CRC-32 for file 'items.jsonl'\)"),
    "damaged model files": (
        changed("artifacts/v2/model.json", lambda c: b'{"format": 7}'),
        r"artifacts/v2/: is not a model simapp can load \(ValueError: Unsupported model format 7 in .*\)",
    ),
    "a member outside the archive's folders": (
        added("artifacts/v2/../../../escape.txt", b"x"),
        r"holds an unexpected member 'artifacts/v2/../../../escape.txt'",
    ),
    "model files of an unlisted version": (
        added("artifacts/v3/model.json", b"{}"),
        r"holds model files of v3 \('artifacts/v3/model.json'\), which the manifest does not list",
    ),
}


@pytest.mark.parametrize("damage", DAMAGED, ids=list(DAMAGED))
def test_a_damaged_archive_is_refused_with_where_and_changes_nothing(
    archived: Archived, data_dir: Path, other_data: None, tmp_path: Path, damage: str
) -> None:
    make, message = DAMAGED[damage]
    path = make(archived.full, tmp_path / "damaged.zip")
    before = state(data_dir)

    with pytest.raises(CommandError) as raised:
        run_command("import_dataset", SLUG, str(path), "--format", "archive")

    assert raised.value.args[0].count("\n") == 0
    assert raised.match(rf"^{re.escape(str(path))}: {message}$")
    assert state(data_dir) == before
    assert (data_dir / "models" / SLUG / "v2" / "model.json").read_text() == "left by a deleted dataset"


def test_a_vector_value_beyond_32_bit_floats_is_refused_with_where_and_changes_nothing(
    data_dir: Path, tmp_path: Path
) -> None:
    # 1e300 would become infinity in the encoder, the embedding cache and the index, as in any import
    dataset = make_dataset(
        "vec", [ItemRecord(key="a", vector=[0.5, 1.5]), ItemRecord(key="b", vector=[2.0, 3.0])]
    )
    with (tmp_path / "vec.zip").open("wb") as fp:
        dataset_archive_export(dataset=dataset, fp=fp)
    path = rewrite(
        tmp_path / "vec.zip",
        tmp_path / "damaged.zip",
        change={"items.jsonl": edit_line(2, lambda row: row.update(vector=[0.5, 1e300]))},
    )
    before = state(data_dir)

    with pytest.raises(DataFormatError) as raised:
        dataset_archive_import(fp=path.open("rb"), source_name="damaged.zip", slug="vec2")

    assert str(raised.value) == (
        "damaged.zip: items.jsonl, line 2, field 'vector': holds 1e+300, beyond the range of the 32-bit "
        "floats vectors are kept as (±3.4e38)"
    )
    assert state(data_dir) == before


def test_a_restore_replaces_model_files_left_by_a_deleted_dataset(
    archived: Archived, data_dir: Path, other_data: None
) -> None:
    dataset_archive_import(fp=archived.full.open("rb"), source_name="full.zip")

    assert json.loads((data_dir / "models" / SLUG / "v2" / "model.json").read_text())["format"] == 1
    assert [p.name for p in data_dir.iterdir()] == ["models"]  # and no staging directory is left


def test_the_row_limit_applies_to_archives(archived: Archived, data_dir: Path, settings: Any) -> None:
    settings.SIMAPP_MAX_IMPORT_ROWS = 52

    with pytest.raises(
        DataFormatError,
        match=r"^plain.zip: holds 53 items and pairs, over the limit of this server of 52 \(SIMAPP_MAX_IMPORT_ROWS\)$",
    ):
        dataset_archive_import(fp=archived.plain.open("rb"), source_name="plain.zip")
    assert not Dataset.objects.exists()


def test_export_command_options(archived: Archived, data_dir: Path, tmp_path: Path) -> None:
    dataset_archive_import(fp=archived.plain.open("rb"), source_name="plain.zip")
    target = tmp_path / "out.zip"

    printed = run_command("export_dataset", SLUG, str(target), "--format", "archive", "--artifacts")

    assert printed.strip() == (
        f"{target}: {SLUG}: 3 users, 33 items, 20 pairs, 3 training runs, 2 model versions, "
        "3 anomaly feedback, 66 anomaly scores"
    )
    assert members(target).keys() == members(archived.plain).keys()
    with pytest.raises(CommandError, match=r"^--artifacts goes with --format archive only$"):
        run_command("export_dataset", SLUG, str(tmp_path / "x.jsonl"), "--format", "jsonl", "--artifacts")
    with pytest.raises(CommandError, match=r"^an archive is a zip file: give a file path, not '-'$"):
        run_command("export_dataset", SLUG, "-", "--format", "archive")
    with pytest.raises(CommandError, match=r"^--split does not apply to --format archive$"):
        run_command("import_dataset", "x", str(target), "--format", "archive", "--split", "train")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zip", "var"]


# ---------------------------------------------------------------------------------------------------
# API: staff download and restore archives


def test_staff_download_an_archive_and_others_cannot(
    archived: Archived, data_dir: Path, staff_api: APIClient, labeller_api: APIClient
) -> None:
    dataset_archive_import(fp=archived.plain.open("rb"), source_name="plain.zip")

    response = staff_api.get(f"/api/datasets/{SLUG}/archive/")
    refused = labeller_api.get(f"/api/datasets/{SLUG}/archive/")
    anonymous = APIClient().get(f"/api/datasets/{SLUG}/archive/")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == f'attachment; filename="{SLUG}.zip"'
    downloaded = members_of(b"".join(response.streaming_content))
    assert sorted(downloaded) == sorted(["manifest.json", *(f"{t}.jsonl" for t in TABLES)])
    assert downloaded["items.jsonl"] == members(archived.plain)["items.jsonl"]
    assert (refused.status_code, anonymous.status_code) == (403, 401)
    assert staff_api.get(f"/api/datasets/{SLUG}/archive/?artifacts=maybe").status_code == 400


def members_of(content: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def post_archive(client: APIClient, path: Path, **fields: str) -> Any:
    upload = SimpleUploadedFile(path.name, path.read_bytes(), content_type="application/zip")
    return client.post("/api/archives/", {"file": upload, **fields}, format="multipart")


def test_staff_restore_an_archive_through_the_api(
    archived: Archived, data_dir: Path, staff_api: APIClient
) -> None:
    response = post_archive(staff_api, archived.plain)

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["dataset"], body["archived_as"], body["active_version"], body["users_created"]) == (
        SLUG,
        SLUG,
        2,
        list(USERS),
    )
    assert body["index"].startswith(f"not built: the model files of dataset '{SLUG}' v2 are not in the data")
    assert canonical(SLUG) == archived.dump


def test_api_restore_refusals_change_nothing(
    archived: Archived,
    data_dir: Path,
    other_data: None,
    staff_api: APIClient,
    labeller_api: APIClient,
    tmp_path: Path,
) -> None:
    newer = rewrite(
        archived.plain,
        tmp_path / "newer.zip",
        change={"manifest.json": edit_manifest(lambda m: m.update(version=2))},
    )
    before = state(data_dir)

    by_labeller = post_archive(labeller_api, archived.plain)
    damaged = post_archive(staff_api, newer)
    taken = post_archive(staff_api, archived.plain, slug="other")
    bad_slug = post_archive(staff_api, archived.plain, slug="no spaces")

    assert by_labeller.status_code == 403
    assert (damaged.status_code, damaged.json()) == (
        400,
        {
            "detail": "newer.zip: manifest.json, field 'version': is version 2 of the archive format, which "
            "this simapp cannot read (it reads version 1); a newer simapp wrote it"
        },
    )
    assert (taken.status_code, taken.json()) == (
        400,
        {
            "detail": "plain.zip: dataset 'other' exists already; delete it first, or restore the archive under "
            "another slug"
        },
    )
    assert bad_slug.status_code == 400 and "slug" in bad_slug.json()
    assert state(data_dir) == before


@pytest.mark.django_db(transaction=True)
def test_api_restore_rebuilds_the_index_in_the_background(
    archived: Archived, data_dir: Path, staff_api: APIClient
) -> None:
    response = post_archive(staff_api, archived.full)
    background.drain()

    assert response.status_code == 201, response.content
    assert response.json()["index"] == "queued"
    assert index.vector_store().get_alias(f"{SLUG}.index") == f"{SLUG}.index_v2"
    assert served(SLUG) == archived.served
    assert canonical(SLUG) == archived.dump
