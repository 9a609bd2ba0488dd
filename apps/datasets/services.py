"""Writes to datasets: create, import (files, API records), export.

Every import is validated completely before anything is written, then written in one transaction, so a
bad input changes nothing. Items are identified by key: importing the same data again adds nothing, and an
item whose text, vector, label or metadata changed is updated in place (its content hash follows, so the
embedding cache never serves a stale vector). Pairs are stored once per unordered pair and annotator.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import IO, Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from apps.common.limits import import_row_limit, too_many_import_rows
from apps.datasets.formats import (
    ColumnNames,
    DataFormatError,
    ItemRecord,
    Notice,
    PairRecord,
    Record,
    parse_item,
    read_records,
    text_hash,
    vector_hash,
)
from apps.datasets.models import Dataset, Item
from apps.datasets.signals import (
    dataset_deleting,
    dataset_will_be_deleted,
    items_changed,
    items_deleted,
    items_will_change,
)
from apps.labelling.models import Pair

DEFAULT_ENCODERS = {Dataset.Modality.TEXT: "minilm", Dataset.Modality.VECTOR: "vector"}
_BATCH = 2000

# (stage, done, total): stage "read" counts bytes of the input, "write" counts rows stored.
ProgressCallback = Callable[[str, int, int], None]
_IN_CHUNK = 900  # stays under SQLite's bound-parameter limit in `IN (...)` queries


@dataclass
class ImportResult:
    dataset: str
    dataset_created: bool = False
    items_created: int = 0
    items_updated: int = 0
    items_unchanged: int = 0
    pairs_created: int = 0
    pairs_updated: int = 0
    pairs_unchanged: int = 0
    notices: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{self.dataset}: items +{self.items_created} new, {self.items_updated} updated, "
            f"{self.items_unchanged} unchanged; pairs +{self.pairs_created} new, {self.pairs_updated} updated, "
            f"{self.pairs_unchanged} unchanged"
        )


def dataset_create(
    *,
    slug: str,
    name: str = "",
    modality: str = Dataset.Modality.TEXT,
    encoder: str = "",
    description: str = "",
    settings: dict[str, Any] | None = None,
) -> Dataset:
    dataset = Dataset(
        slug=slug,
        name=name or slug,
        modality=modality,
        encoder=encoder or DEFAULT_ENCODERS[Dataset.Modality(modality)],
        description=description,
        settings=settings or {},
    )
    dataset.full_clean()
    dataset.save()
    return dataset


def dataset_update(*, dataset: Dataset, **changes: Any) -> Dataset:
    """Change fields of ``dataset`` (the caller checks that only a dataset without items changes modality).

    The encoder follows the modality: left blank, or left at the old modality's default when the modality
    changes, it becomes the new modality's default, as ``dataset_create`` would have chosen.
    """
    old_modality = dataset.modality
    for name, value in changes.items():
        setattr(dataset, name, value)
    if dataset.modality != old_modality:
        dataset.vector_dim = None  # fixed by the first import of vectors, of which there are none
        if "encoder" not in changes and dataset.encoder == DEFAULT_ENCODERS[Dataset.Modality(old_modality)]:
            dataset.encoder = ""
    dataset.encoder = dataset.encoder or DEFAULT_ENCODERS[Dataset.Modality(dataset.modality)]
    dataset.full_clean()
    dataset.save()
    return dataset


def dataset_delete(*, dataset: Dataset) -> None:
    """Delete ``dataset`` and everything of it: items, pairs, anomaly feedback and, through the listeners of
    ``dataset_deleting``, its training runs, model versions (with their anomaly scores), index and model
    files.

    Listeners of ``dataset_will_be_deleted`` may refuse first (``DatasetDeleteRefused``: a training run of
    it is queued or running; ``DatasetDeleteUnavailable``: its index cannot be reached), and nothing is
    deleted. The rows go in one transaction; what lives outside the database is dropped after it commits,
    so a deletion that fails or rolls back leaves the index and the files as they were.
    """
    # A listener may refuse: nothing is deleted yet.
    dataset_will_be_deleted.send(sender=Dataset, dataset=dataset)
    with transaction.atomic():
        # Locked, so that a concurrent deletion of the same dataset waits here and then finds nothing.
        if not Dataset.objects.select_for_update().filter(pk=dataset.pk).exists():
            return
        dataset_deleting.send(sender=Dataset, dataset=dataset)
        dataset.delete()


def dataset_import(
    *,
    slug: str,
    fp: IO[bytes],
    source_name: str,
    fmt: str,
    split: str | None = None,
    columns: ColumnNames | None = None,
    create_missing: bool = True,
    name: str = "",
    on_progress: ProgressCallback | None = None,
    total_bytes: int = 0,
) -> ImportResult:
    """Import one file into dataset ``slug`` (created when missing and ``create_missing``).

    Raises ``DataFormatError`` (one line: file, line, field) and leaves the database untouched on any
    problem with the input.
    """
    records = read_records(
        fp,
        fmt=fmt,
        source=source_name,
        split=split,
        columns=columns,
        on_progress=(lambda done, total: on_progress("read", done, total)) if on_progress else None,
        total_bytes=total_bytes,
    )
    return dataset_records_save(
        slug=slug,
        records=records,
        source_name=source_name,
        pair_source=Pair.Source.IMPORT,
        create_missing=create_missing,
        name=name,
        on_progress=on_progress,
    )


def dataset_records_save(
    *,
    slug: str,
    records: Iterable[Record],
    source_name: str,
    pair_source: str,
    annotator: Any = None,
    create_missing: bool = False,
    name: str = "",
    unit: str = "line",
    on_progress: ProgressCallback | None = None,
) -> ImportResult:
    """Validate and store items and pairs, all or nothing.

    ``annotator`` (a user) is recorded on pairs that do not name one; ``pair_source`` likewise. Errors
    locate records by ``unit`` and their ``line`` number ("line" for files, "entry" for API lists).
    """
    where = _Where(source_name, unit)
    dataset = Dataset.objects.filter(slug=slug).first()
    if dataset is None and not create_missing:
        raise where.error(f"no dataset '{slug}'")
    if dataset is None:
        _check_new_dataset(slug=slug, name=name or slug)  # before reading a file that may be large
    batch = _collect(_within_row_limit(records, where=where), dataset=dataset, where=where)
    if not batch.items and not batch.pairs:
        raise where.error("holds no items or pairs")
    _check_sources(batch, where=where)
    users = _annotators(batch, where=where)
    _check_unknown_keys(batch, dataset=dataset, where=where)

    if dataset is not None and batch.items:
        items_will_change.send(sender=Item, dataset=dataset)  # a listener may refuse: nothing written yet
    result = ImportResult(dataset=slug, notices=batch.notices)
    with transaction.atomic():
        if dataset is None:
            dataset = dataset_create(
                slug=slug, name=name or slug, modality=batch.modality or Dataset.Modality.TEXT
            )
            result.dataset_created = True
        if batch.vector_dim and dataset.vector_dim is None:
            dataset.vector_dim = batch.vector_dim
            dataset.save(update_fields=["vector_dim", "updated_at"])
        writer = _Writer(total=len(batch.items) + len(batch.pairs), on_progress=on_progress)
        key_to_id, changed_ids = _write_items(dataset, batch.items, result, writer)
        _write_pairs(dataset, batch.pairs, key_to_id, users, annotator, pair_source, result, writer)
        if changed_ids:
            # After commit, so listeners (the index) only ever see stored items.
            changed = dataset
            transaction.on_commit(
                lambda: items_changed.send(sender=Item, dataset=changed, item_ids=changed_ids)
            )
    return result


def item_validate(*, dataset: Dataset, values: dict[str, Any]) -> ItemRecord:
    """The item that ``values`` (key, text or vector, label, metadata) give, checked as an import into
    ``dataset`` checks it. Raises ``DataFormatError`` naming the field."""
    where = _Where("", "entry")
    content = "vector" if dataset.modality == Dataset.Modality.VECTOR else "text"
    values = {name: value for name, value in values.items() if value not in (None, "")}
    if "text" not in values and "vector" not in values:
        raise where.error("is missing", field=content)
    record = parse_item(values, source="")
    _collect([record], dataset=dataset, where=where)
    return record


def items_delete(*, dataset: Dataset, item_ids: list[int]) -> int:
    """Delete items (their pairs go with them); listeners drop them from the index after commit."""
    items_will_change.send(sender=Item, dataset=dataset)  # a listener may refuse: nothing deleted yet
    with transaction.atomic():
        ids = list(Item.objects.filter(dataset=dataset, pk__in=item_ids).values_list("id", flat=True))
        Item.objects.filter(pk__in=ids).delete()
        if ids:
            transaction.on_commit(lambda: items_deleted.send(sender=Item, dataset=dataset, item_ids=ids))
    return len(ids)


# ---------------------------------------------------------------------------------------------------
# Validation (no writes)


@dataclass(frozen=True)
class _Where:
    """Where records came from, to say where a problem is: ``source, <unit> N, field 'f': …``."""

    source: str
    unit: str

    def error(self, message: str, *, line: int | None = None, field: str | None = None) -> DataFormatError:
        return DataFormatError(self.source, message, line=line, field=field, unit=self.unit)


@dataclass
class _Batch:
    items: dict[str, ItemRecord] = field(default_factory=dict)
    pairs: dict[tuple[str, str, str | None], PairRecord] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    modality: str | None = None
    vector_dim: int | None = None


def _collect(records: Iterable[Record], *, dataset: Dataset | None, where: _Where) -> _Batch:
    batch = _Batch()
    if dataset is not None:
        batch.modality = dataset.modality
        batch.vector_dim = dataset.vector_dim
    modality_line: int | None = None
    dim_line: int | None = None
    for record in records:
        if isinstance(record, Notice):
            batch.notices.append(record.message)
            continue
        _check_storable(record, where=where)
        if isinstance(record, ItemRecord):
            if record.vector is None and not record.text.strip():
                # The file readers refuse it too; this is for records from the API and forms.
                raise where.error("is empty", line=record.line, field="text")
            modality = Dataset.Modality.VECTOR if record.vector is not None else Dataset.Modality.TEXT
            if batch.modality is None:
                batch.modality, modality_line = modality, record.line
            elif modality != batch.modality:
                cause = f"{where.unit} {modality_line}" if modality_line else f"dataset '{dataset}'"
                raise where.error(
                    f"is a {modality} item, but {cause} makes this a {batch.modality} dataset",
                    line=record.line,
                    field="vector" if record.vector is not None else "text",
                )
            if record.vector is not None:
                if batch.vector_dim is None:
                    batch.vector_dim, dim_line = len(record.vector), record.line
                elif len(record.vector) != batch.vector_dim:
                    cause = f"{where.unit} {dim_line}" if dim_line else f"dataset '{dataset}'"
                    raise where.error(
                        f"has {len(record.vector)} numbers, but {cause} has {batch.vector_dim}",
                        line=record.line,
                        field="vector",
                    )
            previous = batch.items.get(record.key)
            if previous is not None:
                raise where.error(
                    f"duplicate key '{record.key}' (first at {where.unit} {previous.line})",
                    line=record.line,
                    field="key",
                )
            batch.items[record.key] = record
        elif isinstance(record, PairRecord):
            if record.a == record.b:
                raise where.error(f"a pair of item '{record.a}' with itself", line=record.line, field="b")
            a, b = sorted((record.a, record.b))
            ident = (a, b, record.annotator)
            previous_pair = batch.pairs.get(ident)
            if previous_pair is not None:
                raise where.error(
                    f"duplicate pair ('{a}', '{b}') (first at {where.unit} {previous_pair.line})",
                    line=record.line,
                )
            batch.pairs[ident] = record
    return batch


def _within_row_limit(records: Iterable[Record], *, where: _Where) -> Iterator[Record]:
    """``records``, refused with ``DataFormatError`` at the first item or pair over
    ``SIMAPP_MAX_IMPORT_ROWS``: the reader stops there, so an oversized file is not read to its end."""
    limit = import_row_limit()
    rows = 0
    for record in records:
        if not isinstance(record, Notice):
            rows += 1
            if rows > limit:
                raise where.error(too_many_import_rows(limit=limit))
        yield record


def _check_new_dataset(*, slug: str, name: str) -> None:
    """Refuse a slug or name that ``dataset_create`` would, as a one-line ``DataFormatError``."""
    candidate = Dataset(slug=slug, name=name, encoder=DEFAULT_ENCODERS[Dataset.Modality.TEXT])
    try:
        candidate.full_clean(validate_unique=False)
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise DataFormatError("", f"cannot create dataset '{slug}': {field}: {messages[0]}") from None


_NUL_MESSAGE = "contains a NUL character, which the database cannot store"
_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why the database cannot store the text ``value``, or None when it can."""
    if "\x00" in value:
        return _NUL_MESSAGE
    # A JSON string may spell half of a UTF-16 pair ("\\ud800"), which Python reads but no UTF-8 holds.
    surrogate = _SURROGATE.search(value)
    if surrogate:
        return f"contains a lone surrogate (U+{ord(surrogate.group()):04X}), which is not valid Unicode text"
    return None


