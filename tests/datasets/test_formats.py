"""The file readers alone: records out, or one clear error naming file, line and field."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io

from apps.datasets import formats
from apps.datasets.formats import ColumnNames, DataFormatError, ItemRecord, Notice, PairRecord


def read(content: str | bytes, fmt: str, **kwargs: object) -> list[formats.Record]:
    data = content.encode("utf-8") if isinstance(content, str) else content
    return list(formats.read_records(io.BytesIO(data), fmt=fmt, source="in.dat", **kwargs))  # type: ignore[arg-type]


def error_of(content: str | bytes, fmt: str, **kwargs: object) -> DataFormatError:
    with pytest.raises(DataFormatError) as info:
        read(content, fmt, **kwargs)
    assert "\n" not in str(info.value)
    return info.value


def test_csv_items_with_label_metadata_and_numeric_meta_columns() -> None:
    records = read(
        'key,text,label,meta.year,meta.src,metadata\nk1,"hello, world",greet,2014,news,"{""x"": 1}"\n', "csv"
    )

    assert records == [
        ItemRecord(
            key="k1",
            text="hello, world",
            label="greet",
            metadata={"x": 1, "year": 2014, "src": "news"},
            line=2,
        )
    ]


def test_csv_renamed_columns_and_keyless_items_get_content_keys() -> None:
    records = read(
        "text,category\nwhat is my balance,balance\n", "csv", columns=ColumnNames(label="category")
    )

    assert records == [
        ItemRecord(
            key=formats.derived_key(text="what is my balance", vector=None),
            text="what is my balance",
            label="balance",
            line=2,
        )
    ]


def test_csv_mixed_items_and_pairs_as_exported() -> None:
    content = "key,text,label,metadata,a,b,score,annotator,source\nx,one,,{},,,,,\ny,two,,{},,,,,\n,,,,x,y,0.25,,import\n"

    records = read(content, "csv")

    assert [type(r) for r in records] == [ItemRecord, ItemRecord, PairRecord]
    assert records[2] == PairRecord(a="x", b="y", score=0.25, source="import", line=4)


def test_csv_pairs_by_text_create_each_item_once() -> None:
    records = read("text_a,text_b,score\ncat,dog,0.2\ncat,kitten,0.9\n", "csv")

    items = [r for r in records if isinstance(r, ItemRecord)]
    assert [i.text for i in items] == ["cat", "dog", "kitten"]
    assert [r.score for r in records if isinstance(r, PairRecord)] == [0.2, 0.9]


def test_csv_vector_items() -> None:
    records = read('key,vector\nv1,"[1, 2.5, -3]"\n', "csv")

    assert records == [ItemRecord(key="v1", vector=[1.0, 2.5, -3.0], line=2)]


def test_csv_quoted_newline_keeps_physical_line_numbers() -> None:
    records = read('key,text\na,"two\nlines"\nb,three\n', "csv")

    assert [(r.key, r.text, r.line) for r in records] == [("a", "two\nlines", 3), ("b", "three", 4)]


@pytest.mark.parametrize(
    ("content", "message", "line", "field"),
    [
        ('key,text\na,"open quote\nb,c\n', "unterminated quote", 2, None),
        ("txt,lbl\nhello,x\n", "unknown column 'txt'", 1, "txt"),
        ("label\nx\n", "no 'text' or 'vector' column", 1, None),
        ("key,text\na,b,c\n", "has 3 fields, but the header has 2", 2, None),
        ("key,text,key\na,b,c\n", "column 'key' appears twice", 1, None),
        ("a,b,score\nx,y,1.5\n", "1.5 is outside [0, 1]", 2, "score"),
        ("a,b,score\nx,y,high\n", "'high' is not a number", 2, "score"),
        ("a,b,score\nx,,0.5\n", "is missing", 2, "b"),
        ('key,vector\nv,"[1,NaN]"\n', "not a finite number", 2, "vector"),
        ("key,text\nk,   \n", "is empty", 2, "text"),
        ("text\nsame\nsame\n", "same text as line 2", 3, None),
        ("key,text,metadata\nk,t,[1]\n", "must be a JSON object", 2, "metadata"),
    ],
)
def test_csv_errors_name_line_and_field(content: str, message: str, line: int, field: str | None) -> None:
    error = error_of(content, "csv")

    assert message in error.message
    assert (error.line, error.field) == (line, field)
    assert str(error).startswith("in.dat, line ")


def test_empty_and_binary_files_are_refused_for_every_text_format() -> None:
    for fmt in ("csv", "jsonl", "stsb", "clinc150"):
        assert error_of(b"", fmt, split="train").message == "the file is empty"
        garbage = bytes(range(128, 256)) * 4
        assert "not UTF-8 text" in error_of(garbage, fmt, split="train").message
        assert "NUL bytes" in error_of(b"key,text\x00\n\x00\x01", fmt, split="train").message


def test_jsonl_items_pairs_and_errors() -> None:
    content = (
        '{"key": "a", "text": "x", "label": "L", "metadata": {"n": 2}}\n\n{"a": "a", "b": "z", "score": 1}\n'
    )

    records = read(content, "jsonl")

    assert records == [
        ItemRecord(key="a", text="x", label="L", metadata={"n": 2}, line=1),
        PairRecord(a="a", b="z", score=1.0, line=3),
    ]
    assert (error_of('{"key": "a", "text": "x"}\n{"key": "b", "text": \n', "jsonl").line) == 2
    assert "JSON object" in error_of("[1, 2]\n", "jsonl").message
    assert error_of('{"key": "a", "txt": "x"}\n', "jsonl").field == "txt"
    assert error_of("\n\n", "jsonl").message == "the file holds no records"
    assert error_of('{"key": "a", "text": "x", "score": 0.5}\n', "jsonl").field == "key"


def clinc_document(splits: dict[str, list[list[str]]]) -> str:
    return json.dumps(splits, indent=4)


def test_clinc150_reads_only_the_requested_split_across_chunk_boundaries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Tiny chunks force every value to straddle a buffer boundary at least once.
    monkeypatch.setattr(formats._JsonStream, "CHUNK", 7)
    doc = clinc_document(
        {
            "oos_val": [["where is the moon", "oos"]],
            "train": [["book a flight", "book_flight"], ["hi", "greeting"]],
        }
    )

    rows = list(formats.iter_clinc150(io.BytesIO(doc.encode()), source="c.json", splits=("train", "oos_val")))

    assert [(r.split, r.index, r.text, r.label) for r in rows] == [
        ("oos_val", 0, "where is the moon", "oos"),
        ("train", 0, "book a flight", "book_flight"),
        ("train", 1, "hi", "greeting"),
    ]
    assert [r.line for r in rows] == [
        n for n, line in enumerate(doc.splitlines(), start=1) if line == "        ["
    ]


def test_clinc150_records_and_errors() -> None:
    doc = clinc_document({"train": [["book a flight", "book_flight"]]})

    assert read(doc, "clinc150", split="train") == [
        ItemRecord(key="train-00000", text="book a flight", label="book_flight", line=3)
    ]
    assert "no split 'val'" in error_of(doc, "clinc150", split="val").message
    assert "needs --split" in error_of(doc, "clinc150").message
    broken = '{\n  "train": [\n    ["a", "b"],\n    ["c" "d"]\n  ]\n}\n'
    error = error_of(broken, "clinc150", split="train")
    assert (error.line, "malformed JSON" in error.message) == (4, True)
    assert (
        "each entry must be [text, intent]"
        in error_of('{"train": [["a"]]}', "clinc150", split="train").message
    )
    assert "unexpected data" in error_of('{"train": []} x', "clinc150", split="train").message


def test_stsb_rows_ignore_trailing_fields_merge_repeats_and_skip_identical() -> None:
    rows = [
        "main\tMSRvid\t2012\t1\t5.000\tA plane is taking off.\tAn air plane is taking off.\textra\tfields",
        "main\tMSRvid\t2012\t2\t3.000\tAn air plane is taking off.\tA plane is taking off.",
        "main\tnews\t2014\t3\t5\tSame.\tSame.",
    ]

    records = read("\n".join(rows) + "\n", "stsb")

    items = [r for r in records if isinstance(r, ItemRecord)]
    pairs = [r for r in records if isinstance(r, PairRecord)]
    notices = [r.message for r in records if isinstance(r, Notice)]
    assert [i.text for i in items] == ["A plane is taking off.", "An air plane is taking off."]
    assert len(pairs) == 1 and pairs[0].score == pytest.approx(0.8)
    assert notices == [
        "in.dat: skipped 1 row(s) whose two sentences are identical",
        "in.dat: 1 repeated sentence pair(s) merged, their scores averaged",
    ]


def test_stsb_errors() -> None:
    short = error_of("main\tMSRvid\t2012\t1\t5.0\tonly one sentence\n", "stsb")
    assert (short.line, "has 6 tab-separated fields" in short.message) == (1, True)
    assert error_of("g\tf\ty\ti\t7\ta\tb\n", "stsb").field == "score"


def mat_bytes(tmp_path: Path, **arrays: object) -> bytes:
    path = tmp_path / "x.mat"
    scipy.io.savemat(path, arrays)
    return path.read_bytes()


def test_odds_rows_become_vector_items_with_outlier_flag(tmp_path: Path) -> None:
    data = mat_bytes(tmp_path, X=np.array([[1.0, 2.0], [3.0, 4.0]]), y=np.array([[0], [1]]))

    assert read(data, "odds") == [
        ItemRecord(key="row-00001", vector=[1.0, 2.0], metadata={"outlier": 0}, line=1),
        ItemRecord(key="row-00002", vector=[3.0, 4.0], metadata={"outlier": 1}, line=2),
    ]


def test_odds_errors(tmp_path: Path) -> None:
    assert error_of(mat_bytes(tmp_path, Z=np.ones((2, 2))), "odds").field == "X"
    assert "not a MATLAB .mat file" in error_of(b"garbage" * 100, "odds").message
    assert "v7.3" in error_of(b"\x89HDF\r\n\x1a\n" + b"\0" * 600, "odds").message
    mismatch = mat_bytes(tmp_path, X=np.ones((3, 2)), y=np.zeros((2, 1)))
    assert "y has 2 entries but X has 3 rows" in error_of(mismatch, "odds").message
    nan = mat_bytes(tmp_path, X=np.array([[1.0], [np.nan]]))
    assert (error_of(nan, "odds").line, error_of(nan, "odds").unit) == (2, "row")


def test_unknown_format() -> None:
    assert "valid formats: csv, jsonl, clinc150, stsb, odds" in error_of("x", "xml").message


# --- adversarial input: found in review -------------------------------------------------------------


def test_csv_quoted_crlf_inside_a_field_is_kept() -> None:
    records = read('key,text\r\nk1,"a\r\nb"\r\nk2,"ends in cr\r"\r\n', "csv")

    assert [(r.key, r.text, r.line) for r in records] == [("k1", "a\r\nb", 3), ("k2", "ends in cr\r", 4)]


def test_csv_field_longer_than_the_csv_modules_default_limit_is_read() -> None:
    long_text = "word " * 40_000  # 200,000 characters; the csv module's default limit is 131,072

    records = read(f"key,text\nk,{long_text}\n", "csv")

    assert records == [ItemRecord(key="k", text=long_text, line=2)]


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    ("content", "fmt", "expected"),
    [
        (
            '{"key": "a", "text": "x"}\n{"key": "b", "text": "y", "metadata": ' + DEEP + "}\n",
            "jsonl",
            "in.dat, line 2: invalid JSON: nested too deeply",
        ),
        (
            'key,text,metadata\nk,t,"{""m"": ' + DEEP + '}"\n',
            "csv",
            "in.dat, line 2, field 'metadata': is not valid JSON (nested too deeply)",
        ),
        (
            'key,vector\nk,"' + DEEP + '"\n',
            "csv",
            "in.dat, line 2, field 'vector': must be a JSON array of numbers, e.g. [0.1, 2.5]",
        ),
        (
            '{\n"train": [\n["a", ' + DEEP + "]\n]\n}",
            "clinc150",
            "in.dat, line 3: malformed JSON: nested too deeply",
        ),
        (
            '{\n"val": ' + DEEP + ',\n"train": [["a", "b"]]\n}',
            "clinc150",
            "in.dat, line 2: malformed JSON: nested too deeply",
        ),
    ],
    ids=["jsonl", "csv metadata", "csv vector", "clinc150 split read", "clinc150 split skipped"],
)
def test_deeply_nested_json_is_a_located_error_not_a_crash(content: str, fmt: str, expected: str) -> None:
    error = error_of(content, fmt, split="train")

    assert str(error) == expected


def test_csv_meta_column_with_a_number_beyond_float_range_is_refused() -> None:
    error = error_of("key,text,meta.mass\nk,t,1e400\n", "csv")

    assert str(error) == "in.dat, line 2, field 'meta.mass': '1e400' is not a finite number"


def test_vector_values_beyond_32_bit_floats_are_refused_where_they_are_read(tmp_path: Path) -> None:
    # Encoders, the embedding cache and the index keep 32-bit floats: 1e300 would become infinity there
    huge_row = mat_bytes(tmp_path, X=np.array([[1.0, 2.0], [3.0, -1e300]]))

    assert str(error_of('key,vector\nv,"[1, 1e39]"\n', "csv")) == (
        "in.dat, line 2, field 'vector': holds 1e+39, beyond the range of the 32-bit floats vectors are kept "
        "as (±3.4e38)"
    )
    assert str(error_of(huge_row, "odds")) == (
        "in.dat, row 2, field 'X': holds -1e+300, beyond the range of the 32-bit floats vectors are kept "
        "as (±3.4e38)"
    )


def test_odds_refuses_complex_features(tmp_path: Path) -> None:
    error = error_of(mat_bytes(tmp_path, X=np.array([[1 + 2j, 3.0], [4.0, 5.0]])), "odds")

    assert str(error) == "in.dat, field 'X': X must be real numbers, not complex"


@pytest.mark.parametrize(
    ("y", "expected"),
    [
        (np.array([[0.0], [2.0]]), "in.dat, row 2, field 'y': 2 is not 0 or 1 (1 = outlier)"),
        (np.array([[np.nan], [1.0]]), "in.dat, row 1, field 'y': nan is not 0 or 1 (1 = outlier)"),
        (np.array([[0.5], [1.0]]), "in.dat, row 1, field 'y': 0.5 is not 0 or 1 (1 = outlier)"),
        (np.array(["a", "b"]), "in.dat, field 'y': y must be 0 or 1 per row, not <U1"),
    ],
)
def test_odds_refuses_outlier_labels_other_than_0_and_1(tmp_path: Path, y: Any, expected: str) -> None:
    error = error_of(mat_bytes(tmp_path, X=np.ones((2, 2)), y=y), "odds")

    assert str(error) == expected


def test_odds_accepts_logical_outlier_labels(tmp_path: Path) -> None:
    data = mat_bytes(tmp_path, X=np.ones((2, 1)), y=np.array([[True], [False]]))

    assert [r.metadata for r in read(data, "odds")] == [{"outlier": 1}, {"outlier": 0}]


def test_clinc150_skips_other_splits_of_any_shape_across_chunk_boundaries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(formats._JsonStream, "CHUNK", 5)
    doc = '{"val": [[], {}, {"a": [1, {"b": "]}[{"}], "c": null}, ["x", "y"]], "oos": 3, "train": [["hi", "greet"]]}'

    rows = list(formats.iter_clinc150(io.BytesIO(doc.encode()), source="c.json", splits=("train",)))

    assert [(r.split, r.text, r.label) for r in rows] == [("train", "hi", "greet")]
