"""Readers for the dataset file formats: csv, jsonl, clinc150, stsb, odds.

Django-free on purpose: each reader turns a binary stream into a stream of ``ItemRecord`` and
``PairRecord`` (plus ``Notice`` for things worth telling the user, e.g. skipped rows), reading the file
incrementally. Every problem with the input raises ``DataFormatError`` naming the file, the line (or row)
and the field, in one line. Validation that needs the database (unknown keys, modality of an existing
dataset) happens in ``apps.datasets.services``.

Pair scores are in [0, 1] (1 = same, 0 = unrelated). Records from files without keys get deterministic
keys (see each reader), so re-importing the same file finds the same items.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

FORMATS = ("csv", "jsonl", "clinc150", "stsb", "odds")
MAX_KEY_LENGTH = 255
MAX_LABEL_LENGTH = 255
_TOO_DEEP = "nested too deeply"

# The csv module refuses fields over 128 KiB by default, so a long text (or a long vector) that jsonl or the
# API stored would export to a csv that no longer imports. Lines are read whole anyway, and uploads are
# capped by SIMAPP_MAX_UPLOAD_MB; raising the (process-wide) limit only ever widens it.
csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))

ProgressCallback = Callable[[int, int], None]  # (bytes read, total bytes or 0 when unknown)


class DataFormatError(ValueError):
    """What is wrong with an input, and where. ``str()`` is one line meant for the user."""

    def __init__(
        self,
        source: str,
        message: str,
        *,
        line: int | None = None,
        field: str | None = None,
        unit: str = "line",
    ) -> None:
        self.source = source
        self.message = message
        self.line = line
        self.field = field
        self.unit = unit
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [self.source] if self.source else []
        if self.line is not None:
            where.append(f"{self.unit} {self.line}")
        if self.field:
            where.append(f"field '{self.field}'")
        return f"{', '.join(where)}: {self.message}" if where else self.message


@dataclass(slots=True)
class ItemRecord:
    key: str
    text: str = ""
    vector: list[float] | None = None
    label: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    line: int = 0


@dataclass(slots=True)
class PairRecord:
    a: str  # item key
    b: str  # item key
    score: float
    annotator: str | None = None  # username; None for unattributed (imported) labels
    source: str | None = None  # None: the importer decides (import)
    line: int = 0


@dataclass(slots=True)
class Notice:
    """Something the user should know that did not stop the import (e.g. a skipped row)."""

    message: str


Record = ItemRecord | PairRecord | Notice


@dataclass(frozen=True, slots=True)
class ColumnNames:
    """Names of the columns (csv) or fields (jsonl) in the user's file, when they differ from ours."""

    key: str = "key"
    text: str = "text"
    label: str = "label"


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def vector_hash(vector: list[float]) -> str:
    # repr() of a float round-trips exactly, so equal vectors hash equal and any change is seen. "+ 0.0"
    # makes -0.0 (equal to 0.0, but another repr) 0.0, as PostgreSQL's jsonb stores it.
    return hashlib.sha256(",".join(repr(float(v) + 0.0) for v in vector).encode("ascii")).hexdigest()


def content_key(prefix: str, digest: str) -> str:
    return f"{prefix}-{digest[:20]}"


def derived_key(*, text: str, vector: list[float] | None) -> str:
    """The key of an item given without one: its content identifies it."""
    return content_key("t", text_hash(text)) if vector is None else content_key("v", vector_hash(vector))


def read_records(
    fp: IO[bytes],
    *,
    fmt: str,
    source: str,
    split: str | None = None,
    columns: ColumnNames | None = None,
    on_progress: ProgressCallback | None = None,
    total_bytes: int = 0,
) -> Iterator[Record]:
    """Stream the records of one file. ``fmt`` is one of ``FORMATS``."""
    columns = columns or ColumnNames()
    if fmt not in FORMATS:
        raise DataFormatError(source, f"unknown format '{fmt}'; valid formats: {', '.join(FORMATS)}")
    if fmt == "odds":
        # MATLAB files are read by scipy, which needs a seekable stream, not the counting wrapper.
        yield from _read_odds(fp, source=source)
        return
    counted = _CountingReader(fp, on_progress, total_bytes)
    if fmt == "csv":
        yield from _read_csv(counted, source=source, columns=columns)
    elif fmt == "jsonl":
        yield from _read_jsonl(counted, source=source, columns=columns)
    elif fmt == "clinc150":
        if not split:
            raise DataFormatError(source, "the clinc150 format needs --split (e.g. train, val, oos_val)")
        for row in iter_clinc150(counted, source=source, splits=(split,)):
            yield ItemRecord(
                key=f"{row.split}-{row.index:05d}", text=row.text, label=row.label, line=row.line
            )
    elif fmt == "stsb":
        yield from _read_stsb(counted, source=source)