def _check_storable(record: ItemRecord | PairRecord, *, where: _Where) -> None:
    """Refuse values the database would reject mid-import (a 500 or a traceback, not a located error).

    PostgreSQL stores no NUL character in text or jsonb (a JSON string may spell one as "\\u0000") and no
    lone surrogate (nor does UTF-8), and JSON has no NaN or infinity (which Python's json reads, and 1e400
    overflows to). A vector's numbers were checked where it was read (``formats.vector_numbers``).
    """
    if isinstance(record, ItemRecord):
        strings = {"key": record.key, "text": record.text, "label": record.label}
    else:
        strings = {"a": record.a, "b": record.b, "annotator": record.annotator or ""}
    for name, value in strings.items():
        problem = text_problem(value)
        if problem:
            raise where.error(problem, line=record.line, field=name)
    if isinstance(record, ItemRecord):
        problem = json_value_problem(record.metadata)
        if problem:
            raise where.error(problem, line=record.line, field="metadata")


def json_value_problem(value: Any) -> str | None:
    """Why the database cannot store JSON ``value`` (metadata, settings), or None when it can."""
    # Iterative: metadata may be nested as deeply as json.loads allows, deeper than a recursion here could.
    pending = [value]
    while pending:
        current = pending.pop()
        if isinstance(current, dict):
            for name in current:
                problem = text_problem(name)
                if problem:
                    return problem
            pending.extend(current.values())
        elif isinstance(current, list):
            pending.extend(current)
        elif isinstance(current, str) and (problem := text_problem(current)):
            return problem
        elif isinstance(current, float) and not math.isfinite(current):
            return f"contains the number {current}; JSON numbers must be finite"
    return None


