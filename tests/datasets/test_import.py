"""Importing files into the database: real data slices, idempotence, updates, all-or-nothing."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from django.contrib.auth import get_user_model

from apps.datasets.formats import ColumnNames, DataFormatError, text_hash, vector_hash
from apps.datasets.models import Dataset, Item
from apps.datasets.selectors import dataset_stats
from apps.datasets.services import dataset_export, dataset_import
from apps.labelling.models import Pair
from tests.conftest import db_snapshot, write
from tests.factories import DatasetFactory, ItemFactory, UserFactory

pytestmark = pytest.mark.django_db


def import_path(slug: str, path: Path, fmt: str, **kwargs: object):
    with path.open("rb") as fp:
        return dataset_import(slug=slug, fp=fp, source_name=path.name, fmt=fmt, **kwargs)  # type: ignore[arg-type]


def import_text(slug: str, content: str | bytes, fmt: str, name: str = "in.csv", **kwargs: object):
    data = content.encode() if isinstance(content, str) else content
    return dataset_import(slug=slug, fp=io.BytesIO(data), source_name=name, fmt=fmt, **kwargs)  # type: ignore[arg-type]


def test_clinc150_train_split_gives_15000_labelled_items_and_again_adds_nothing(shared_data: Path) -> None:
    path = shared_data / "clinc150" / "data_full_train_val.json"

    first = import_path("clinc", path, "clinc150", split="train")
    second = import_path("clinc", path, "clinc150", split="train")

    assert (first.dataset_created, first.items_created) == (True, 15000)
    assert (second.items_created, second.items_updated, second.items_unchanged) == (0, 0, 15000)
    assert dataset_stats(dataset=Dataset.objects.get(slug="clinc")) == {
        "items": 15000,
        "pairs": 0,
        "labels": 150,
        "active_version": None,
    }
    item = Item.objects.get(dataset__slug="clinc", key="train-00000")
    assert item.content_hash == text_hash(item.text) and item.label


def test_stsb_slice_makes_sentence_items_and_scaled_pairs(shared_data: Path, tmp_path: Path) -> None:
    lines = (shared_data / "stsb" / "sts-train.csv").read_text(encoding="utf-8").splitlines()[:50]
    path = write(tmp_path, "sts.csv", "\n".join(lines) + "\n")

    result = import_path("sts", path, "stsb")

    first = lines[0].split("\t")
    pair = Pair.objects.get(item_a__text__in=[first[5], first[6]], item_b__text__in=[first[5], first[6]])
    assert result.pairs_created == Pair.objects.count() == 50
    assert pair.score == pytest.approx(float(first[4]) / 5) and pair.annotator is None
    assert pair.source == Pair.Source.IMPORT and pair.item_a_id < pair.item_b_id
    assert import_path("sts", path, "stsb").pairs_unchanged == 50


def test_banking77_csv_with_renamed_label_column(shared_data: Path, tmp_path: Path) -> None:
    lines = (shared_data / "banking77" / "train.csv").read_text(encoding="utf-8").splitlines()[:101]
    path = write(tmp_path, "bank.csv", "\n".join(lines) + "\n")

    result = import_path("bank", path, "csv", columns=ColumnNames(label="category"))

    assert result.items_created == 100
    assert Item.objects.filter(label="card_arrival").count() > 0


def test_odds_cardio_is_a_vector_dataset(shared_data: Path) -> None:
    result = import_path("cardio", shared_data / "odds" / "cardio.mat", "odds")

    dataset = Dataset.objects.get(slug="cardio")
    assert result.items_created == 1831
    assert (dataset.modality, dataset.encoder, dataset.vector_dim) == ("vector", "vector", 21)
    assert Item.objects.filter(dataset=dataset, metadata__outlier=1).count() == 176


def test_changed_content_updates_the_item_and_its_hash() -> None:
    import_text("d", "key,text,label\nk1,old text,x\nk2,same,y\n", "csv")
    before = Item.objects.get(key="k1")

    result = import_text("d", "key,text,label\nk1,new text,x\nk2,same,y\n", "csv")

    after = Item.objects.get(key="k1")
    assert (result.items_updated, result.items_unchanged) == (1, 1)
    assert (after.pk, after.text, after.content_hash) == (before.pk, "new text", text_hash("new text"))


def test_pairs_are_stored_once_with_smaller_id_first_and_rescoring_updates() -> None:
    import_text("d", "key,text\nx,one\ny,two\n", "csv")

    import_text("d", "a,b,score\ny,x,0.5\n", "csv")
    result = import_text("d", "a,b,score\nx,y,0.75\n", "csv")

    pair = Pair.objects.get()
    assert (result.pairs_created, result.pairs_updated) == (0, 1)
    assert (pair.item_a.key, pair.item_b.key, pair.score) == ("x", "y", 0.75)


def test_pairs_can_reference_existing_items_and_name_annotators() -> None:
    UserFactory(username="ann")
    import_text("d", "key,text\nx,one\ny,two\n", "csv")

    import_text("d", '{"a": "x", "b": "y", "score": 1, "annotator": "ann", "source": "manual"}\n', "jsonl")
    import_text("d", '{"a": "x", "b": "y", "score": 0}\n', "jsonl")

    assert list(Pair.objects.order_by("id").values_list("annotator__username", "score", "source")) == [
        ("ann", 1.0, "manual"),
        (None, 0.0, "import"),
    ]


def test_export_then_import_reproduces_items_and_pairs() -> None:
    UserFactory(username="ann")
    content = (
        "\n".join(
            [
                json.dumps(
                    {
                        "key": "a",
                        "text": 'quote " comma , newline \n tab \t ünïcode',
                        "label": "L1",
                        "metadata": {"n": 1.5, "tags": ["x"]},
                    }
                ),
                json.dumps({"key": "b", "text": "plain", "label": "", "metadata": {}}),
                json.dumps({"key": "c", "text": "third", "label": "L2", "metadata": {"deep": {"k": None}}}),
                json.dumps({"a": "a", "b": "b", "score": 0.1 + 0.2, "annotator": "ann", "source": "manual"}),
                json.dumps({"a": "c", "b": "a", "score": 1.0}),
            ]
        )
        + "\n"
    )
    import_text("orig", content, "jsonl", name="in.jsonl")
    original = Dataset.objects.get(slug="orig")

    for fmt in ("jsonl", "csv"):
        exported = "".join(dataset_export(dataset=original, fmt=fmt))
        import_text(f"copy-{fmt}", exported, fmt, name=f"out.{fmt}")

        assert dataset_rows(f"copy-{fmt}") == dataset_rows("orig")


def test_export_then_import_reproduces_a_vector_dataset(tmp_path: Path) -> None:
    path = tmp_path / "x.mat"
    scipy.io.savemat(path, {"X": np.array([[0.1, 1e-300], [3.0, -4.25]]), "y": np.array([[0], [1]])})
    import_path("vec", path, "odds")
    original = Dataset.objects.get(slug="vec")

    for fmt in ("jsonl", "csv"):
        import_text(f"copy-{fmt}", "".join(dataset_export(dataset=original, fmt=fmt)), fmt)

        assert dataset_rows(f"copy-{fmt}") == dataset_rows("vec")
        assert Dataset.objects.get(slug=f"copy-{fmt}").vector_dim == 2


def dataset_rows(slug: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    items = sorted(
        Item.objects.filter(dataset__slug=slug).values_list(
            "key", "text", "vector", "label", "metadata", "content_hash"
        )
    )
    pairs = sorted(
        Pair.objects.filter(dataset__slug=slug).values_list(
            "item_a__key", "item_b__key", "score", "annotator__username", "source"
        ),
        key=repr,
    )
    return items, pairs


# --- bad input: a clear error and nothing changed ---------------------------------------------------

BAD_INPUTS = [
    (
        "malformed JSON (jsonl)",
        "jsonl",
        '{"key": "n1", "text": "ok"}\n{"key": "n2", "text": \n',
        "line 2",
        None,
    ),
    (
        "malformed JSON (clinc150)",
        "clinc150",
        '{"train": [["a", "b"], ["c" "d"]]}',
        "line 1",
        {"split": "train"},
    ),
    (
        "unterminated quote",
        "csv",
        'key,text\nn1,"never closed\nn2,x\n',
        "line 2: malformed CSV: unterminated quote",
        None,
    ),
    ("wrong columns", "csv", "sentence,class\nhello,x\n", "unknown column 'sentence'", None),
    ("missing columns", "csv", "key,label\nn1,x\n", "no 'text' or 'vector' column", None),
    ("binary garbage", "csv", bytes(range(256)) * 8, "is this a binary file?", None),
    ("binary garbage, no NUL", "jsonl", bytes(range(128, 256)) * 8, "line 1: not UTF-8 text", None),
    ("empty file", "jsonl", b"", "the file is empty", None),
    ("header only", "csv", "key,text\n", "holds no items or pairs", None),
    ("score outside [0, 1]", "csv", "a,b,score\nk1,k2,1.01\n", "field 'score': 1.01 is outside [0, 1]", None),
    ("unknown item", "csv", "a,b,score\nk1,ghost,0.5\n", "field 'b': no item with key 'ghost'", None),
    ("pair of an item with itself", "csv", "a,b,score\nk1,k1,1\n", "with itself", None),
    (
        "duplicate keys",
        "csv",
        "key,text\nn1,x\nn1,y\n",
        "line 3, field 'key': duplicate key 'n1' (first at line 2)",
        None,
    ),
    (
        "duplicate pair",
        "csv",
        "a,b,score\nk1,k2,1\nk2,k1,0\n",
        "duplicate pair ('k1', 'k2') (first at line 2)",
        None,
    ),
    (
        "STS-B row with too few fields",
        "stsb",
        "g\tf\t2012\t1\t4.0\tonly one\n",
        "line 1: has 6 tab-separated fields",
        None,
    ),
    ("text into a vector dataset", "jsonl", '{"key": "n1", "vector": [1, 2]}\n', "is a vector item", None),
    (
        "unknown annotator",
        "jsonl",
        '{"a": "k1", "b": "k2", "score": 1, "annotator": "nobody"}\n',
        "no user 'nobody'",
        None,
    ),
    (
        "late error after good rows",
        "csv",
        "key,text\n" + "".join(f"n{i},t{i}\n" for i in range(500)) + "n9,dup\n",
        "line 502",
        None,
    ),
]


@pytest.mark.parametrize(
    ("case", "fmt", "content", "expected", "extra"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_is_refused_with_a_located_message_and_changes_nothing(
    case: str, fmt: str, content: str | bytes, expected: str, extra: dict[str, str] | None
) -> None:
    dataset = DatasetFactory(slug="d")
    ItemFactory(dataset=dataset, key="k1")
    ItemFactory(dataset=dataset, key="k2")
    get_user_model().objects.create(username="someone")
    before = db_snapshot()

    with pytest.raises(DataFormatError) as info:
        import_text("d", content, fmt, name="bad.dat", **(extra or {}))

    message = str(info.value)
    assert message.startswith("bad.dat") and expected in message and "\n" not in message
    assert db_snapshot() == before


def test_mat_without_x_is_refused_and_no_dataset_is_created(tmp_path: Path) -> None:
    path = tmp_path / "nox.mat"
    scipy.io.savemat(path, {"features": np.ones((2, 2))})

    with pytest.raises(DataFormatError, match=r"nox.mat, field 'X': has no variable 'X'"):
        import_path("new", path, "odds")

    assert db_snapshot() == {"datasets": [], "items": [], "pairs": []}


def test_vector_length_must_match_the_dataset() -> None:
    import_text("v", '{"key": "a", "vector": [1, 2]}\n', "jsonl")
    before = db_snapshot()

    with pytest.raises(
        DataFormatError, match=r"line 2, field 'vector': has 3 numbers, but dataset 'v' has 2"
    ):
        import_text("v", '{"key": "b", "vector": [1, 2]}\n{"key": "c", "vector": [1, 2, 3]}\n', "jsonl")

    assert db_snapshot() == before


def test_no_dataset_is_created_when_not_asked() -> None:
    with pytest.raises(DataFormatError, match="no dataset 'absent'"):
        import_text("absent", "key,text\na,b\n", "csv", create_missing=False)
    assert not Dataset.objects.exists()


def test_unknown_pair_source_is_refused_even_without_annotators() -> None:
    import_text("d", "key,text\nx,one\ny,two\n", "csv")
    before = db_snapshot()

    with pytest.raises(DataFormatError, match=r"in.csv, line 2, field 'source': unknown source 'robot'"):
        import_text("d", "a,b,score,source\nx,y,1,robot\n", "csv")

    assert db_snapshot() == before


def test_progress_reports_bytes_read_then_rows_written() -> None:
    content = "key,text\n" + "".join(f"k{i},text {i}\n" for i in range(5000))
    seen: list[tuple[str, int, int]] = []

    import_text("d", content, "csv", on_progress=lambda stage, done, total: seen.append((stage, done, total)))

    reads = [s for s in seen if s[0] == "read"]
    writes = [s for s in seen if s[0] == "write"]
    assert reads[-1] == ("read", len(content), 0)  # total unknown for an in-memory stream
    assert writes[-1] == ("write", 5000, 5000) and len(writes) >= 3
    assert seen.index(reads[-1]) < seen.index(writes[0])


# --- found in review: what the database cannot store, metadata identity, tricky round trips ----------

UNSTORABLE = [
    (
        '{"key": "k", "text": "a\\u0000b"}',
        "in.jsonl, line 1, field 'text': contains a NUL character, which the database cannot store",
    ),
    (
        '{"key": "k\\u0000", "text": "x"}',
        "in.jsonl, line 1, field 'key': contains a NUL character, which the database cannot store",
    ),
    (
        '{"key": "k", "text": "x", "label": "l\\u0000"}',
        "in.jsonl, line 1, field 'label': contains a NUL character, which the database cannot store",
    ),
    (
        '{"key": "k", "text": "x", "metadata": {"m": ["a\\u0000"]}}',
        "in.jsonl, line 1, field 'metadata': contains a NUL character, which the database cannot store",
    ),
    (
        '{"key": "k", "text": "x", "metadata": {"m\\u0000": 1}}',
        "in.jsonl, line 1, field 'metadata': contains a NUL character, which the database cannot store",
    ),
    (
        '{"a": "k1", "b": "k\\u0000", "score": 1}',
        "in.jsonl, line 1, field 'b': contains a NUL character, which the database cannot store",
    ),
    (
        '{"key": "k", "text": "x", "metadata": {"m": NaN}}',
        "in.jsonl, line 1, field 'metadata': contains the number nan; JSON numbers must be finite",
    ),
    (
        '{"key": "k", "text": "x", "metadata": {"m": [1, {"n": -Infinity}]}}',
        "in.jsonl, line 1, field 'metadata': contains the number -inf; JSON numbers must be finite",
    ),
    (
        '{"key": "k", "text": "x", "metadata": {"m": 1e400}}',
        "in.jsonl, line 1, field 'metadata': contains the number inf; JSON numbers must be finite",
    ),
]


@pytest.mark.parametrize(
    ("line", "expected"),
    UNSTORABLE,
    ids=[
        "NUL in text",
        "NUL in key",
        "NUL in label",
        "NUL in metadata value",
        "NUL in metadata name",
        "NUL in pair key",
        "NaN",
        "-Infinity",
        "1e400",
    ],
)
def test_values_the_database_cannot_store_are_refused_and_change_nothing(line: str, expected: str) -> None:
    dataset = DatasetFactory(slug="d")
    ItemFactory(dataset=dataset, key="k1")
    before = db_snapshot()

    with pytest.raises(DataFormatError) as info:
        import_text("d", line + "\n", "jsonl", name="in.jsonl")

    assert str(info.value) == expected
    assert db_snapshot() == before


def test_nul_in_a_clinc150_text_is_refused() -> None:
    with pytest.raises(DataFormatError) as info:
        import_text("c", '{"train": [["a\\u0000", "x"]]}', "clinc150", name="c.json", split="train")

    assert (
        str(info.value)
        == "c.json, line 1, field 'text': contains a NUL character, which the database cannot store"
    )
    assert db_snapshot() == {"datasets": [], "items": [], "pairs": []}


def test_reimporting_large_float_metadata_changes_nothing_and_true_replaces_1() -> None:
    line = '{{"key": "k", "text": "x", "metadata": {{"mass": 5.972e24, "flag": {flag}}}}}\n'
    import_text("d", line.format(flag="1"), "jsonl", name="in.jsonl")

    again = import_text("d", line.format(flag="1"), "jsonl", name="in.jsonl")
    flagged = import_text("d", line.format(flag="true"), "jsonl", name="in.jsonl")

    assert (again.items_unchanged, again.items_updated) == (1, 0)
    assert (flagged.items_unchanged, flagged.items_updated) == (0, 1)
    assert Item.objects.get().metadata["flag"] is True


def test_export_then_import_reproduces_carriage_returns_long_texts_and_nested_metadata() -> None:
    texts = ["a\r\nb", "ends in cr\r", "\u2028separators\u2029 and \ttabs", "word " * 40_000]
    content = "".join(
        json.dumps(
            {
                "key": f"k{i}",
                "text": text,
                "metadata": {"nested": [[1, [2.5e-300]], {"x": None}], "mass": 5.972e24, "s": '"q",\n'},
            }
        )
        + "\n"
        for i, text in enumerate(texts)
    )
    import_text("orig", content, "jsonl", name="in.jsonl")
    original = Dataset.objects.get(slug="orig")

    for fmt in ("jsonl", "csv"):
        exported = "".join(dataset_export(dataset=original, fmt=fmt))
        import_text(f"copy-{fmt}", exported, fmt, name=f"out.{fmt}")
        again = import_text(f"copy-{fmt}", exported, fmt, name=f"out.{fmt}")

        assert dataset_rows(f"copy-{fmt}") == dataset_rows("orig")
        assert (again.items_unchanged, again.items_updated) == (4, 0)


def test_negative_zero_in_a_vector_round_trips_with_the_same_content_hash() -> None:
    import_text("orig", '{"key": "k", "vector": [-0.0, 1.0]}\n', "jsonl", name="in.jsonl")
    original = Dataset.objects.get(slug="orig")

    for fmt in ("jsonl", "csv"):
        import_text(f"copy-{fmt}", "".join(dataset_export(dataset=original, fmt=fmt)), fmt)

        assert (
            dataset_rows(f"copy-{fmt}")[0][0][5] == dataset_rows("orig")[0][0][5] == vector_hash([0.0, 1.0])
        )
