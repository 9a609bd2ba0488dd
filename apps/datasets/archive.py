"""Whole-dataset archives: everything that belongs to one dataset in one zip file, to back it up or to move
it to another simapp, and to restore it exactly.

An archive holds the dataset with its settings, its items, its pairs with their annotators and sources, its
training runs and model versions (configuration, metrics with the "unknown" calibration and the anomaly
summary, which version is active), the anomaly scores of those versions and the anomaly feedback people
gave, each row with its timestamps; with ``artifacts``, also each version's model files, so that a restored
dataset serves again once its index is rebuilt (``apps.training.restore``). Importing an archive into
another database reproduces every row: database ids differ, while natural keys (item keys, usernames,
version numbers), values, the order of rows and timestamps are the same.

Layout: a zip file (format ``simapp-dataset-archive``, version 1) of one JSON Lines file per table, each
row one JSON object on one line::

    manifest.json           {"format": "simapp-dataset-archive", "version": 1, "dataset": slug,
                            "created_at": when it was written, "tables": {table: rows},
                            "artifacts": [version numbers whose model files are included]}
    dataset.jsonl           one row: slug, name, description, modality, encoder, vector_dim, settings,
                            created_at, updated_at
    users.jsonl             username: every user the other tables name
    items.jsonl             key, text, vector, label, metadata, created_at, updated_at (in id order)
    pairs.jsonl             id, a, b (item keys), score, annotator (username or null), source, created_at,
                            updated_at
    training_runs.jsonl     id, config, status, stage, progress, stage_done, stage_total, loss_history,
                            metrics, device, worker, error, cancel_requested, requested_by (username or
                            null), created_at, started_at, heartbeat_at, finished_at
    model_versions.jsonl    number, run (a training_runs id), artifact_path, collection, metrics,
                            is_active, created_at, activated_at
    anomaly_feedback.jsonl  item (key), user (username), verdict, pairs (the pairs ids the verdict added),
                            created_at, updated_at
    anomaly_scores.jsonl    version (number), item (key), score
    artifacts/v<N>/...      with ``artifacts``: the files of model version N (model.json, the head)

``id`` fields number the rows of a table so that other tables can refer to them; they are not database
ids. Timestamps are ISO 8601 with their UTC offset. An item's content hash is not stored: the import computes
it from the text or vector, as every import does, so the embedding cache can never be handed a stale key.

Import rules: the dataset is created by the import, so a slug that exists is refused (restore under another
slug instead); users are matched by username, and a username this database lacks is created as an inactive
user without a usable password (labels keep their author; staff can activate the account). A run that was
queued or running when the archive was written is restored as failed, since no worker has it here. A
version's index is not in the archive (its points are keyed by database ids, which change); its collection
is named after the slug it is restored as and, when its model files come with the archive, its
artifact_path is where they are put, ``models/<slug>/v<N>``.

Everything is checked while it is written inside one transaction, so a damaged archive (truncated, another
format version, a bad row) raises ``DataFormatError`` naming the file, table, line and field, and changes
nothing: the transaction rolls back and model files are moved into place only at its very end.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sqlite3
import time
import uuid
import zipfile
import zlib
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Model
from django.utils import timezone

from apps.common.limits import import_row_limit, too_many_import_rows
from apps.datasets.formats import MAX_KEY_LENGTH, MAX_LABEL_LENGTH, DataFormatError, vector_numbers
from apps.datasets.models import Dataset, Item
from apps.datasets.services import item_content_hash, json_value_problem, text_problem
from apps.discovery.models import AnomalyFeedback, AnomalyScore
from apps.labelling.models import Pair
from apps.training.index import index_collection, model_dir
from apps.training.models import ModelVersion, TrainingRun
from simapp.learning import SimilarityModel
from simapp.learning.model import MODEL_FILE

ARCHIVE_FORMAT = "simapp-dataset-archive"
ARCHIVE_VERSION = 1
MANIFEST = "manifest.json"
# In the order they are written and read: every table refers only to tables before it.
TABLES = (
    "dataset",
    "users",
    "items",
    "pairs",
    "training_runs",
    "model_versions",
    "anomaly_feedback",
    "anomaly_scores",
)
# The fields of each table's rows (the module docstring says what they hold); an import refuses others.
FIELDS: dict[str, tuple[str, ...]] = {
    "dataset": (
        "slug",
        "name",
        "description",
        "modality",
        "encoder",
        "vector_dim",
        "settings",
        "created_at",
        "updated_at",
    ),
    "users": ("username",),
    "items": ("key", "text", "vector", "label", "metadata", "created_at", "updated_at"),
    "pairs": ("id", "a", "b", "score", "annotator", "source", "created_at", "updated_at"),
    "training_runs": (
        "id",
        "config",
        "status",
        "stage",
        "progress",
        "stage_done",
        "stage_total",
        "loss_history",
        "metrics",
        "device",
        "worker",
        "error",
        "cancel_requested",
        "requested_by",
        "created_at",
        "started_at",
        "heartbeat_at",
        "finished_at",
    ),
    "model_versions": (
        "number",
        "run",
        "artifact_path",
        "collection",
        "metrics",
        "is_active",
        "created_at",
        "activated_at",
    ),
    "anomaly_feedback": ("item", "user", "verdict", "pairs", "created_at", "updated_at"),
    "anomaly_scores": ("version", "item", "score"),
}

_BATCH = 2000
_FLUSH_BYTES = 1 << 16
_MAX_MANIFEST_BYTES = 1 << 20
_MAX_INT = 2**31 - 1  # PositiveIntegerField's upper bound on every supported database
# What reading a damaged zip member raises: a CRC or zlib error, a cut-off stream, and for a member that is
# encrypted or compressed with a method Python lacks, RuntimeError or NotImplementedError.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError)
# A model file's path inside the archive: no empty, "." or ".." component, so it stays in its directory.
_ARTIFACT = re.compile(
    r"artifacts/v([1-9][0-9]{0,8})/((?:[A-Za-z0-9_][A-Za-z0-9_.-]*/)*[A-Za-z0-9_][A-Za-z0-9_.-]*)"
)

# (table, rows done, rows in the table).
ProgressCallback = Callable[[str, int, int], None]


def member_name(table: str) -> str:
    return f"{table}.jsonl"


# ---------------------------------------------------------------------------------------------------
# Export


@dataclass
class ArchiveExportResult:
    dataset: str
    tables: dict[str, int]
    artifacts: list[int]  # versions whose model files are in the archive
    artifacts_missing: list[int]  # versions whose model files were asked for but are not in the data dir

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        counts = ", ".join(
            f"{n} {table.replace('_', ' ')}" for table, n in self.tables.items() if table != "dataset"
        )
        text = f"{self.dataset}: {counts}"
        if self.artifacts:
            text += f"; model files of v{', v'.join(map(str, self.artifacts))}"
        return text


def dataset_archive_export(
    *, dataset: Dataset, fp: IO[bytes], artifacts: bool = False
) -> ArchiveExportResult:
    """Write everything of ``dataset`` to ``fp`` as an archive; with ``artifacts``, its model files too.

    Rows are streamed from the database, so memory holds only the maps from item, run and version ids to
    their keys in the archive. The rows come from one snapshot on PostgreSQL (a repeatable-read, read-only
    transaction that blocks no writer); elsewhere each table keeps only rows whose references were written,
    so the archive is consistent even when people label while it is written.
    """
    with _consistent_reads():
        dataset = Dataset.objects.get(pk=dataset.pk)
        writer = _ArchiveWriter(fp)
        with writer.zf:
            writer.table("dataset", [_dataset_row(dataset)])
            item_keys = writer.table_items(dataset)
            wanted_pairs = _feedback_pair_ids(dataset)
            pair_refs = writer.table_pairs(dataset, item_keys, wanted_pairs)
            run_refs = writer.table_runs(dataset)
            versions = writer.table_versions(dataset, run_refs)
            writer.table_feedback(dataset, item_keys, pair_refs)
            writer.table_scores(dataset, item_keys, versions)
            writer.table("users", [{"username": name} for name in sorted(writer.usernames)])
            included, missing = writer.artifacts(versions) if artifacts else ([], [])
            manifest = {
                "format": ARCHIVE_FORMAT,
                "version": ARCHIVE_VERSION,
                "dataset": dataset.slug,
                "created_at": timezone.now().isoformat(),
                "tables": {table: writer.counts[table] for table in TABLES},
                "artifacts": included,
            }
            writer.zf.writestr(MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return ArchiveExportResult(
        dataset=dataset.slug,
        tables={table: writer.counts[table] for table in TABLES},
        artifacts=included,
        artifacts_missing=missing,
    )


@contextmanager
def _consistent_reads() -> Iterator[None]:
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        # SQLite: a transaction would hold its write lock (IMMEDIATE mode) for the whole export, stalling
        # labellers and job progress; the writer keeps references consistent instead. Inside a caller's
        # transaction (tests) the reads see that transaction.
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def _columns(table: str, *references: str) -> list[str]:
    """The fields of ``table`` that hold a model column of the same name as it is: all but ``references``."""
    return [name for name in FIELDS[table] if name not in references]


def _archive_row(table: str, values: dict[str, Any]) -> dict[str, Any]:
    """A row of ``table``: its ``FIELDS`` from ``values``, in that order, timestamps as ISO 8601 text."""
    row = {}
    for name in FIELDS[table]:
        value = values[name]
        row[name] = value.isoformat() if isinstance(value, datetime) else value
    return row


def _dataset_row(dataset: Dataset) -> dict[str, Any]:
    return _archive_row("dataset", {name: getattr(dataset, name) for name in FIELDS["dataset"]})


def _feedback_pair_ids(dataset: Dataset) -> set[int]:
    """Ids of the pairs that anomaly feedback of ``dataset`` refers to (the pairs each verdict added)."""
    wanted: set[int] = set()
    rows = AnomalyFeedback.objects.filter(item__dataset=dataset).values_list("pair_ids", flat=True)
    for pair_ids in rows.iterator(chunk_size=_BATCH):
        wanted.update(i for i in pair_ids or [] if isinstance(i, int) and not isinstance(i, bool))
    return wanted


class _ArchiveWriter:
    """Writes the tables one after the other (a zip file takes one open member at a time)."""

    def __init__(self, fp: IO[bytes]) -> None:
        self.zf = zipfile.ZipFile(fp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True)
        self.counts: dict[str, int] = {}
        self.usernames: set[str] = set()

    def table(self, table: str, rows: Any) -> None:
        count = 0
        buffer: list[str] = []
        size = 0
        # A ZipInfo of our own, or the member would be dated 1980-01-01.
        info = zipfile.ZipInfo(member_name(table), date_time=time.localtime()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED
        with self.zf.open(info, "w", force_zip64=True) as stream:
            for row in rows:
                try:
                    line = json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n"
                except ValueError:
                    raise DataFormatError(
                        member_name(table),
                        f"row {count + 1} holds a number JSON cannot represent (NaN or infinity); fix it "
                        "in the database first",
                    ) from None
                buffer.append(line)
                size += len(line)
                count += 1
                if size >= _FLUSH_BYTES:
                    stream.write("".join(buffer).encode("utf-8"))
                    buffer, size = [], 0
            stream.write("".join(buffer).encode("utf-8"))
        self.counts[table] = count

    def table_items(self, dataset: Dataset) -> dict[int, str]:
        keys: dict[int, str] = {}
        rows = Item.objects.filter(dataset=dataset).order_by("id").values("id", *FIELDS["items"])

        def items() -> Iterator[dict[str, Any]]:
            for item in rows.iterator(chunk_size=_BATCH):
                keys[item["id"]] = item["key"]
                yield _archive_row("items", item)

        self.table("items", items())
        return keys

    def table_pairs(self, dataset: Dataset, item_keys: dict[int, str], wanted: set[int]) -> dict[int, int]:
        """Writes the pairs of written items; returns archive ids of the pairs in ``wanted`` by database id."""
        refs: dict[int, int] = {}
        rows = (
            Pair.objects.filter(dataset=dataset)
            .order_by("id")
            .values(
                "id",
                "item_a_id",
                "item_b_id",
                "annotator__username",
                *_columns("pairs", "id", "a", "b", "annotator"),
            )
        )

        def pairs() -> Iterator[dict[str, Any]]:
            ref = 0
            for pair in rows.iterator(chunk_size=_BATCH):
                a, b, annotator = pair["item_a_id"], pair["item_b_id"], pair["annotator__username"]
                if a not in item_keys or b not in item_keys:
                    continue  # items that arrived after the items were written
                ref += 1
                if pair["id"] in wanted:
                    refs[pair["id"]] = ref
                if annotator is not None:
                    self.usernames.add(annotator)
                references = {"id": ref, "a": item_keys[a], "b": item_keys[b], "annotator": annotator}
                yield _archive_row("pairs", pair | references)

        self.table("pairs", pairs())
        return refs

    def table_runs(self, dataset: Dataset) -> dict[int, int]:
        refs: dict[int, int] = {}
        rows = (
            TrainingRun.objects.filter(dataset=dataset)
            .order_by("id")
            .values("id", "requested_by__username", *_columns("training_runs", "id", "requested_by"))
        )

        def runs() -> Iterator[dict[str, Any]]:
            for ref, run in enumerate(rows.iterator(chunk_size=_BATCH), start=1):
                refs[run["id"]] = ref
                requested_by = run["requested_by__username"]
                if requested_by is not None:
                    self.usernames.add(requested_by)
                yield _archive_row("training_runs", run | {"id": ref, "requested_by": requested_by})

        self.table("training_runs", runs())
        return refs

    def table_versions(self, dataset: Dataset, run_refs: dict[int, int]) -> dict[int, tuple[int, str]]:
        """Writes the versions of written runs; returns (number, artifact path) by database id."""
        versions: dict[int, tuple[int, str]] = {}
        rows = (
            ModelVersion.objects.filter(dataset=dataset)
            .order_by("number")
            .values("id", "run_id", *_columns("model_versions", "run"))
        )

        def model_versions() -> Iterator[dict[str, Any]]:
            for version in rows:
                run_id = version["run_id"]
                if run_id not in run_refs:
                    continue  # a run that started after the runs were written
                versions[version["id"]] = (version["number"], version["artifact_path"])
                yield _archive_row("model_versions", version | {"run": run_refs[run_id]})

        self.table("model_versions", model_versions())
        return versions

    def table_feedback(self, dataset: Dataset, item_keys: dict[int, str], pair_refs: dict[int, int]) -> None:
        rows = (
            AnomalyFeedback.objects.filter(item__dataset=dataset)
            .order_by("id")
            .values(
                "item_id",
                "user__username",
                "pair_ids",
                *_columns("anomaly_feedback", "item", "user", "pairs"),
            )
        )

        def feedback() -> Iterator[dict[str, Any]]:
            for verdict in rows.iterator(chunk_size=_BATCH):
                item_id, username = verdict["item_id"], verdict["user__username"]
                if item_id not in item_keys:
                    continue
                self.usernames.add(username)
                references = {
                    "item": item_keys[item_id],
                    "user": username,
                    # Pairs deleted since (a relabel, a deleted item) are gone: only existing ones are kept.
                    "pairs": [pair_refs[i] for i in verdict["pair_ids"] or [] if i in pair_refs],
                }
                yield _archive_row("anomaly_feedback", verdict | references)

        self.table("anomaly_feedback", feedback())

    def table_scores(
        self, dataset: Dataset, item_keys: dict[int, str], versions: dict[int, tuple[int, str]]
    ) -> None:
        rows = (
            AnomalyScore.objects.filter(version__dataset=dataset)
            .order_by("version__number", "item_id")
            .values_list("version_id", "item_id", "score")
        )

        def scores() -> Iterator[dict[str, Any]]:
            for version_id, item_id, score in rows.iterator(chunk_size=_BATCH):
                if version_id in versions and item_id in item_keys:
                    yield {"version": versions[version_id][0], "item": item_keys[item_id], "score": score}

        self.table("anomaly_scores", scores())

    def artifacts(self, versions: dict[int, tuple[int, str]]) -> tuple[list[int], list[int]]:
        """Adds each version's model directory; returns the numbers included and those without files."""
        included: list[int] = []
        missing: list[int] = []
        root = Path(settings.DATA_DIR)
        for number, relative in sorted(versions.values()):
            directory = root / relative
            if not (directory / MODEL_FILE).is_file():
                missing.append(number)
                continue
            for path in sorted(directory.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    self.zf.write(path, f"artifacts/v{number}/{path.relative_to(directory).as_posix()}")
            included.append(number)
        return included, missing


# ---------------------------------------------------------------------------------------------------
# Import


@dataclass
class ArchiveImportResult:
    dataset: str  # the slug it was restored as
    archived_as: str  # the slug in the archive
    tables: dict[str, int] = field(default_factory=dict)
    users_created: list[str] = field(default_factory=list)  # inactive, without a usable password
    runs_interrupted: int = 0  # queued or running in the archive, restored as failed
    artifacts: list[int] = field(default_factory=list)  # versions whose model files were restored
    active_version: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        counts = ", ".join(
            f"{n} {table.replace('_', ' ')}"
            for table, n in self.tables.items()
            if table not in ("dataset", "users")
        )
        renamed = f" (archived as {self.archived_as})" if self.archived_as != self.dataset else ""
        text = f"{self.dataset}{renamed}: restored {counts}"
        if self.artifacts:
            text += f"; model files of v{', v'.join(map(str, self.artifacts))}"
        if self.users_created:
            text += f"; created inactive users {', '.join(self.users_created)}"
        if self.runs_interrupted:
            text += f"; {self.runs_interrupted} unfinished run(s) restored as failed"
        return text


def dataset_archive_import(
    *,
    fp: IO[bytes],
    source_name: str,
    slug: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> ArchiveImportResult:
    """Restore the archive in ``fp`` (seekable) as a new dataset, ``slug`` or the archive's own.

    All or nothing: raises ``DataFormatError`` (one line: archive, table, line, field) and leaves the
    database and the data directory as they were on any problem. Does not build the index (see
    ``apps.training.restore``).
    """
    try:
        zf = zipfile.ZipFile(fp)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DataFormatError(
            source_name, f"is not a simapp dataset archive: not a zip file, or a truncated one ({exc})"
        ) from None
    with zf:
        archive = _ArchiveReader(zf, source_name)
        manifest = archive.manifest()
        return _Restore(archive, manifest, slug=slug, on_progress=on_progress).run()


@dataclass(frozen=True)
class _Manifest:
    dataset: str
    created_at: datetime
    tables: dict[str, int]
    artifacts: list[int]


class _Row:
    """One row of a table, with typed getters that raise ``DataFormatError`` naming the line and field."""

    def __init__(self, values: dict[str, Any], *, where: str, line: int | None) -> None:
        self.values = values
        self.where = where
        self.line = line

    def error(self, message: str, name: str | None = None) -> DataFormatError:
        return DataFormatError(self.where, message, line=self.line, field=name)

    def expect(self, names: Collection[str]) -> None:
        for name in self.values:
            if name not in names:
                raise self.error(f"unknown field; this archive format has {', '.join(names)}", name)
        for name in names:
            if name not in self.values:
                raise self.error("is missing", name)

    def string(self, name: str, *, max_length: int | None = None, empty: bool = True) -> str:
        value = self.values[name]
        if not isinstance(value, str):
            raise self.error("must be a string", name)
        problem = text_problem(value)
        if problem:
            raise self.error(problem, name)
        if not empty and not value:
            raise self.error("must not be empty", name)
        if max_length is not None and len(value) > max_length:
            raise self.error(f"is longer than {max_length} characters", name)
        return value

    def username(self, name: str, known: Collection[str], *, null: bool = True) -> str | None:
        value = self.values[name]
        if value is None and null:
            return None
        if not isinstance(value, str):
            raise self.error(f"must be a username{' or null' if null else ''}", name)
        if value not in known:
            raise self.error(f"user '{value}' is not in users.jsonl", name)
        return value

    def choice(self, name: str, choices: Collection[str]) -> str:
        value = self.string(name)
        if value not in choices:
            raise self.error(f"unknown value '{value}'; valid: {', '.join(choices)}", name)
        return value

    def integer(self, name: str, *, minimum: int = 0, null: bool = False) -> int | None:
        value = self.values[name]
        if value is None and null:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"must be an integer{' or null' if null else ''}", name)
        if not minimum <= value <= _MAX_INT:
            raise self.error(f"must be from {minimum} to {_MAX_INT}, not {value}", name)
        return value

    def number(self, name: str, *, low: float | None = None, high: float | None = None) -> float:
        value = self.values[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error("must be a number", name)
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise self.error(f"must be a finite number, not {value}", name)
        if (low is not None and number < low) or (high is not None and number > high):
            raise self.error(f"must be in [{low}, {high}], not {value}", name)
        return number

    def flag(self, name: str) -> bool:
        value = self.values[name]
        if not isinstance(value, bool):
            raise self.error("must be true or false", name)
        return value

    def moment(self, name: str, *, null: bool = False) -> datetime | None:
        value = self.values[name]
        if value is None and null:
            return None
        if not isinstance(value, str):
            raise self.error(f"must be an ISO 8601 timestamp{' or null' if null else ''}", name)
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise self.error(f"'{value}' is not an ISO 8601 timestamp", name) from None
        if moment.tzinfo is None:
            raise self.error(f"'{value}' has no UTC offset", name)
        return moment

    def json(self, name: str, kind: type[dict[str, Any]] | type[list[Any]]) -> Any:
        value = self.values[name]
        if not isinstance(value, kind):
            raise self.error(f"must be a JSON {'object' if kind is dict else 'array'}", name)
        problem = json_value_problem(value)
        if problem:
            raise self.error(problem, name)
        return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class _ArchiveReader:
    def __init__(self, zf: zipfile.ZipFile, source: str) -> None:
        self.zf = zf
        self.source = source

    def where(self, member: str) -> str:
        return f"{self.source}: {member}" if self.source else member

    def error(self, message: str) -> DataFormatError:
        return DataFormatError(self.source, message)

    def manifest(self) -> _Manifest:
        try:
            info = self.zf.getinfo(MANIFEST)
        except KeyError:
            raise self.error(f"has no {MANIFEST}: not a simapp dataset archive") from None
        if info.file_size > _MAX_MANIFEST_BYTES:
            raise DataFormatError(self.where(MANIFEST), f"is over {_MAX_MANIFEST_BYTES} bytes")
        try:
            document = json.loads(self.zf.read(MANIFEST).decode("utf-8"), parse_constant=_reject_constant)
        except _ZIP_ERRORS as exc:
            raise DataFormatError(self.where(MANIFEST), f"is damaged ({exc})") from None
        except (ValueError, RecursionError) as exc:
            raise DataFormatError(self.where(MANIFEST), f"is not valid JSON ({exc})") from None
        if not isinstance(document, dict):
            raise DataFormatError(self.where(MANIFEST), "must be a JSON object")
        row = _Row(document, where=self.where(MANIFEST), line=None)  # one document, not lines
        if document.get("format") != ARCHIVE_FORMAT:
            raise row.error(f"is {document.get('format')!r}, not '{ARCHIVE_FORMAT}'", "format")
        version = document.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise row.error("must be a positive integer", "version")
        if version != ARCHIVE_VERSION:
            newer = "; a newer simapp wrote it" if version > ARCHIVE_VERSION else ""
            raise row.error(
                f"is version {version} of the archive format, which this simapp cannot read (it reads "
                f"version {ARCHIVE_VERSION}){newer}",
                "version",
            )
        row.expect(("format", "version", "dataset", "created_at", "tables", "artifacts"))
        tables = row.values["tables"]
        if not isinstance(tables, dict):
            raise row.error("must be a JSON object of row counts by table", "tables")
        counts: dict[str, int] = {}
        for table in TABLES:
            count = tables.get(table)
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise row.error(f"needs the number of rows of '{table}'", "tables")
            counts[table] = count
        unknown = sorted(set(tables) - set(TABLES))
        if unknown:
            raise row.error(f"unknown table '{unknown[0]}'; valid: {', '.join(TABLES)}", "tables")
        if counts["dataset"] != 1:
            raise row.error("must give 1 row for 'dataset'", "tables")
        artifacts = row.values["artifacts"]
        if (
            not isinstance(artifacts, list)
            or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in artifacts)
            or len(set(artifacts)) != len(artifacts)
        ):
            raise row.error("must be a list of distinct model version numbers", "artifacts")
        moment = row.moment("created_at")
        assert moment is not None
        return _Manifest(
            dataset=row.string("dataset", empty=False), created_at=moment, tables=counts, artifacts=artifacts
        )

    def rows(self, table: str, *, expected: int) -> Iterator[_Row]:
        """The rows of ``table``: exactly ``expected`` JSON objects, one per line."""
        member = member_name(table)
        where = self.where(member)
        try:
            stream = self.zf.open(member)
        except KeyError:
            raise self.error(f"has no {member}: a damaged archive") from None
        except _ZIP_ERRORS as exc:
            raise DataFormatError(where, f"is damaged ({exc})") from None
        count = 0
        with stream:
            try:
                for number, raw in enumerate(stream, start=1):
                    if number > expected:
                        raise DataFormatError(
                            where, f"holds more rows than the {expected} of the manifest", line=number
                        )
                    if not raw.endswith(b"\n"):
                        raise DataFormatError(
                            where, "is cut off (no line end): a truncated archive", line=number
                        )
                    try:
                        text = raw.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        raise DataFormatError(
                            where, f"is not UTF-8 (byte {exc.start + 1})", line=number
                        ) from None
                    try:
                        values = json.loads(text, parse_constant=_reject_constant)
                    except (ValueError, RecursionError) as exc:
                        raise DataFormatError(where, f"is not valid JSON ({exc})", line=number) from None
                    if not isinstance(values, dict):
                        raise DataFormatError(where, "must be a JSON object", line=number)
                    count = number
                    yield _Row(values, where=where, line=number)
            except _ZIP_ERRORS as exc:
                raise DataFormatError(where, f"is damaged ({exc})") from None
        if count != expected:
            raise DataFormatError(
                where, f"holds {count} rows, but the manifest gives {expected}: a truncated or edited archive"
            )


def _validation_message(exc: ValidationError) -> tuple[str | None, str]:
    if hasattr(exc, "error_dict"):
        name, errors = next(iter(exc.message_dict.items()))
        return (None if name == "__all__" else name), errors[0]
    return None, exc.messages[0]


def _restore_timestamps(model: type[Model], objs: list[Any], values: list[dict[str, Any]]) -> None:
    """Give rows just created by ``bulk_create`` the archive's timestamps: ``bulk_create`` stamps
    ``auto_now``/``auto_now_add`` fields with the current time, whatever the objects hold.

    One ``UPDATE … FROM (VALUES …)`` per 500 rows, which PostgreSQL and SQLite (3.33+) both read; Django's
    ``bulk_update`` builds a ``CASE`` per row and field, which took 50 s of a 65 s import of 20,000 items.
    """
    if not objs:
        return
    names = list(values[0])
    ops = connection.ops
    if connection.vendor not in ("postgresql", "sqlite") or (
        connection.vendor == "sqlite" and sqlite3.sqlite_version_info < (3, 33)
    ):
        for obj, stamps in zip(objs, values, strict=True):
            for name, value in stamps.items():
                setattr(obj, name, value)
        model.objects.bulk_update(objs, names, batch_size=500)  # type: ignore[attr-defined]
        return
    table = ops.quote_name(model._meta.db_table)
    columns = [ops.quote_name(model._meta.get_field(name).column) for name in names]
    assignments = ", ".join(f"{column} = v.column{n}" for n, column in enumerate(columns, start=2))
    where = f"{table}.{ops.quote_name(model._meta.pk.column)} = v.column1"
    row = "(" + ", ".join(["%s"] * (1 + len(names))) + ")"
    with connection.cursor() as cursor:
        for start in range(0, len(objs), 500):
            chunk = list(zip(objs[start : start + 500], values[start : start + 500], strict=True))
            params: list[Any] = []
            for obj, stamps in chunk:
                params.append(obj.pk)
                params.extend(ops.adapt_datetimefield_value(stamps[name]) for name in names)
            cursor.execute(
                f"UPDATE {table} SET {assignments} FROM (VALUES {', '.join([row] * len(chunk))}) AS v "
                f"WHERE {where}",
                params,
            )


class _Restore:
    """One import: reads the tables in order and writes them in batches, all in one transaction."""

    def __init__(
        self,
        archive: _ArchiveReader,
        manifest: _Manifest,
        *,
        slug: str | None,
        on_progress: ProgressCallback | None,
    ) -> None:
        self.archive = archive
        self.manifest = manifest
        self.slug = slug or manifest.dataset
        self.on_progress = on_progress
        self.result = ArchiveImportResult(dataset=self.slug, archived_as=manifest.dataset)
        self.users: dict[str, Any] = {}
        self.item_ids: dict[str, int] = {}
        self.pair_ids: dict[int, int] = {}  # archive id -> database id, for the pairs feedback refers to
        self.run_ids: dict[int, int] = {}
        self.version_ids: dict[int, int] = {}  # number -> database id
        self.dataset: Dataset | None = None

    def rows(self, table: str) -> Iterator[_Row]:
        return self.archive.rows(table, expected=self.manifest.tables[table])

    def progress(self, table: str, done: int) -> None:
        if self.on_progress:
            self.on_progress(table, done, self.manifest.tables[table])

    def run(self) -> ArchiveImportResult:
        self._check_target()
        limit = import_row_limit()
        rows = self.manifest.tables["items"] + self.manifest.tables["pairs"]
        if rows > limit:
            raise self.archive.error(too_many_import_rows(limit=limit, rows=rows))
        referenced_pairs = self._feedback_pair_refs()
        # Beside models/, on the same file system, so that moving a model directory into place is atomic.
        staging = Path(settings.DATA_DIR) / f".restore-{uuid.uuid4().hex}"
        moved: list[tuple[Path, Path | None]] = []
        try:
            with transaction.atomic():
                self._dataset()
                self._users()
                self._items()
                self._pairs(referenced_pairs)
                self._runs()
                self._versions()
                self._feedback()
                self._scores()
                self._artifacts(staging, moved)
        except BaseException:
            # The transaction rolled back; put back the data directory as it was.
            for target, aside in reversed(moved):
                shutil.rmtree(target, ignore_errors=True)
                if aside is not None:
                    aside.replace(target)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.result.tables = dict(self.manifest.tables)
        return self.result

    def _check_target(self) -> None:
        try:
            Dataset._meta.get_field("slug").clean(self.slug, None)
        except ValidationError as exc:
            raise self.archive.error(f"cannot be restored as '{self.slug}': {exc.messages[0]}") from None
        if Dataset.objects.filter(slug=self.slug).exists():
            raise self._exists()

    def _exists(self) -> DataFormatError:
        return self.archive.error(
            f"dataset '{self.slug}' exists already; delete it first, or restore the archive under another slug"
        )

    def _feedback_pair_refs(self) -> set[int]:
        refs: set[int] = set()
        for row in self.rows("anomaly_feedback"):
            row.expect(FIELDS["anomaly_feedback"])
            refs.update(self._feedback_refs(row))
        return refs

    @staticmethod
    def _feedback_refs(row: _Row) -> list[int]:
        refs = row.values.get("pairs")
        if not isinstance(refs, list) or any(isinstance(r, bool) or not isinstance(r, int) for r in refs):
            raise row.error("must be a list of pairs ids", "pairs")
        return refs

    # -- tables ---------------------------------------------------------------------------------------

    def _dataset(self) -> None:
        (row,) = list(self.rows("dataset"))
        row.expect(FIELDS["dataset"])
        if row.string("slug") != self.manifest.dataset:
            raise row.error(
                f"is '{row.values['slug']}', but the manifest gives '{self.manifest.dataset}'", "slug"
            )
        dataset = Dataset(
            slug=self.slug,
            name=row.string("name"),
            description=row.string("description"),
            modality=row.choice("modality", Dataset.Modality.values),
            encoder=row.string("encoder"),
            vector_dim=row.integer("vector_dim", minimum=1, null=True),
            settings=row.json("settings", dict),
        )
        try:
            dataset.full_clean(validate_unique=False)
        except ValidationError as exc:
            name, message = _validation_message(exc)
            raise row.error(message, name) from None
        try:
            with transaction.atomic():
                dataset.save()
        except IntegrityError:  # created meanwhile by another request
            raise self._exists() from None
        Dataset.objects.filter(pk=dataset.pk).update(
            created_at=row.moment("created_at"), updated_at=row.moment("updated_at")
        )
        self.dataset = dataset
        self.progress("dataset", 1)

    def _users(self) -> None:
        user_model = get_user_model()
        username_field = user_model._meta.get_field(user_model.USERNAME_FIELD)
        names: dict[str, int] = {}
        for row in self.rows("users"):
            row.expect(FIELDS["users"])
            name = row.string("username", empty=False)
            try:
                username_field.clean(name, None)
            except ValidationError as exc:
                raise row.error(exc.messages[0], "username") from None
            if name in names:
                raise row.error(f"duplicate user '{name}' (first at line {names[name]})", "username")
            names[name] = row.line
        found = {
            getattr(user, user_model.USERNAME_FIELD): user
            for user in user_model.objects.filter(**{f"{user_model.USERNAME_FIELD}__in": list(names)})
        }
        for name in names:
            user = found.get(name)
            if user is None:
                user = user_model(**{user_model.USERNAME_FIELD: name, "is_active": False})
                user.set_unusable_password()
                user.save()
                self.result.users_created.append(name)
            self.users[name] = user
        self.progress("users", len(names))

    def _items(self) -> None:
        dataset = self.dataset
        assert dataset is not None
        is_vector = dataset.modality == Dataset.Modality.VECTOR
        first_line: dict[str, int] = {}
        batch: list[Item] = []
        stamps: list[dict[str, Any]] = []
        done = 0

        def flush() -> None:
            nonlocal batch, stamps, done
            Item.objects.bulk_create(batch)
            _restore_timestamps(Item, batch, stamps)
            self.item_ids.update((item.key, item.pk) for item in batch)
            done += len(batch)
            self.progress("items", done)
            batch, stamps = [], []

        for row in self.rows("items"):
            row.expect(FIELDS["items"])
            key = row.string("key", max_length=MAX_KEY_LENGTH, empty=False)
            if key in first_line:
                raise row.error(f"duplicate key '{key}' (first at line {first_line[key]})", "key")
            first_line[key] = row.line
            text = row.string("text")
            vector = self._vector(row, dataset) if is_vector else None
            if not is_vector:
                if row.values["vector"] is not None:
                    raise row.error("must be null: this is a text dataset", "vector")
                if not text.strip():
                    raise row.error("is empty", "text")
            batch.append(
                Item(
                    dataset=dataset,
                    key=key,
                    text=text,
                    vector=vector,
                    label=row.string("label", max_length=MAX_LABEL_LENGTH),
                    metadata=row.json("metadata", dict),
                    content_hash=item_content_hash(text=text, vector=vector),
                )
            )
            stamps.append({"created_at": row.moment("created_at"), "updated_at": row.moment("updated_at")})
            if len(batch) >= _BATCH:
                flush()
        if batch:
            flush()

    @staticmethod
    def _vector(row: _Row, dataset: Dataset) -> list[float]:
        vector = row.values["vector"]
        if not isinstance(vector, list) or not vector:
            raise row.error("must be a non-empty list of numbers: this is a vector dataset", "vector")
        vector_numbers(vector, source=row.where, line=row.line)
        if len(vector) != dataset.vector_dim:
            raise row.error(
                f"has {len(vector)} numbers, but the dataset's vector_dim is {dataset.vector_dim}", "vector"
            )
        return vector

    def _pairs(self, referenced: set[int]) -> None:
        dataset = self.dataset
        assert dataset is not None
        seen_ids: set[int] = set()
        seen: dict[tuple[int, int, int | None], int] = {}
        batch: list[Pair] = []
        stamps: list[dict[str, Any]] = []
        refs: list[int] = []
        done = 0

        def flush() -> None:
            nonlocal batch, stamps, refs, done
            Pair.objects.bulk_create(batch)
            _restore_timestamps(Pair, batch, stamps)
            self.pair_ids.update(
                (ref, pair.pk) for ref, pair in zip(refs, batch, strict=True) if ref in referenced
            )
            done += len(batch)
            self.progress("pairs", done)
            batch, stamps, refs = [], [], []

        for row in self.rows("pairs"):
            row.expect(FIELDS["pairs"])
            ref = row.integer("id", minimum=1)
            assert ref is not None
            if ref in seen_ids:
                raise row.error(f"duplicate id {ref}", "id")
            seen_ids.add(ref)
            ends = [self._item_id(row, "a"), self._item_id(row, "b")]
            if ends[0] == ends[1]:
                raise row.error(f"a pair of item '{row.values['a']}' with itself", "b")
            a, b = sorted(ends)
            annotator = row.username("annotator", self.users)
            user = self.users[annotator] if annotator else None
            ident = (a, b, user.pk if user else None)
            if ident in seen:
                raise row.error(f"duplicate pair of the same annotator (first at line {seen[ident]})")
            seen[ident] = row.line
            batch.append(
                Pair(
                    dataset=dataset,
                    item_a_id=a,
                    item_b_id=b,
                    score=row.number("score", low=0.0, high=1.0),
                    annotator=user,
                    source=row.choice("source", Pair.Source.values),
                )
            )
            stamps.append({"created_at": row.moment("created_at"), "updated_at": row.moment("updated_at")})
            refs.append(ref)
            if len(batch) >= _BATCH:
                flush()
        if batch:
            flush()

    def _item_id(self, row: _Row, name: str) -> int:
        key = row.string(name)
        item_id = self.item_ids.get(key)
        if item_id is None:
            raise row.error(f"no item with key '{key}' in items.jsonl", name)
        return item_id

    def _runs(self) -> None:
        dataset = self.dataset
        assert dataset is not None
        runs: list[TrainingRun] = []
        stamps: list[dict[str, Any]] = []
        refs: list[int] = []
        for row in self.rows("training_runs"):
            row.expect(FIELDS["training_runs"])
            ref = row.integer("id", minimum=1)
            assert ref is not None
            if ref in self.run_ids or ref in refs:
                raise row.error(f"duplicate id {ref}", "id")
            status = row.choice("status", TrainingRun.Status.values)
            error = row.string("error", max_length=10000)
            finished_at = row.moment("finished_at", null=True)
            if status in TrainingRun.ACTIVE_STATUSES:
                # No worker has it here: end it as the heartbeat reaper ends a run whose worker died.
                error = f"interrupted: the run was {status} when the dataset was archived; it did not finish"
                status, finished_at = TrainingRun.Status.FAILED, self.manifest.created_at
                self.result.runs_interrupted += 1
            requested_by = row.username("requested_by", self.users)
            runs.append(
                TrainingRun(
                    dataset=dataset,
                    config=row.json("config", dict),
                    status=status,
                    stage=row.choice("stage", TrainingRun.Stage.values),
                    progress=row.number("progress", low=0.0, high=1.0),
                    stage_done=row.integer("stage_done"),
                    stage_total=row.integer("stage_total"),
                    loss_history=row.json("loss_history", list),
                    metrics=row.json("metrics", dict),
                    device=row.string("device", max_length=40),
                    worker=row.string("worker", max_length=200),
                    error=error,
                    cancel_requested=row.flag("cancel_requested"),
                    requested_by=self.users[requested_by] if requested_by else None,
                    started_at=row.moment("started_at", null=True),
                    heartbeat_at=row.moment("heartbeat_at", null=True),
                    finished_at=finished_at,
                )
            )
            stamps.append({"created_at": row.moment("created_at")})
            refs.append(ref)
        TrainingRun.objects.bulk_create(runs)
        _restore_timestamps(TrainingRun, runs, stamps)
        self.run_ids = {ref: run.pk for ref, run in zip(refs, runs, strict=True)}
        self.progress("training_runs", len(runs))

    def _versions(self) -> None:
        dataset = self.dataset
        assert dataset is not None
        versions: list[ModelVersion] = []
        stamps: list[dict[str, Any]] = []
        runs_used: dict[int, int] = {}
        active_line: int | None = None
        for row in self.rows("model_versions"):
            row.expect(FIELDS["model_versions"])
            number = row.integer("number", minimum=1)
            assert number is not None
            if number in self.version_ids:
                raise row.error(f"duplicate version number {number}", "number")
            run_ref = row.integer("run", minimum=1)
            assert run_ref is not None
            if run_ref not in self.run_ids:
                raise row.error(f"no run with id {run_ref} in training_runs.jsonl", "run")
            if run_ref in runs_used:
                raise row.error(f"run {run_ref} has a version already (line {runs_used[run_ref]})", "run")
            runs_used[run_ref] = row.line
            path = row.string("artifact_path", max_length=500, empty=False)
            if Path(path).is_absolute() or ".." in Path(path).parts:
                raise row.error(
                    "must be a path inside the data directory (relative, without '..')", "artifact_path"
                )
            if number in self.manifest.artifacts:
                path = str(model_dir(self.slug, number))
            row.string("collection", max_length=200)
            is_active = row.flag("is_active")
            if is_active:
                if active_line is not None:
                    raise row.error(f"a second active version (the first at line {active_line})", "is_active")
                active_line = row.line
                self.result.active_version = number
            versions.append(
                ModelVersion(
                    dataset=dataset,
                    run_id=self.run_ids[run_ref],
                    number=number,
                    artifact_path=path,
                    # The name of the version's index follows the slug, as the pipeline names it.
                    collection=index_collection(dataset, number),
                    metrics=row.json("metrics", dict),
                    is_active=is_active,
                    activated_at=row.moment("activated_at", null=True),
                )
            )
            stamps.append({"created_at": row.moment("created_at")})
            self.version_ids[number] = 0
        unknown = sorted(set(self.manifest.artifacts) - set(self.version_ids))
        if unknown:
            raise DataFormatError(
                self.archive.where(MANIFEST),
                f"has model files of v{unknown[0]}, which model_versions.jsonl lacks",
            )
        ModelVersion.objects.bulk_create(versions)
        _restore_timestamps(ModelVersion, versions, stamps)
        self.version_ids = {version.number: version.pk for version in versions}
        self.progress("model_versions", len(versions))

    def _feedback(self) -> None:
        seen: dict[tuple[int, str], int] = {}
        feedback: list[AnomalyFeedback] = []
        stamps: list[dict[str, Any]] = []
        for row in self.rows("anomaly_feedback"):
            row.expect(FIELDS["anomaly_feedback"])
            item_id = self._item_id(row, "item")
            username = row.username("user", self.users, null=False)
            assert username is not None
            ident = (item_id, username)
            if ident in seen:
                raise row.error(
                    f"a second verdict of '{username}' on this item (first at line {seen[ident]})"
                )
            seen[ident] = row.line
            pair_ids = []
            for ref in self._feedback_refs(row):
                if ref not in self.pair_ids:
                    raise row.error(f"no pair with id {ref} in pairs.jsonl", "pairs")
                pair_ids.append(self.pair_ids[ref])
            feedback.append(
                AnomalyFeedback(
                    item_id=item_id,
                    user=self.users[username],
                    verdict=row.choice("verdict", AnomalyFeedback.Verdict.values),
                    pair_ids=pair_ids,
                )
            )
            stamps.append({"created_at": row.moment("created_at"), "updated_at": row.moment("updated_at")})
            if len(feedback) >= _BATCH:
                self._write_feedback(feedback, stamps, done=row.line)
                feedback, stamps = [], []
        self._write_feedback(feedback, stamps, done=self.manifest.tables["anomaly_feedback"])

    def _write_feedback(
        self, feedback: list[AnomalyFeedback], stamps: list[dict[str, Any]], *, done: int
    ) -> None:
        AnomalyFeedback.objects.bulk_create(feedback)
        _restore_timestamps(AnomalyFeedback, feedback, stamps)
        self.progress("anomaly_feedback", done)

    def _scores(self) -> None:
        seen: set[tuple[int, int]] = set()
        batch: list[AnomalyScore] = []
        done = 0
        for row in self.rows("anomaly_scores"):
            row.expect(FIELDS["anomaly_scores"])
            number = row.integer("version", minimum=1)
            if number not in self.version_ids:
                raise row.error(f"no version {number} in model_versions.jsonl", "version")
            item_id = self._item_id(row, "item")
            if (number, item_id) in seen:
                raise row.error(f"a second score of item '{row.values['item']}' under version {number}")
            seen.add((number, item_id))
            batch.append(
                AnomalyScore(version_id=self.version_ids[number], item_id=item_id, score=row.number("score"))
            )
            if len(batch) >= 5000:
                AnomalyScore.objects.bulk_create(batch)
                done += len(batch)
                self.progress("anomaly_scores", done)
                batch = []
        AnomalyScore.objects.bulk_create(batch)
        self.progress("anomaly_scores", done + len(batch))

    def _artifacts(self, staging: Path, moved: list[tuple[Path, Path | None]]) -> None:
        """Extract the model files to ``staging``, check each model loads, then move them into place."""
        members: dict[int, list[tuple[zipfile.ZipInfo, str]]] = {n: [] for n in self.manifest.artifacts}
        known = {MANIFEST, *(member_name(table) for table in TABLES)}
        for info in self.archive.zf.infolist():
            if info.filename in known or (info.is_dir() and info.filename.startswith("artifacts/")):
                continue
            match = _ARTIFACT.fullmatch(info.filename)
            if match is None:
                raise self.archive.error(f"holds an unexpected member '{info.filename}'")
            number = int(match[1])
            if number not in members:
                raise self.archive.error(
                    f"holds model files of v{number} ('{info.filename}'), which the manifest does not list"
                )
            members[number].append((info, match[2]))
        for number, files in members.items():
            directory = staging / "new" / f"v{number}"
            for info, relative in files:
                target = directory / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with self.archive.zf.open(info) as source, target.open("wb") as out:
                        shutil.copyfileobj(source, out)
                except _ZIP_ERRORS as exc:
                    raise DataFormatError(self.archive.where(info.filename), f"is damaged ({exc})") from None
            where = self.archive.where(f"artifacts/v{number}/")
            if not (directory / MODEL_FILE).is_file():
                raise DataFormatError(where, f"has no {MODEL_FILE}")
            try:
                SimilarityModel.load(directory)
            except Exception as exc:
                raise DataFormatError(
                    where, f"is not a model simapp can load ({type(exc).__name__}: {exc})"
                ) from None
        models = Path(settings.DATA_DIR)
        for number in sorted(members):
            target = models / model_dir(self.slug, number)
            aside = None
            if target.exists():
                # Left by a deleted dataset of this slug: nothing refers to it any more.
                aside = staging / "old" / f"v{number}"
                aside.parent.mkdir(parents=True, exist_ok=True)
                target.replace(aside)
            target.parent.mkdir(parents=True, exist_ok=True)
            (staging / "new" / f"v{number}").replace(target)
            moved.append((target, aside))
            self.result.artifacts.append(number)