def _same_json(first: Any, second: Any) -> bool:
    """Whether two JSON values are the same, as stored metadata and as read again.

    Not ``==``: it holds True == 1 (so {"flag": true} would never replace {"flag": 1}), and PostgreSQL's
    jsonb hands a float such as 5.972e24 back as the integer 5972000000000000000000000, which ``==`` tells
    apart from the float, so re-importing the same file would update the item every time.
    """
    pending = [(first, second)]
    while pending:
        a, b = pending.pop()
        if isinstance(a, bool) or isinstance(b, bool):
            same = a is b
        elif isinstance(a, int | float) and isinstance(b, int | float):
            same = a == b or (isinstance(a, float) != isinstance(b, float) and _same_float(a, b))
        elif isinstance(a, dict) and isinstance(b, dict):
            same = a.keys() == b.keys()
            pending.extend((a[name], b[name]) for name in a)
        elif isinstance(a, list) and isinstance(b, list):
            same = len(a) == len(b)
            pending.extend(zip(a, b, strict=False))
        else:
            same = type(a) is type(b) and a == b
        if not same:
            return False
    return True


def _same_float(a: int | float, b: int | float) -> bool:
    try:
        return float(a) == float(b)
    except OverflowError:  # an integer beyond float range equals no float
        return False


def _check_unknown_keys(batch: _Batch, *, dataset: Dataset | None, where: _Where) -> None:
    referenced: dict[str, tuple[int, str]] = {}
    for record in batch.pairs.values():
        for end, key in (("a", record.a), ("b", record.b)):
            if key not in batch.items and key not in referenced:
                referenced[key] = (record.line, end)
    if not referenced:
        return
    known: set[str] = set()
    if dataset is not None:
        keys = list(referenced)
        for start in range(0, len(keys), _IN_CHUNK):
            chunk = keys[start : start + _IN_CHUNK]
            known.update(Item.objects.filter(dataset=dataset, key__in=chunk).values_list("key", flat=True))
    unknown = [key for key in referenced if key not in known]
    if unknown:
        key = min(unknown, key=lambda k: referenced[k][0])
        line, end = referenced[key]
        container = "this file" if where.unit == "line" else "this request"
        scope = f"{container} or dataset '{dataset.slug}'" if dataset else container
        raise where.error(f"no item with key '{key}' in {scope}", line=line, field=end)


