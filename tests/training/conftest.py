from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from apps.common import background
from apps.datasets.formats import ItemRecord
from apps.datasets.models import Dataset, Item
from apps.datasets.services import dataset_import, dataset_records_save
from apps.labelling.models import Pair
from apps.training import encoding, index, services
from apps.training.models import TrainingRun
from apps.training.pipeline import training_run_execute


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A fresh SIMAPP_DATA_DIR (embedded index, embedding cache, model artifacts) for one test."""
    index.vector_store_close()
    with override_settings(DATA_DIR=tmp_path):
        encoding.reset_caches()
        yield tmp_path
        background.drain()  # jobs the test started (e.g. indexing new items) finish in this directory
        index.vector_store_close()
        encoding.reset_caches()


def clinc_records(
    shared_data: Path, *, intents: int, per_intent: int, split: str = "train"
) -> list[ItemRecord]:
    """A small real slice of CLINC150: the first ``intents`` intents, ``per_intent`` queries each."""
    document = json.loads((shared_data / "clinc150" / "data_full_train_val.json").read_text())
    wanted = sorted({label for _, label in document[split]})[:intents]
    taken: dict[str, int] = {}
    records = []
    for number, (text, label) in enumerate(document[split]):
        if label in wanted and taken.get(label, 0) < per_intent:
            taken[label] = taken.get(label, 0) + 1
            records.append(ItemRecord(key=f"{split}-{number:05d}", text=text, label=label, line=number))
    return records


def make_dataset(slug: str, records: list[Any]) -> Any:
    dataset_records_save(
        slug=slug, records=records, source_name="test", pair_source=Pair.Source.IMPORT, create_missing=True
    )
    return Dataset.objects.get(slug=slug)


def labelled_thyroid(shared_data: Path) -> Dataset:
    """ODDS thyroid (3,772 vector items) imported as dataset ``thyroid``, each item labelled by its outlier
    flag ("outlier" or "inlier") so that it can be trained."""
    path = shared_data / "odds" / "thyroid.mat"
    with path.open("rb") as fp:
        dataset_import(slug="thyroid", fp=fp, source_name=str(path), fmt="odds")
    dataset = Dataset.objects.get(slug="thyroid")
    Item.objects.filter(dataset=dataset, metadata__outlier=1).update(label="outlier")
    Item.objects.filter(dataset=dataset, metadata__outlier=0).update(label="inlier")
    return dataset


def run_to_end(dataset: Any, on_progress: Any = None, **config: Any) -> TrainingRun:
    run = services.training_run_start(dataset=dataset, config=config, enqueue=False).run
    finished = training_run_execute(run_id=run.pk, on_progress=on_progress)
    assert finished is not None
    return finished
