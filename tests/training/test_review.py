"""Retrains meeting concurrent events and faults: a late cancel, items changed mid-run, pairs only, limits."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io
from celery.exceptions import SoftTimeLimitExceeded
from django.core.management import call_command
from django.test import override_settings

from apps.datasets.models import Dataset, Item
from apps.datasets.services import dataset_import, items_delete
from apps.discovery.models import AnomalyScore
from apps.training import pipeline, services
from apps.training.index import index_alias, vector_store
from apps.training.models import ModelVersion, TrainingRun
from apps.training.pipeline import training_run_execute
from simapp.learning import auroc
from tests.factories import DatasetFactory, ItemFactory
from tests.training.conftest import clinc_records, labelled_thyroid, make_dataset, run_to_end

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_a_cancel_that_arrives_after_the_alias_switch_leaves_index_and_database_agreeing(
    data_dir: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a served v1 and a second run whose cancel request lands just after its alias switch
    dataset = make_dataset("clinc", clinc_records(shared_data, intents=4, per_intent=6))
    run_to_end(dataset, epochs=1)
    run = services.training_run_start(dataset=dataset, config={"epochs": 1}, enqueue=False).run
    store = vector_store()
    switch = store.set_alias

    def switch_then_cancel(alias: str, collection: str) -> None:
        switch(alias, collection)
        TrainingRun.objects.filter(pk=run.pk).update(cancel_requested=True)

    monkeypatch.setattr(store, "set_alias", switch_then_cancel)

    # when the run works to its end
    finished = training_run_execute(run_id=run.pk)

    # then the cancel came too late: v2 serves, in the database and in the index, and v1 is kept
    assert finished is not None and (finished.status, finished.error) == ("succeeded", "")
    assert list(ModelVersion.objects.values_list("number", "is_active")) == [(2, True), (1, False)]
    assert store.get_alias(index_alias(dataset)) == "clinc.index_v2"
    assert store.list_collections() == ["clinc.index_v1", "clinc.index_v2"]


def test_a_failure_after_the_switch_puts_back_the_previous_version_and_its_index(
    data_dir: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a served v1 and a second run whose indexing of late items fails after its switch
    dataset = make_dataset("clinc", clinc_records(shared_data, intents=4, per_intent=6))
    run_to_end(dataset, epochs=1)

    def broken_upsert(**_: Any) -> int:
        raise RuntimeError("index unreachable")

    monkeypatch.setattr(pipeline, "index_items_upsert", broken_upsert)

    # when the run works to its end
    failed = run_to_end(dataset, epochs=1)

    # then it failed and v1 serves again, in the database and in the index, with nothing of v2 left
    store = vector_store()
    assert (failed.status, failed.error) == ("failed", "RuntimeError: index unreachable")
    assert list(ModelVersion.objects.values_list("number", "is_active")) == [(1, True)]
    assert store.get_alias(index_alias(dataset)) == "clinc.index_v1"
    assert store.list_collections() == ["clinc.index_v1"]
    assert not (data_dir / "models" / "clinc" / "v2").exists()


def test_a_run_reaped_while_it_indexes_does_not_activate_its_version(
    data_dir: Path, shared_data: Path
) -> None:
    # given a served v1 and a second run that the reaper fails while it indexes (its heartbeat was late)
    dataset = make_dataset("clinc", clinc_records(shared_data, intents=4, per_intent=6))
    run_to_end(dataset, epochs=1)
    reaped = "the worker stopped responding (no heartbeat for more than 60 s); it was probably killed"

    def reap_while_indexing(stage: str, *_: Any) -> None:
        if stage == "index":
            TrainingRun.objects.filter(status="running").update(status="failed", error=reaped)

    # when the run works to its end
    finished = run_to_end(dataset, on_progress=reap_while_indexing, epochs=1)

    # then it stays failed with the reaper's reason and v1 serves, in the database and in the index
    store = vector_store()
    assert (finished.status, finished.error) == ("failed", reaped)
    assert list(ModelVersion.objects.values_list("number", "is_active")) == [(1, True)]
    assert store.get_alias(index_alias(dataset)) == "clinc.index_v1"
    assert store.list_collections() == ["clinc.index_v1"]


def test_items_deleted_while_a_run_works_are_not_in_its_index(data_dir: Path, shared_data: Path) -> None:
    # given a dataset of 24 items and an item deleted while the run trains
    dataset = make_dataset("clinc", clinc_records(shared_data, intents=4, per_intent=6))
    doomed = Item.objects.filter(dataset=dataset).order_by("id").last()
    deleted: list[int] = []

    def delete_while_training(stage: str, *_: Any) -> None:
        if stage == "train" and not deleted:
            deleted.append(items_delete(dataset=dataset, item_ids=[doomed.pk]))

    # when the run ends
    finished = run_to_end(dataset, on_progress=delete_while_training, epochs=1)

    # then the served index holds the 23 remaining items and not the deleted one
    store = vector_store()
    assert (finished.status, finished.error, deleted) == ("succeeded", "", [1])
    assert store.count(index_alias(dataset)) == 23
    assert store.get_vectors(index_alias(dataset), [doomed.pk]) == {}


def test_a_dataset_of_scored_pairs_only_trains_and_evaluates(
    data_dir: Path, shared_data: Path, tmp_path: Path
) -> None:
    # given 40 STS-B pairs imported without labels
    lines = (shared_data / "stsb" / "sts-train.csv").read_bytes().splitlines(keepends=True)
    dataset_import(slug="sts", fp=io.BytesIO(b"".join(lines[:40])), source_name="sts", fmt="stsb")
    dataset = Dataset.objects.get(slug="sts")
    evaluation = tmp_path / "dev.csv"
    evaluation.write_bytes(
        b"".join((shared_data / "stsb" / "sts-dev.csv").read_bytes().splitlines(True)[:30])
    )

    # when it is retrained and evaluated
    finished = run_to_end(dataset, epochs=1)
    out = io.StringIO()
    call_command("evaluate", "sts", str(evaluation), "--format", "stsb", "--json", stdout=out)

    # then the run trained on pairs and the evaluation reports spearman over 30 pairs
    assert (finished.status, finished.error, finished.metrics["data"]) == ("succeeded", "", "pairs")
    metrics = json.loads(out.getvalue())
    assert set(metrics) == {"version", "n", "spearman"} and (metrics["version"], metrics["n"]) == (1, 30)


def test_pairs_imported_while_a_pairs_run_encodes_do_not_break_it(data_dir: Path, shared_data: Path) -> None:
    # given 20 STS-B pairs, and 5 more pairs (with their items) imported while the run encodes
    lines = (shared_data / "stsb" / "sts-train.csv").read_bytes().splitlines(keepends=True)
    dataset_import(slug="sts", fp=io.BytesIO(b"".join(lines[:20])), source_name="sts", fmt="stsb")
    dataset = Dataset.objects.get(slug="sts")
    imported: list[int] = []

    def import_while_encoding(stage: str, *_: Any) -> None:
        if stage == "encode" and not imported:
            late = io.BytesIO(b"".join(lines[100:105]))
            imported.append(dataset_import(slug="sts", fp=late, source_name="late", fmt="stsb").pairs_created)

    # when the run ends
    finished = run_to_end(dataset, on_progress=import_while_encoding, epochs=1)

    # then it trained on the pairs of its snapshot and indexed the late items too
    assert (finished.status, finished.error, imported) == ("succeeded", "", [5])
    assert finished.metrics["data"] == "pairs"
    assert vector_store().count(index_alias(dataset)) == Item.objects.filter(dataset=dataset).count()


def test_a_run_stopped_by_its_time_limit_says_so(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given a queued run whose work is cut off by the Celery soft time limit
    dataset = DatasetFactory(slug="d")
    for label in ("a", "b"):
        ItemFactory.create_batch(2, dataset=dataset, label=label)
    run = services.training_run_start(dataset=dataset, enqueue=False).run

    def too_slow(*_: Any) -> None:
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(pipeline, "_execute", too_slow)

    # when it is executed
    with override_settings(SIMAPP_TRAIN_TIME_LIMIT_S=7200):
        finished = training_run_execute(run_id=run.pk)

    # then it failed with a reason a person can act on
    assert finished is not None and (finished.status, finished.error) == (
        "failed",
        "the run took longer than its time limit (7200 s, SIMAPP_TRAIN_TIME_LIMIT_S) and was stopped",
    )


def test_progress_never_goes_back_when_training_refits_on_all_the_data(
    data_dir: Path, shared_data: Path
) -> None:
    # given a labelled dataset large enough to hold out validation items (then refit on all of them)
    dataset = make_dataset("clinc", clinc_records(shared_data, intents=4, per_intent=8))
    seen: list[tuple[str, float]] = []

    # when a run of two epochs works to its end
    finished = run_to_end(dataset, on_progress=lambda stage, _d, _t, p: seen.append((stage, p)), epochs=2)

    # then it refitted, and the overall progress only ever grew, from 0 to 1
    progress = [p for _, p in seen]
    assert finished.status == "succeeded" and finished.metrics["n_train"] == 32
    assert progress == sorted(progress) and (progress[0], progress[-1]) == (0.0, 1.0)


def test_a_labelled_vector_dataset_trains_and_evaluates_on_odds(data_dir: Path, shared_data: Path) -> None:
    # given ODDS thyroid imported as vectors, labelled by its outlier flag so that it can be trained
    dataset = labelled_thyroid(shared_data)

    # when it is retrained and evaluated on the same file
    finished = run_to_end(dataset, epochs=1, head="identity")
    out = io.StringIO()
    path = shared_data / "odds" / "thyroid.mat"
    call_command("evaluate", "thyroid", str(path), "--format", "odds", "--json", stdout=out)

    # then the outlier AUROC is reported over all 3772 rows
    metrics = json.loads(out.getvalue())
    assert (finished.status, finished.error) == ("succeeded", "")
    assert set(metrics) == {"version", "n", "auroc", "auroc_stored"}
    assert metrics["n"] == 3772 and metrics["auroc"] > 0.5 and metrics["auroc_stored"] > 0.5


def _odds_file(tmp_path: Path, name: str, x: np.ndarray, y: np.ndarray) -> Path:
    path = tmp_path / name
    scipy.io.savemat(path, {"X": x, "y": y.reshape(-1, 1)})
    return path


def _clustered_with_outliers(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """60 inliers in two tight clusters and 6 outliers scattered far from both."""
    rng = np.random.default_rng(seed)
    inliers = np.concatenate([rng.normal(0, 0.3, (30, 3)), rng.normal(4, 0.3, (30, 3))])
    outliers = rng.uniform(-10, 14, (6, 3))
    return np.concatenate([inliers, outliers]), np.r_[np.zeros(60), np.ones(6)]


def test_evaluate_rates_the_stored_anomaly_scores_of_the_datasets_own_file(
    data_dir: Path, tmp_path: Path
) -> None:
    # given an unlabelled vector dataset indexed with the frozen encoder, so every item has a stored score
    x, y = _clustered_with_outliers()
    path = _odds_file(tmp_path, "own.mat", x, y)
    with path.open("rb") as fp:
        dataset_import(slug="odd", fp=fp, source_name=str(path), fmt="odds")
    dataset = Dataset.objects.get(slug="odd")
    run_to_end(dataset, head="identity")
    version = ModelVersion.objects.get(dataset=dataset, is_active=True)
    # scores that rank one outlier below every inlier, so the stored figure differs from the recomputed one
    weakest = Item.objects.get(dataset=dataset, key="row-00061")
    AnomalyScore.objects.filter(version=version, item=weakest).update(score=-1.0)
    out = io.StringIO()

    # when the dataset's own file is evaluated
    call_command("evaluate", "odd", str(path), "--format", "odds", "--json", stdout=out)

    # then auroc_stored rates the stored rows, matched by key; auroc is still recomputed from the index
    metrics = json.loads(out.getvalue())
    stored = dict(AnomalyScore.objects.filter(version=version).values_list("item__key", "score"))
    expected = auroc(np.asarray([stored[f"row-{i + 1:05d}"] for i in range(len(x))]), y)
    assert metrics["auroc_stored"] == pytest.approx(expected) and expected == pytest.approx(5 / 6)
    assert metrics["auroc"] == pytest.approx(1.0)


def test_evaluate_leaves_auroc_stored_out_for_a_file_that_is_not_the_datasets_data(
    data_dir: Path, tmp_path: Path
) -> None:
    # given a scored dataset, and files with the same keys: one with changed rows, one with an extra row
    x, y = _clustered_with_outliers()
    own = _odds_file(tmp_path, "own.mat", x, y)
    with own.open("rb") as fp:
        dataset_import(slug="odd", fp=fp, source_name=str(own), fmt="odds")
    run_to_end(Dataset.objects.get(slug="odd"), head="identity")
    changed = _odds_file(tmp_path, "changed.mat", x + 0.01, y)
    longer = _odds_file(tmp_path, "longer.mat", np.concatenate([x, x[:1]]), np.r_[y, 0])

    for path in (changed, longer):
        out = io.StringIO()
        call_command("evaluate", "odd", str(path), "--format", "odds", "--json", stdout=out)

        # then only the recomputed figure is given
        assert set(json.loads(out.getvalue())) == {"version", "n", "auroc"}


def test_a_run_interrupted_in_the_foreground_ends_at_once(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a queued run that a person interrupts with Ctrl-C while `train --wait` runs it
    dataset = DatasetFactory(slug="d")
    for label in ("a", "b"):
        ItemFactory.create_batch(2, dataset=dataset, label=label)
    run = services.training_run_start(dataset=dataset, enqueue=False).run

    def interrupted(*_: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_execute", interrupted)

    # when it is executed
    with pytest.raises(KeyboardInterrupt):
        training_run_execute(run_id=run.pk)

    # then the run is over (not left running until the reaper notices) and a new one can start
    run.refresh_from_db()
    assert (run.status, run.error) == ("cancelled", "interrupted (KeyboardInterrupt)")
    assert services.training_run_start(dataset=dataset, enqueue=False).created