# ---------------------------------------------------------------------------------------------------
# Plumbing: byte counting for progress bars, strict UTF-8 decoding with line numbers.


class _CountingReader(io.RawIOBase):
    """Pass-through binary reader that reports how many bytes have been read."""

    def __init__(self, raw: IO[bytes], on_progress: ProgressCallback | None, total: int) -> None:
        self._raw = raw
        self._on_progress = on_progress
        self._total = total
        self._done = 0
        self._reported = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self._done += n
        # Report every 256 KiB, and at the end, so progress costs nothing on big files.
        if self._on_progress and (n == 0 or self._done - self._reported >= 1 << 18):
            self._reported = self._done
            self._on_progress(self._done, self._total)
        return n


def _text_lines(raw: IO[bytes], source: str, *, keep_ends: bool = False) -> Iterator[tuple[int, str]]:
    """Yield (line number, line) from UTF-8 bytes, without its end unless ``keep_ends``.

    A file of nothing at all is an error.
    """
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
    buffered = io.BufferedReader(raw, buffer_size=1 << 16)  # type: ignore[arg-type]
    seen_bytes = False
    for lineno, binary_line in enumerate(buffered, start=1):
        seen_bytes = True
        try:
            line = decoder.decode(binary_line)
        except UnicodeDecodeError as exc:
            raise DataFormatError(
                source,
                f"not UTF-8 text (byte 0x{binary_line[exc.start]:02x}); is this a binary file?",
                line=lineno,
            ) from None
        if "\x00" in line:
            raise DataFormatError(source, "contains NUL bytes; is this a binary file?", line=lineno)
        yield lineno, line if keep_ends else line.rstrip("\r\n")
    if not seen_bytes:
        raise DataFormatError(source, "the file is empty")


# Encoders, the embedding cache and the index hold 32-bit floats: a larger value in a vector would become
# infinity there, and the item could be neither indexed nor trained on.
_FLOAT32_MAX = 3.4028234663852886e38
_FLOAT32_MESSAGE = "holds {:g}, beyond the range of the 32-bit floats vectors are kept as (±3.4e38)"


def _finite_float(value: Any, source: str, line: int | None, field_name: str, *, unit: str = "line") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise DataFormatError(source, f"{value!r} is not a number", line=line, field=field_name, unit=unit)
    try:
        number = float(value)
    except ValueError:
        raise DataFormatError(
            source, f"{value!r} is not a number", line=line, field=field_name, unit=unit
        ) from None
    if not math.isfinite(number):
        raise DataFormatError(
            source, f"{value!r} is not a finite number", line=line, field=field_name, unit=unit
        )
    return number


def _score(value: Any, source: str, line: int, field_name: str = "score") -> float:
    score = _finite_float(value, source, line, field_name)
    if not 0.0 <= score <= 1.0:
        raise DataFormatError(source, f"{score:g} is outside [0, 1]", line=line, field=field_name)
    return score


def _vector(value: Any, source: str, line: int, field_name: str = "vector") -> list[float]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            raise DataFormatError(
                source, "must be a JSON array of numbers, e.g. [0.1, 2.5]", line=line, field=field_name
            ) from None
    if not isinstance(value, list) or not value:
        raise DataFormatError(source, "must be a non-empty array of numbers", line=line, field=field_name)
    return [_vector_number(v, source, line, field_name) for v in value]


def vector_numbers(
    values: list[Any], *, source: str, line: int | None, field_name: str = "vector", unit: str = "line"
) -> list[float]:
    """``values``, a vector given as JSON numbers (by the API, in an archive), checked as an import checks
    a vector's numbers; strings are refused too. Raises ``DataFormatError``."""
    return [_vector_number(v, source, line, field_name, unit=unit, strings=False) for v in values]


