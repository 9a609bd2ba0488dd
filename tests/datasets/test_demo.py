"""``manage.py demo``: set up, train and index the bundled data; a second run reuses what exists.

On small real slices of the bundled files (CLINC150 with out-of-scope queries, ODDS cardio), injected in
place of the full datasets so that the suite never trains on all of CLINC150.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import override_settings

from apps.common import background
from apps.datasets.management.commands import demo
from apps.datasets.models import Dataset, Item
from apps.training import encoding, index
from apps.training.models import ModelVersion, TrainingRun

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A fresh SIMAPP_DATA_DIR (embedded index, embedding cache, model artifacts) for one test."""
    index.vector_store_close()
    with override_settings(DATA_DIR=tmp_path / "var"):
        encoding.reset_caches()
        yield tmp_path / "var"
        background.drain()
        index.vector_store_close()
        encoding.reset_caches()


@pytest.fixture
def small_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[demo.DemoDataset, ...]:
    """The demo's datasets, built the same way from slices of the bundled files."""
    document = json.loads(demo.CLINC150_FILE.read_text())
    intents = sorted({label for _, label in document["train"]})[:3]
    six_each = [[row for row in document["train"] if row[1] == intent][:6] for intent in intents]
    clinc = tmp_path / "clinc_small.json"
    clinc.write_text(
        json.dumps(
            {
                "train": [row for rows in six_each for row in rows],
                "oos_train": document["oos_train"][:4],
            }
        )
    )
    mat = scipy.io.loadmat(demo.CARDIO_FILE)
    keep = np.r_[0:40, int(np.flatnonzero(mat["y"].ravel() == 1)[0])]  # 40 rows and one outlier
    cardio = tmp_path / "cardio_small.mat"
    scipy.io.savemat(cardio, {"X": mat["X"][keep], "y": mat["y"][keep]})
    datasets = (
        demo.DemoDataset(
            slug="clinc",
            name="CLINC150 slice",
            description="three intents and four out-of-scope queries",
            sources=(
                demo.DemoSource(clinc, "clinc150", "train"),
                demo.DemoSource(clinc, demo.OOS_FORMAT, "oos_train"),
            ),
            train={"epochs": 1},
        ),
        demo.DemoDataset(
            slug="cardio",
            name="cardio slice",
            description="41 rows of ODDS cardio",
            sources=(demo.DemoSource(cardio, "odds"),),
            train={"head": "identity"},
        ),
    )
    monkeypatch.setattr(demo, "DEMO_DATASETS", datasets)
    monkeypatch.delenv("SIMAPP_DEMO_USER", raising=False)
    monkeypatch.delenv("SIMAPP_DEMO_PASSWORD", raising=False)
    return datasets


def run_demo(*args: str) -> str:
    out = StringIO()
    call_command("demo", "--no-serve", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def versions() -> list[tuple[str, int, bool]]:
    return list(
        ModelVersion.objects.order_by("dataset__slug", "number").values_list(
            "dataset__slug", "number", "is_active"
        )
    )


def test_demo_sets_up_trains_and_indexes_then_reuses_what_exists(data_dir: Path, small_demo: object) -> None:
    first = run_demo()

    clinc, cardio = Dataset.objects.get(slug="clinc"), Dataset.objects.get(slug="cardio")
    oos = Item.objects.filter(dataset=clinc, key__startswith="oos_train-").order_by("key")
    assert "• demo admin 'demo' created" in first
    assert "  log in as demo / simapp-demo" in first
    assert "simapp demo: http://127.0.0.1:8000/" in first
    assert "• clinc: train (no model yet)" in first and "• cardio: train (no model yet)" in first
    assert "clinc: items +18 new, 0 updated, 0 unchanged" in first
    assert "clinc: items +4 new, 0 updated, 0 unchanged" in first
    assert "  cardio: 41 items, v1 serves: the frozen encoder" in first
    assert (clinc.description, cardio.description) == (
        "three intents and four out-of-scope queries",
        "41 rows of ODDS cardio",
    )
    # Out-of-scope queries: unlabelled (no class), flagged, indexed and scored like every item.
    assert [(i.key, i.label, i.metadata) for i in oos][:2] == [
        ("oos_train-00000", "", {"outlier": 1}),
        ("oos_train-00001", "", {"outlier": 1}),
    ]
    assert versions() == [("cardio", 1, True), ("clinc", 1, True)]
    assert ModelVersion.objects.get(dataset=cardio).metrics["head"] == "identity"
    assert ModelVersion.objects.get(dataset=clinc).metrics["items"] == 22
    assert index.vector_store().count(index.index_alias(clinc)) == 22
    user = get_user_model().objects.get(username="demo")
    assert (user.is_staff, user.is_superuser) == (True, True)

    runs_before = TrainingRun.objects.count()
    second = run_demo()

    assert "• clinc: v1 is up to date with the data; not retrained" in second
    assert "• cardio: v1 is up to date with the data; not retrained" in second
    assert "clinc: items +0 new, 0 updated, 18 unchanged" in second
    assert "demo admin" not in second and "  log in as demo / simapp-demo" in second
    assert TrainingRun.objects.count() == runs_before and versions() == [
        ("cardio", 1, True),
        ("clinc", 1, True),
    ]

    # A deleted item comes back with the next start, and only its dataset is retrained.
    Item.objects.filter(dataset=cardio, key="row-00001").delete()
    user.set_password("something-else-entirely")
    user.save()
    third = run_demo()

    assert "cardio: items +1 new, 0 updated, 40 unchanged" in third
    assert "• cardio: train (items added or changed since v1)" in third
    assert "• clinc: v1 is up to date with the data; not retrained" in third
    assert (
        "  log in as demo / (the password set since; reset it: python manage.py changepassword demo)" in third
    )
    assert versions() == [("cardio", 1, False), ("cardio", 2, True), ("clinc", 1, True)]


def test_demo_retrain_option_retrains_a_current_model(data_dir: Path, small_demo: object) -> None:
    run_demo()

    out = run_demo("--retrain")

    assert "• clinc: train (retrain asked for)" in out
    assert versions() == [("cardio", 1, False), ("cardio", 2, True), ("clinc", 1, False), ("clinc", 2, True)]


@pytest.mark.django_db
def test_demo_refuses_a_busy_port_before_doing_anything(data_dir: Path, small_demo: object) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(
            CommandError, match=rf"^cannot serve on 127.0.0.1:{port}: .*Is the demo already running"
        ):
            call_command("demo", "--addr", f"127.0.0.1:{port}", stdout=StringIO(), stderr=StringIO())

    assert not Dataset.objects.exists() and not get_user_model().objects.exists()


def test_demo_wants_a_password_of_its_own_when_debug_is_off(
    data_dir: Path, small_demo: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SIMAPP_DEMO_PASSWORD", raising=False)
    monkeypatch.setenv("DJANGO_DEBUG", "0")

    with pytest.raises(CommandError, match="set SIMAPP_DEMO_PASSWORD"):
        call_command("demo", "--no-serve", stdout=StringIO(), stderr=StringIO())

    assert not get_user_model().objects.exists() and not Dataset.objects.exists()