def _check_sources(batch: _Batch, *, where: _Where) -> None:
    for record in batch.pairs.values():
        if record.source and record.source not in Pair.Source.values:
            raise where.error(
                f"unknown source '{record.source}'; valid: {', '.join(Pair.Source.values)}",
                line=record.line,
                field="source",
            )


def _annotators(batch: _Batch, *, where: _Where) -> dict[str, Any]:
    names = {r.annotator for r in batch.pairs.values() if r.annotator}
    if not names:
        return {}
    users = {u.get_username(): u for u in get_user_model().objects.filter(username__in=names)}
    for record in batch.pairs.values():
        if record.annotator and record.annotator not in users:
            raise where.error(f"no user '{record.annotator}'", line=record.line, field="annotator")
    return users


# ---------------------------------------------------------------------------------------------------
# Writing (inside the caller's transaction)


def item_content_hash(*, text: str, vector: list[float] | None) -> str:
    return vector_hash(vector) if vector is not None else text_hash(text)


@dataclass
class _Writer:
    """Bulk writes in batches, reporting rows handled (written or found unchanged) as it goes."""

    total: int
    on_progress: ProgressCallback | None
    done: int = 0

    def advance(self, rows: int) -> None:
        self.done += rows
        if self.on_progress:
            self.on_progress("write", self.done, self.total)

    def create(self, model: type[Item] | type[Pair], objs: list[Any]) -> None:
        for start in range(0, len(objs), _BATCH):
            chunk = objs[start : start + _BATCH]
            model.objects.bulk_create(chunk)
            self.advance(len(chunk))

    def update(self, model: type[Item] | type[Pair], objs: list[Any], fields: list[str]) -> None:
        for start in range(0, len(objs), _BATCH // 2):
            chunk = objs[start : start + _BATCH // 2]
            model.objects.bulk_update(chunk, fields)
            self.advance(len(chunk))


def _write_items(
    dataset: Dataset, records: dict[str, ItemRecord], result: ImportResult, writer: _Writer
) -> tuple[dict[str, int], list[int]]:
    """Create new items, update changed ones; returns key → id and the ids of created or updated items."""
    existing = {
        key: (pk, content_hash, label, metadata)
        for pk, key, content_hash, label, metadata in Item.objects.filter(dataset=dataset).values_list(
            "id", "key", "content_hash", "label", "metadata"
        )
    }
    key_to_id = {key: row[0] for key, row in existing.items()}
    now = timezone.now()
    to_create: list[Item] = []
    to_update: list[Item] = []
    for key, record in records.items():
        content = item_content_hash(text=record.text, vector=record.vector)
        row = existing.get(key)
        if row is None:
            to_create.append(
                Item(
                    dataset=dataset,
                    key=key,
                    text=record.text,
                    vector=record.vector,
                    label=record.label,
                    metadata=record.metadata,
                    content_hash=content,
                )
            )
        elif row[1:3] != (content, record.label) or not _same_json(row[3], record.metadata):
            to_update.append(
                Item(
                    id=row[0],
                    text=record.text,
                    vector=record.vector,
                    label=record.label,
                    metadata=record.metadata,
                    content_hash=content,
                    updated_at=now,
                )
            )
        else:
            result.items_unchanged += 1
    writer.advance(result.items_unchanged)
    writer.create(Item, to_create)
    writer.update(Item, to_update, ["text", "vector", "label", "metadata", "content_hash", "updated_at"])
    result.items_created = len(to_create)
    result.items_updated = len(to_update)
    if to_create:
        if connection.features.can_return_rows_from_bulk_insert:
            key_to_id.update((item.key, item.pk) for item in to_create)
        else:  # pragma: no cover - both supported backends return ids
            key_to_id.update(Item.objects.filter(dataset=dataset).values_list("key", "id"))
    changed_ids = [key_to_id[item.key] for item in to_create] + [item.pk for item in to_update]
    return key_to_id, changed_ids


def _write_pairs(
    dataset: Dataset,
    records: dict[tuple[str, str, str | None], PairRecord],
    key_to_id: dict[str, int],
    users: dict[str, Any],
    default_annotator: Any,
    default_source: str,
    result: ImportResult,
    writer: _Writer,
) -> None:
    if not records:
        return
    missing_keys = {k for r in records.values() for k in (r.a, r.b) if k not in key_to_id}
    if missing_keys:
        key_list = list(missing_keys)
        for start in range(0, len(key_list), _IN_CHUNK):
            chunk = key_list[start : start + _IN_CHUNK]
            key_to_id.update(Item.objects.filter(dataset=dataset, key__in=chunk).values_list("key", "id"))
    stored = Pair.objects.filter(dataset=dataset)
    involved = {key_to_id[k] for r in records.values() for k in (r.a, r.b)}
    if len(involved) <= _IN_CHUNK // 2:
        # A few labels (the label API sends one per request): read the pairs among their items only.
        # Reading every pair of the dataset made each label cost more as labels accumulated: 17 ms per
        # label in an empty dataset, 62 ms with 20,000 pairs (bench.load).
        stored = stored.filter(item_a_id__in=involved, item_b_id__in=involved)
    existing = {
        (a, b, annotator): (pk, score, source)
        for pk, a, b, annotator, score, source in stored.values_list(
            "id", "item_a_id", "item_b_id", "annotator_id", "score", "source"
        )
    }
    now = timezone.now()
    to_create: list[Pair] = []
    to_update: list[Pair] = []
    for record in records.values():
        ids = sorted((key_to_id[record.a], key_to_id[record.b]))
        user = users[record.annotator] if record.annotator else default_annotator
        source = record.source or default_source
        row = existing.get((ids[0], ids[1], user.pk if user else None))
        if row is None:
            to_create.append(
                Pair(
                    dataset=dataset,
                    item_a_id=ids[0],
                    item_b_id=ids[1],
                    score=record.score,
                    annotator=user,
                    source=source,
                )
            )
        elif row[1:] != (record.score, source):
            to_update.append(Pair(id=row[0], score=record.score, source=source, updated_at=now))
        else:
            result.pairs_unchanged += 1
    writer.advance(result.pairs_unchanged)
    writer.create(Pair, to_create)
    writer.update(Pair, to_update, ["score", "source", "updated_at"])
    result.pairs_created = len(to_create)
    result.pairs_updated = len(to_update)


# ---------------------------------------------------------------------------------------------------
# Export: import(export(dataset)) reproduces its items and pairs.

EXPORT_FORMATS = ("jsonl", "csv")


def dataset_export(*, dataset: Dataset, fmt: str) -> Iterator[str]:
    """Stream the dataset as text chunks in ``fmt`` (jsonl or csv): items first, then pairs."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format '{fmt}'; valid: {', '.join(EXPORT_FORMATS)}")
    return _export_jsonl(dataset) if fmt == "jsonl" else _export_csv(dataset)


def _export_items(dataset: Dataset) -> Iterator[dict[str, Any]]:
    is_vector = dataset.modality == Dataset.Modality.VECTOR
    rows = (
        Item.objects.filter(dataset=dataset)
        .order_by("id")
        .values_list("key", "text", "vector", "label", "metadata")
    )
    for key, text, vector, label, metadata in rows.iterator(chunk_size=_BATCH):
        item: dict[str, Any] = {"key": key}
        if is_vector:
            item["vector"] = vector
        else:
            item["text"] = text
        item["label"] = label
        item["metadata"] = metadata
        yield item


def _export_pairs(dataset: Dataset) -> Iterator[dict[str, Any]]:
    rows = (
        Pair.objects.filter(dataset=dataset)
        .order_by("id")
        .values_list("item_a__key", "item_b__key", "score", "annotator__username", "source")
    )
    for a, b, score, annotator, source in rows.iterator(chunk_size=_BATCH):
        yield {"a": a, "b": b, "score": score, "annotator": annotator, "source": source}


def _export_jsonl(dataset: Dataset) -> Iterator[str]:
    for item in _export_items(dataset):
        yield json.dumps(item, ensure_ascii=False) + "\n"
    for pair in _export_pairs(dataset):
        if pair["annotator"] is None:
            del pair["annotator"]
        yield json.dumps(pair, ensure_ascii=False) + "\n"


def _export_csv(dataset: Dataset) -> Iterator[str]:
    content = "vector" if dataset.modality == Dataset.Modality.VECTOR else "text"
    header = ["key", content, "label", "metadata", "a", "b", "score", "annotator", "source"]
    buffer = io.StringIO()
    # The csv module quotes a field only for the characters of the line terminator, so with "\n" alone a
    # text holding a bare "\r" would be written unquoted and could not be read back.
    writer = csv.writer(buffer, lineterminator="\r\n")

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writerow(header)
    for item in _export_items(dataset):
        value = json.dumps(item["vector"]) if content == "vector" else item["text"]
        writer.writerow(
            [item["key"], value, item["label"], json.dumps(item["metadata"], ensure_ascii=False)] + [""] * 5
        )
        if buffer.tell() > 1 << 16:
            yield flush()
    for pair in _export_pairs(dataset):
        writer.writerow(
            [
                "",
                "",
                "",
                "",
                pair["a"],
                pair["b"],
                repr(pair["score"]),
                pair["annotator"] or "",
                pair["source"],
            ]
        )
        if buffer.tell() > 1 << 16:
            yield flush()
    yield flush()
