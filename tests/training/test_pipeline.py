"""The whole retrain on a small real slice of CLINC150 with the real MiniLM encoder and embedded Qdrant."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from apps.common import background
from apps.datasets.formats import ItemRecord
from apps.datasets.models import Item
from apps.datasets.selectors import dataset_stats
from apps.discovery.services import classify
from apps.training import services
from apps.training.index import index_alias, index_items_upsert, vector_store
from apps.training.models import ModelVersion, TrainingRun
from apps.training.pipeline import training_run_execute
from tests.training.conftest import clinc_records, labelled_thyroid, make_dataset, run_to_end

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_retrain_encodes_once_trains_indexes_and_activates_then_rolls_back(
    data_dir: Path, shared_data: Path
) -> None:
    dataset = make_dataset("clinc", clinc_records(shared_data, intents=6, per_intent=10))
    stages: list[str] = []

    first = run_to_end(dataset, on_progress=lambda stage, *_: stages.append(stage), epochs=2)
    second = run_to_end(dataset, epochs=2)

    store = vector_store()
    v1, v2 = ModelVersion.objects.order_by("number")
    assert (first.status, first.error, second.status) == ("succeeded", "", "succeeded")
    assert list(dict.fromkeys(stages)) == ["encode", "train", "evaluate", "index", "activate"]
    assert first.metrics["encoded"] == {"cached": 0, "computed": 60}
    assert second.metrics["encoded"] == {"cached": 60, "computed": 0}  # the cache makes the retrain cheap
    assert first.metrics["metric"] == "knn_accuracy" and 0.0 <= first.metrics["value"] <= 1.0
    # One loss per epoch: the epochs that chose the count on held-out items, then the refit on all of them.
    assert len(first.loss_history) == first.metrics["epochs_run"] + first.metrics["best_epoch"]
    assert first.progress == 1.0
    # Where the run's time went, part by part (bench.pipeline reports it).
    # A set: PostgreSQL's jsonb keeps an object's keys in its own order, not the order they were written.
    assert set(first.metrics["seconds"]) == {
        "encode",
        "train",
        "save",
        "embed",
        "index",
        "calibrate",
        "anomaly",
        "activate",
    }
    assert all(seconds >= 0.0 for seconds in first.metrics["seconds"].values())
    assert (v1.is_active, v2.is_active) == (False, True)
    assert dataset_stats(dataset=dataset)["active_version"] == 2
    assert store.get_alias(index_alias(dataset)) == v2.collection and store.count(v2.collection) == 60
    assert v1.collection in store.list_collections()  # kept for rollback

    item = Item.objects.filter(dataset=dataset).first()
    hits = store.nearest(index_alias(dataset), store.get_vectors(v2.collection, [item.pk])[item.pk], limit=3)
    assert hits[0].id == item.pk and hits[0].payload == {"key": item.key, "label": item.label, "metadata": {}}

    rolled = services.model_version_rollback(dataset=dataset)
    assert rolled.number == 1 and store.get_alias(index_alias(dataset)) == v1.collection
    assert list(ModelVersion.objects.filter(is_active=True).values_list("number", flat=True)) == [1]


def test_a_failing_run_records_the_error_and_leaves_the_active_version_serving(
    data_dir: Path, shared_data: Path
) -> None:
    dataset = make_dataset("clinc", clinc_records(shared_data, intents=4, per_intent=6))
    good = run_to_end(dataset, epochs=1)
    dataset.encoder = "/nonexistent/encoder"
    dataset.save()

    failed = run_to_end(dataset, epochs=1)

    assert good.status == "succeeded"
    assert failed.status == "failed" and failed.error.startswith(
        "ValueError: Unknown encoder '/nonexistent/encoder'"
    )
    assert list(ModelVersion.objects.values_list("number", "is_active")) == [(1, True)]
    assert vector_store().get_alias(index_alias(dataset)) == "clinc.index_v1"


def test_a_cancel_while_indexing_never_switches_the_alias(data_dir: Path, shared_data: Path) -> None:
    dataset = make_dataset("clinc", clinc_records(shared_data, intents=4, per_intent=6))
    run_to_end(dataset, epochs=1)
    run = services.training_run_start(dataset=dataset, config={"epochs": 1}, enqueue=False).run

    def cancel_midway(stage: str, done: int, total: int, progress: float) -> None:
        if stage == "index" and done > 0:
            TrainingRun.objects.filter(pk=run.pk).update(cancel_requested=True)

    finished = training_run_execute(run_id=run.pk, on_progress=cancel_midway)

    store = vector_store()
    assert finished is not None and finished.status == "cancelled"
    assert store.get_alias(index_alias(dataset)) == "clinc.index_v1"
    assert "clinc.index_v2" not in store.list_collections()  # the half-built index is gone
    assert list(ModelVersion.objects.values_list("number", "is_active")) == [(1, True)]
    assert not (data_dir / "models" / "clinc" / "v2").exists()


def test_items_added_after_training_are_embedded_with_the_active_model_and_indexed(
    data_dir: Path, shared_data: Path
) -> None:
    records = clinc_records(shared_data, intents=4, per_intent=7)
    dataset = make_dataset("clinc", records[:-1])
    run_to_end(dataset, epochs=1)
    make_dataset("clinc", records[-1:])
    late = Item.objects.get(key=records[-1].key)

    indexed = index_items_upsert(dataset=dataset, item_ids=[late.pk])

    store = vector_store()
    assert indexed == 1 and store.count(index_alias(dataset)) == 28
    vector = store.get_vectors(index_alias(dataset), [late.pk])[late.pk]
    assert store.nearest(index_alias(dataset), vector, limit=1)[0].payload["key"] == late.key


def test_a_claimed_run_is_not_executed_twice(data_dir: Path, shared_data: Path) -> None:
    dataset = make_dataset("clinc", clinc_records(shared_data, intents=2, per_intent=4))
    run = services.training_run_start(dataset=dataset, enqueue=False).run
    services.training_run_claim(run_id=run.pk, worker="someone-else")

    assert training_run_execute(run_id=run.pk) is None
    assert not ModelVersion.objects.exists()


def test_evaluate_reports_knn_accuracy_and_oos_auroc_of_the_served_model(
    data_dir: Path, shared_data: Path, tmp_path: Path
) -> None:
    dataset = make_dataset("clinc", clinc_records(shared_data, intents=5, per_intent=12))
    run_to_end(dataset, epochs=2)
    val = clinc_records(shared_data, intents=5, per_intent=4, split="val")
    document = json.loads((shared_data / "clinc150" / "data_full_train_val.json").read_text())
    evaluation = tmp_path / "eval.json"
    evaluation.write_text(
        json.dumps({"val": [[r.text, r.label] for r in val], "oos_val": document["oos_val"][:20]})
    )
    out = StringIO()

    call_command(
        "evaluate", "clinc", str(evaluation), "--format", "clinc150", "--split", "val", "--json", stdout=out
    )

    metrics = json.loads(out.getvalue())
    assert set(metrics) == {
        "version",
        "n",
        "knn_accuracy",
        "accuracy_at_1",
        "n_oos",
        "oos_auroc",
        "unknown_threshold",
        "unknown_rate",
        "oos_unknown_recall",
    }
    assert (metrics["version"], metrics["n"], metrics["n_oos"]) == (1, 20, 20)
    assert metrics["knn_accuracy"] >= 0.8 and metrics["oos_auroc"] > 0.5


def test_evaluate_reports_the_unknown_rate_that_classification_gives(
    data_dir: Path, shared_data: Path, tmp_path: Path
) -> None:
    # given a served v1 with a calibrated "unknown" threshold, and val + out-of-scope queries
    dataset = make_dataset("clinc", clinc_records(shared_data, intents=5, per_intent=12))
    run_to_end(dataset, epochs=2)
    version = ModelVersion.objects.get(dataset=dataset, is_active=True)
    val_records = clinc_records(shared_data, intents=5, per_intent=4, split="val")
    val = [r.text for r in val_records]
    document = json.loads((shared_data / "clinc150" / "data_full_train_val.json").read_text())
    oos = [text for text, _ in document["oos_val"][:20]]
    evaluation = tmp_path / "eval.json"
    evaluation.write_text(
        json.dumps(
            {
                "val": [[r.text, r.label] for r in val_records],
                "oos_val": [[text, "oos"] for text in oos],
            }
        )
    )
    out = StringIO()

    # when it is evaluated
    call_command(
        "evaluate", "clinc", str(evaluation), "--format", "clinc150", "--split", "val", "--json", stdout=out
    )

    # then the rates are those of the classify service's "unknown" answers, at the version's threshold
    metrics = json.loads(out.getvalue())
    _, in_scope = classify(dataset=dataset, texts=val)
    _, out_of_scope = classify(dataset=dataset, texts=oos)
    assert metrics["unknown_threshold"] == version.metrics["classify"]["unknown_threshold"]
    assert metrics["unknown_rate"] == pytest.approx(sum(c.unknown for c in in_scope) / len(val))
    assert metrics["oos_unknown_recall"] == pytest.approx(sum(c.unknown for c in out_of_scope) / len(oos))
    assert metrics["oos_unknown_recall"] > metrics["unknown_rate"]


def test_evaluate_leaves_the_unknown_figures_out_for_a_version_without_calibration(
    data_dir: Path, shared_data: Path, tmp_path: Path
) -> None:
    # given a served version trained before calibrations existed (no metrics["classify"])
    dataset = make_dataset("clinc", clinc_records(shared_data, intents=3, per_intent=8))
    run_to_end(dataset, epochs=1)
    version = ModelVersion.objects.get(dataset=dataset, is_active=True)
    ModelVersion.objects.filter(pk=version.pk).update(
        metrics={k: v for k, v in version.metrics.items() if k != "classify"}
    )
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text(
        "".join(
            json.dumps({"key": r.key, "text": r.text, "label": r.label}) + "\n"
            for r in clinc_records(shared_data, intents=3, per_intent=3, split="val")
        )
    )
    out = StringIO()

    # when a labelled jsonl file is evaluated
    call_command("evaluate", "clinc", str(labelled), "--format", "jsonl", "--json", stdout=out)

    # then only the metrics the command always gave are there
    assert set(json.loads(out.getvalue())) == {"version", "n", "knn_accuracy", "accuracy_at_1"}


def test_evaluate_gives_the_unknown_rate_of_a_labelled_jsonl_file_without_out_of_scope_recall(
    data_dir: Path, shared_data: Path, tmp_path: Path
) -> None:
    dataset = make_dataset("clinc", clinc_records(shared_data, intents=3, per_intent=8))
    run_to_end(dataset, epochs=1)
    val = clinc_records(shared_data, intents=3, per_intent=3, split="val")
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text(
        "".join(json.dumps({"key": r.key, "text": r.text, "label": r.label}) + "\n" for r in val)
    )
    out = StringIO()

    call_command("evaluate", "clinc", str(labelled), "--format", "jsonl", "--json", stdout=out)

    metrics = json.loads(out.getvalue())
    _, answers = classify(dataset=dataset, texts=[r.text for r in val])
    assert "oos_unknown_recall" not in metrics and metrics["n"] == 9
    assert metrics["unknown_rate"] == pytest.approx(sum(c.unknown for c in answers) / 9)


def test_evaluate_without_an_active_model_says_so(data_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    make_dataset("clinc", clinc_records(shared_data, intents=2, per_intent=2))

    with pytest.raises(CommandError, match="dataset 'clinc' has no active model yet: train it first"):
        call_command(
            "evaluate",
            "clinc",
            str(shared_data / "clinc150" / "data_full_train_val.json"),
            "--format",
            "clinc150",
            "--split",
            "val",
        )


def test_train_command_runs_in_the_foreground_and_fails_loudly(data_dir: Path, shared_data: Path) -> None:
    make_dataset("clinc", clinc_records(shared_data, intents=3, per_intent=5))
    out = StringIO()

    call_command("train", "clinc", "--wait", "--epochs", "1", stdout=out, stderr=StringIO())

    assert out.getvalue().startswith("'clinc' now serves v1: knn_accuracy ")
    assert "15 items encoded, 0 from the cache" in out.getvalue()
    with pytest.raises(CommandError, match=r"^no dataset 'nope'$"):
        call_command("train", "nope", "--wait")
    with pytest.raises(CommandError, match=r"^unknown loss 'hinge'; valid: contrastive, cosent"):
        call_command("train", "clinc", "--wait", "--loss", "hinge")
    make_dataset("bare", [ItemRecord(key="x", text="lonely", line=1)])
    with pytest.raises(CommandError, match=r"^dataset 'bare' has nothing to train on"):
        call_command("train", "bare", "--wait")
    assert TrainingRun.objects.filter(dataset__slug="bare").count() == 0


def test_a_run_left_queued_by_a_restarted_process_is_resumed_by_the_next_request(
    data_dir: Path, shared_data: Path
) -> None:
    dataset = make_dataset("clinc", clinc_records(shared_data, intents=2, per_intent=4))
    # Queued, but by a process that is gone: no job thread of this process has it.
    orphan = TrainingRun.objects.create(dataset=dataset, config={"epochs": 1})

    again = services.training_run_start(dataset=dataset, config={"epochs": 1})
    background.drain()

    orphan.refresh_from_db()
    assert (again.created, again.run.pk) == (False, orphan.pk)
    assert (orphan.status, orphan.error) == ("succeeded", "")
    assert list(ModelVersion.objects.values_list("number", "is_active")) == [(1, True)]


def test_a_large_dataset_serves_the_head_of_the_chosen_epoch_without_a_refit(
    data_dir: Path, shared_data: Path
) -> None:
    # given ODDS thyroid (3,772 vector items, more than the trainer refits by default), labelled
    dataset = labelled_thyroid(shared_data)
    seen: list[tuple[str, float]] = []

    # when it is retrained with the default head
    finished = run_to_end(dataset, on_progress=lambda stage, _d, _t, p: seen.append((stage, p)), epochs=2)

    # then it trained once, on all but the held-out tenth, and the held-out items calibrated "unknown"
    metrics = finished.metrics
    version = ModelVersion.objects.get(dataset=dataset, is_active=True)
    assert (finished.status, finished.error) == ("succeeded", "")
    assert (metrics["n_train"], metrics["n_val"], metrics["epochs_run"]) == (3395, 377, 2)
    assert len(finished.loss_history) == metrics["epochs_run"]  # no refit epochs
    assert version.metrics["classify"]["calibration"] == "holdout"
    assert version.metrics["classify"]["calibrated_on"] == 377
    # and without a refit phase, training filled its whole part of the progress bar before evaluating
    train_progress = [p for stage, p in seen if stage == "train"]
    progress = [p for _, p in seen]
    assert progress == sorted(progress) and max(train_progress) == pytest.approx(0.8)