def _vector_number(
    value: Any, source: str, line: int | None, field_name: str, *, unit: str = "line", strings: bool = True
) -> float:
    if isinstance(value, str) and not strings:
        raise DataFormatError(source, f"{value!r} is not a number", line=line, field=field_name, unit=unit)
    number = _finite_float(value, source, line, field_name, unit=unit)
    if abs(number) > _FLOAT32_MAX:
        raise DataFormatError(source, _FLOAT32_MESSAGE.format(number), line=line, field=field_name, unit=unit)
    return number


def _short_text(value: Any, source: str, line: int, field_name: str, limit: int) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DataFormatError(
            source, f"must be a string, not {type(value).__name__}", line=line, field=field_name
        )
    text = str(value).strip()
    if len(text) > limit:
        raise DataFormatError(
            source, f"is {len(text)} characters long; the limit is {limit}", line=line, field=field_name
        )
    return text


# ---------------------------------------------------------------------------------------------------
# csv and jsonl: one record per row; a row with `a`/`b` (or `text_a`/`text_b`) is a pair, else an item.

_PAIR_FIELDS = {"a", "b", "score", "annotator", "source", "text_a", "text_b"}
_ITEM_FIELDS = {"key", "text", "vector", "label", "metadata"}
_META_PREFIX = "meta."
_NUMBER = re.compile(r"^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class _RowParser:
    """Turns one mapping of field → value (a csv row or a jsonl object) into records.

    Shared by csv and jsonl so both accept the same fields with the same rules. Items without a key get a
    content-derived key (``t-…`` for text, ``v-…`` for vectors); pairs given by texts create such items.
    """

    def __init__(self, source: str, columns: ColumnNames) -> None:
        self.source = source
        self.rename = {columns.key: "key", columns.text: "text", columns.label: "label"}
        self.derived: dict[str, int] = {}  # derived key -> line, to emit each derived item once

    def canonical(self, name: str) -> str:
        return self.rename.get(name, name)

    def check_fields(self, names: list[str], line: int, *, what: str) -> None:
        allowed = _PAIR_FIELDS | _ITEM_FIELDS
        for name in names:
            canon = self.canonical(name)
            if canon not in allowed and not canon.startswith(_META_PREFIX):
                expected = "key, text or vector, label, metadata, meta.<name>; pairs: a, b, score (or text_a, text_b, score)"
                raise DataFormatError(
                    self.source, f"unknown {what} '{name}'; expected {expected}", line=line, field=name
                )

    def parse(self, row: dict[str, Any], line: int, *, from_csv: bool) -> Iterator[Record]:
        values = {self.canonical(k): v for k, v in row.items()}
        if from_csv:
            # An empty csv cell means "absent", so mixed item/pair files (our csv export) read back.
            values = {k: v for k, v in values.items() if v != ""}
        if values.keys() & {"a", "b", "text_a", "text_b", "score"}:
            yield from self._pair(values, line)
        elif values.keys() & {"text", "vector"}:
            yield self._item(values, line, from_csv=from_csv)
        elif not values:
            return
        else:
            raise DataFormatError(
                self.source,
                "has neither 'text' nor 'vector' (an item) nor 'a', 'b', 'score' (a pair)",
                line=line,
            )

    def _item(self, values: dict[str, Any], line: int, *, from_csv: bool) -> ItemRecord:
        src = self.source
        if "text" in values and "vector" in values:
            raise DataFormatError(
                src, "an item has either 'text' or 'vector', not both", line=line, field="vector"
            )
        stray = values.keys() & {"annotator", "source"}
        if stray:
            raise DataFormatError(
                src, "is a pair field, but this row is an item", line=line, field=sorted(stray)[0]
            )
        text, vector = "", None
        if "text" in values:
            if not isinstance(values["text"], str):
                raise DataFormatError(src, "must be a string", line=line, field="text")
            text = values["text"]
            if not text.strip():
                raise DataFormatError(src, "is empty", line=line, field="text")
        else:
            vector = _vector(values["vector"], src, line)
        metadata = self._metadata(values, line, from_csv=from_csv)
        key = _short_text(values.get("key"), src, line, "key", MAX_KEY_LENGTH)
        if not key:
            key = derived_key(text=text, vector=vector)
            first = self.derived.get(key)
            if first is not None:
                raise DataFormatError(
                    src,
                    f"same {'text' if vector is None else 'vector'} as line {first}; without a 'key' column "
                    "the content identifies the item",
                    line=line,
                )
            self.derived[key] = line
        label = _short_text(values.get("label"), src, line, "label", MAX_LABEL_LENGTH)
        return ItemRecord(key=key, text=text, vector=vector, label=label, metadata=metadata, line=line)

    def _metadata(self, values: dict[str, Any], line: int, *, from_csv: bool) -> dict[str, Any]:
        metadata: dict[str, Any] = {}
        raw = values.get("metadata")
        if raw is not None:
            if isinstance(raw, str) and from_csv:
                try:
                    raw = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise DataFormatError(
                        self.source, f"is not valid JSON ({exc.msg})", line=line, field="metadata"
                    ) from None
                except RecursionError:
                    raise DataFormatError(
                        self.source, f"is not valid JSON ({_TOO_DEEP})", line=line, field="metadata"
                    ) from None
            if not isinstance(raw, dict):
                raise DataFormatError(self.source, "must be a JSON object", line=line, field="metadata")
            metadata.update(raw)
        for name, value in values.items():
            if name.startswith(_META_PREFIX):
                # csv cells are strings; numbers become numbers so range filters work on them.
                if from_csv and isinstance(value, str) and _NUMBER.match(value):
                    value = (
                        _finite_float(value, self.source, line, name)
                        if any(c in value for c in ".eE")
                        else int(value)
                    )
                metadata[name[len(_META_PREFIX) :]] = value
        return metadata

    def _pair(self, values: dict[str, Any], line: int) -> Iterator[Record]:
        src = self.source
        stray = values.keys() & _ITEM_FIELDS
        if stray:
            raise DataFormatError(
                src, "is an item field, but this row is a pair", line=line, field=sorted(stray)[0]
            )
        if "score" not in values:
            raise DataFormatError(src, "is missing", line=line, field="score")
        score = _score(values["score"], src, line)
        by_key = "a" in values or "b" in values
        by_text = "text_a" in values or "text_b" in values
        if by_key and by_text:
            raise DataFormatError(
                src, "give a pair by keys (a, b) or by texts (text_a, text_b), not both", line=line
            )
        names = ("a", "b") if by_key or not by_text else ("text_a", "text_b")
        ends: list[str] = []
        for name in names:
            value = values.get(name)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise DataFormatError(src, "is missing", line=line, field=name)
            if by_text:
                if not isinstance(value, str):
                    raise DataFormatError(src, "must be a string", line=line, field=name)
                key = content_key("t", text_hash(value))
                if key not in self.derived:
                    self.derived[key] = line
                    yield ItemRecord(key=key, text=value, line=line)
                ends.append(key)
            else:
                ends.append(_short_text(value, src, line, name, MAX_KEY_LENGTH))
        annotator = _short_text(values.get("annotator"), src, line, "annotator", 150) or None
        source_name = _short_text(values.get("source"), src, line, "source", 20) or None
        yield PairRecord(
            a=ends[0], b=ends[1], score=score, annotator=annotator, source=source_name, line=line
        )


def parse_item(values: dict[str, Any], *, source: str) -> ItemRecord:
    """One item from a mapping of jsonl item fields (key, text or vector, label, metadata), checked as a
    jsonl line is; for forms, so that they accept exactly what an import would."""
    records = list(_RowParser(source, ColumnNames()).parse(values, 0, from_csv=False))
    if len(records) != 1 or not isinstance(records[0], ItemRecord):
        raise DataFormatError(source, "is not one item")
    return records[0]


def _read_csv(raw: IO[bytes], *, source: str, columns: ColumnNames) -> Iterator[Record]:
    parser = _RowParser(source, columns)
    # csv gets the lines with their ends, as from a file opened with newline="": a quoted field keeps its
    # "\r\n" (so a csv export of such a text reads back unchanged). Line numbers come from the reader.
    lines = _text_lines(raw, source, keep_ends=True)
    reader = csv.reader((text for _, text in lines), strict=True)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise DataFormatError(source, f"malformed CSV ({exc})", line=reader.line_num) from None
    header = [name.strip() for name in header]
    if not any(header):
        raise DataFormatError(source, "the first line must be a header naming the columns", line=1)
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise DataFormatError(source, f"column '{duplicates[0]}' appears twice in the header", line=1)
    parser.check_fields(header, 1, what="column")
    canon = {parser.canonical(name) for name in header}
    if not canon & {"text", "vector", "a", "text_a"}:
        raise DataFormatError(
            source,
            f"no '{columns.text}' or 'vector' column (items) and no 'a', 'b', 'score' columns (pairs); "
            f"found: {', '.join(header)}",
            line=1,
        )
    while True:
        start = reader.line_num + 1  # a quoted field may span lines: errors point where the row began
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if "end of data" in str(exc):
                raise DataFormatError(
                    source,
                    "malformed CSV: unterminated quote (a quoted field opened on this line never closes)",
                    line=start,
                ) from None
            raise DataFormatError(source, f"malformed CSV: {exc}", line=reader.line_num) from None
        line = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != len(header):
            raise DataFormatError(
                source, f"has {len(row)} fields, but the header has {len(header)}", line=line
            )
        yield from parser.parse(dict(zip(header, row, strict=True)), line, from_csv=True)


def _read_jsonl(raw: IO[bytes], *, source: str, columns: ColumnNames) -> Iterator[Record]:
    parser = _RowParser(source, columns)
    any_record = False
    for line, text in _text_lines(raw, source):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataFormatError(
                source, f"invalid JSON: {exc.msg} (column {exc.colno})", line=line
            ) from None
        except RecursionError:
            raise DataFormatError(source, f"invalid JSON: {_TOO_DEEP}", line=line) from None
        if not isinstance(obj, dict):
            raise DataFormatError(
                source, f"each line must be a JSON object, not {type(obj).__name__}", line=line
            )
        parser.check_fields(list(obj), line, what="field")
        any_record = True
        yield from parser.parse(obj, line, from_csv=False)
    if not any_record:
        raise DataFormatError(source, "the file holds no records")


# ---------------------------------------------------------------------------------------------------
# clinc150: {split: [[text, intent], ...], ...}, parsed incrementally with line numbers.


@dataclass(slots=True)
class ClincRow:
    split: str
    index: int
    text: str
    label: str
    line: int


class _JsonStream:
    """A pull parser for the outer structure of a large JSON document.

    Containers are walked one element at a time and leaves are decoded with ``json``'s raw decoder, so
    memory stays bounded by one element plus one chunk, and errors carry the line they occur on.
    """

    CHUNK = 1 << 20
    MAX_VALUE = 16 << 20  # a single leaf value larger than this is reported as malformed
    MAX_DEPTH = 500  # containers skipped inside containers; a clinc150 file needs 3

    def __init__(self, raw: IO[bytes], source: str) -> None:
        self.source = source
        self._decoder = json.JSONDecoder()
        self._bytes = raw
        self._text = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
        self.buf = ""
        self.pos = 0
        self.line = 1  # line of self.pos
        self.eof = False
        self._read_bytes = 0

    def _fill(self) -> bool:
        if self.eof:
            return False
        chunk = self._bytes.read(self.CHUNK)
        try:
            text = self._text.decode(chunk, final=not chunk)
        except UnicodeDecodeError:
            raise DataFormatError(
                self.source, "not UTF-8 text; is this a binary file?", line=self.line
            ) from None
        if not chunk:
            self.eof = True
            return False
        if "\x00" in text:
            raise DataFormatError(self.source, "contains NUL bytes; is this a binary file?", line=self.line)
        self._read_bytes += len(chunk)
        # Drop what has been consumed; self.line stays the line of self.pos.
        self.buf = self.buf[self.pos :] + text
        self.pos = 0
        return True

    def _advance(self, to: int) -> None:
        self.line += self.buf.count("\n", self.pos, to)
        self.pos = to

    def peek(self) -> str:
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self._advance(self.pos + 1)
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill():
                if self._read_bytes == 0:
                    raise DataFormatError(self.source, "the file is empty")
                return ""

    def error(self, message: str) -> DataFormatError:
        return DataFormatError(self.source, message, line=self.line)

    def expect(self, char: str, what: str) -> None:
        found = self.peek()
        if found != char:
            shown = repr(found) if found else "the end of the file"
            raise self.error(f"malformed JSON: expected {what}, found {shown}")
        self._advance(self.pos + 1)

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                obj, end = self._decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                # Maybe a value cut by the chunk boundary: read on, up to MAX_VALUE, before calling it malformed.
                if not self.eof and len(self.buf) - self.pos < self.MAX_VALUE and self._fill():
                    continue
                line = self.line + self.buf.count("\n", self.pos, exc.pos)
                raise DataFormatError(self.source, f"malformed JSON: {exc.msg}", line=line) from None
            except RecursionError:
                raise self.error(f"malformed JSON: {_TOO_DEEP}") from None
            self._advance(end)
            return obj

    def members(self) -> Iterator[str]:
        """Walk an object: yields each key with the position just before its value."""
        self.expect("{", "'{'")
        if self.peek() == "}":
            self._advance(self.pos + 1)
            return
        while True:
            key_line = self.line
            key = self.value()
            if not isinstance(key, str):
                raise DataFormatError(
                    self.source, "malformed JSON: object keys must be strings", line=key_line
                )
            self.expect(":", "':'")
            yield key
            if self.peek() == ",":
                self._advance(self.pos + 1)
                continue
            self.expect("}", "',' or '}'")
            return

    def elements(self) -> Iterator[int]:
        """Walk an array: yields the line of each element, which the caller then consumes."""
        self.expect("[", "'['")
        if self.peek() == "]":
            self._advance(self.pos + 1)
            return
        while True:
            self.peek()
            yield self.line
            if self.peek() == ",":
                self._advance(self.pos + 1)
                continue
            self.expect("]", "',' or ']'")
            return

    def skip(self) -> None:
        """Consume one value without building it. Iterative: nesting must not exhaust Python's stack."""
        done = object()
        open_containers: list[Iterator[Any]] = []
        while True:
            first = self.peek()
            if first == "{":
                open_containers.append(self.members())
            elif first == "[":
                open_containers.append(self.elements())
            else:
                self.value()
            if len(open_containers) > self.MAX_DEPTH:
                raise self.error(f"malformed JSON: {_TOO_DEEP}")
            # Move to the next value to consume: the next member of the innermost unfinished container.
            while open_containers and next(open_containers[-1], done) is done:
                open_containers.pop()
            if not open_containers:
                return

    def end(self) -> None:
        if self.peek() != "":
            raise self.error("malformed JSON: unexpected data after the end of the document")


def iter_clinc150(raw: IO[bytes], *, source: str, splits: tuple[str, ...]) -> Iterator[ClincRow]:
    """Rows of the requested splits of a CLINC150 ``data_full.json``-style file, in file order."""
    stream = _JsonStream(raw, source)
    if stream.peek() != "{":
        raise stream.error("malformed JSON: a clinc150 file is a JSON object {split: [[text, intent], ...]}")
    found: list[str] = []
    for name in stream.members():
        found.append(name)
        if name not in splits:
            stream.skip()
            continue
        if stream.peek() != "[":
            raise DataFormatError(
                source, f"split '{name}' must be an array of [text, intent]", line=stream.line
            )
        for index, line in enumerate(stream.elements()):
            row = stream.value()
            if not isinstance(row, list) or len(row) != 2 or not all(isinstance(part, str) for part in row):
                raise DataFormatError(source, f"split '{name}': each entry must be [text, intent]", line=line)
            text, label = row
            if not text.strip():
                raise DataFormatError(source, f"split '{name}': empty text", line=line, field="text")
            if not label.strip() or len(label) > MAX_LABEL_LENGTH:
                raise DataFormatError(
                    source, f"split '{name}': invalid intent {label!r}", line=line, field="intent"
                )
            yield ClincRow(split=name, index=index, text=text, label=label.strip(), line=line)
    stream.end()
    missing = [name for name in splits if name not in found]
    if missing:
        raise DataFormatError(
            source, f"no split '{missing[0]}' in the file; it has: {', '.join(found) or 'nothing'}"
        )


# ---------------------------------------------------------------------------------------------------
# stsb: TAB-separated, no header, no quoting; fields 5, 6, 7 = score 0..5, sentence 1, sentence 2.


def _read_stsb(raw: IO[bytes], *, source: str) -> Iterator[Record]:
    emitted: set[str] = set()
    pairs: dict[tuple[str, str], list[float]] = {}
    pair_line: dict[tuple[str, str], int] = {}
    identical = 0
    for line, text in _text_lines(raw, source):
        if not text.strip():
            continue
        fields = text.split("\t")
        if len(fields) < 7:
            raise DataFormatError(
                source,
                f"has {len(fields)} tab-separated fields; STS-B rows have at least 7 "
                "(genre, file, year, id, score, sentence1, sentence2)",
                line=line,
            )
        raw_score = _finite_float(fields[4], source, line, "score")
        if not 0.0 <= raw_score <= 5.0:
            raise DataFormatError(source, f"{raw_score:g} is outside [0, 5]", line=line, field="score")
        s1, s2 = fields[5].strip(), fields[6].strip()
        for name, sentence in (("sentence1", s1), ("sentence2", s2)):
            if not sentence:
                raise DataFormatError(source, "is empty", line=line, field=name)
        if s1 == s2:
            # The same sentence twice teaches nothing about similarity between items; say so, go on.
            identical += 1
            continue
        keys = []
        for sentence in (s1, s2):
            key = content_key("s", text_hash(sentence))
            if key not in emitted:
                emitted.add(key)
                yield ItemRecord(key=key, text=sentence, line=line)
            keys.append(key)
        pair = (min(keys), max(keys))
        pairs.setdefault(pair, []).append(raw_score / 5.0)
        pair_line.setdefault(pair, line)
    if identical:
        yield Notice(f"{source}: skipped {identical} row(s) whose two sentences are identical")
    merged = 0
    for (a, b), scores in pairs.items():
        merged += len(scores) - 1
        yield PairRecord(a=a, b=b, score=sum(scores) / len(scores), line=pair_line[(a, b)])
    if merged:
        yield Notice(f"{source}: {merged} repeated sentence pair(s) merged, their scores averaged")


# ---------------------------------------------------------------------------------------------------
# odds: MATLAB .mat with X (n by d features) and y (n by 1, 1 = outlier).


def _read_odds(raw: IO[bytes], *, source: str) -> Iterator[Record]:
    import numpy as np
    import scipy.io

    head = raw.read(128)
    if not head:
        raise DataFormatError(source, "the file is empty")
    if head.startswith(b"\x89HDF"):
        raise DataFormatError(source, "MATLAB v7.3 (HDF5) files are not supported; save with -v7")
    raw.seek(0)
    try:
        mat = scipy.io.loadmat(raw, variable_names=["X", "y"])
    except Exception as exc:  # scipy raises many types for garbage; all mean "not a .mat we can read"
        raise DataFormatError(source, f"not a MATLAB .mat file ({type(exc).__name__}: {exc})") from None
    if "X" not in mat:
        raise DataFormatError(source, "has no variable 'X' (the feature matrix)", field="X")
    features = np.asarray(mat["X"])
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise DataFormatError(
            source, f"X must be a non-empty 2-D matrix, not of shape {features.shape}", field="X"
        )
    if not np.issubdtype(features.dtype, np.number):
        raise DataFormatError(source, f"X must be numeric, not {features.dtype}", field="X")
    if np.iscomplexobj(features):  # casting to float would silently drop the imaginary parts
        raise DataFormatError(source, "X must be real numbers, not complex", field="X")
    features = features.astype(np.float64)
    outliers = None
    if "y" in mat:
        labels = np.asarray(mat["y"])
        if labels.dtype == np.bool_:  # a MATLAB logical array
            labels = labels.astype(np.uint8)
        if not np.issubdtype(labels.dtype, np.number) or np.iscomplexobj(labels):
            raise DataFormatError(source, f"y must be 0 or 1 per row, not {labels.dtype}", field="y")
        outliers = labels.reshape(-1)
        if outliers.shape[0] != features.shape[0]:
            raise DataFormatError(
                source, f"y has {outliers.shape[0]} entries but X has {features.shape[0]} rows", field="y"
            )
        # Anything but 0 and 1 (2, 0.5, NaN) would otherwise silently count as an inlier.
        bad_labels = np.flatnonzero((outliers != 0) & (outliers != 1))
        if bad_labels.size:
            row = int(bad_labels[0])
            raise DataFormatError(
                source,
                f"{outliers[row]:g} is not 0 or 1 (1 = outlier)",
                line=row + 1,
                field="y",
                unit="row",
            )
    bad_rows = np.flatnonzero(~np.isfinite(features).all(axis=1))
    if bad_rows.size:
        row = int(bad_rows[0]) + 1
        raise DataFormatError(source, "contains NaN or infinite values", line=row, field="X", unit="row")
    huge = np.flatnonzero((np.abs(features) > _FLOAT32_MAX).any(axis=1))
    if huge.size:
        row = int(huge[0])
        value = features[row][np.abs(features[row]) > _FLOAT32_MAX][0]
        raise DataFormatError(source, _FLOAT32_MESSAGE.format(value), line=row + 1, field="X", unit="row")
    for i, row_values in enumerate(features):
        metadata = {} if outliers is None else {"outlier": int(outliers[i] == 1)}
        yield ItemRecord(key=f"row-{i + 1:05d}", vector=row_values.tolist(), metadata=metadata, line=i + 1)
