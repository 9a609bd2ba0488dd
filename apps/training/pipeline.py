"""The retraining pipeline: encode (cached) → train → evaluate → index → activate, for one claimed run.

Called by the Celery task, the in-process job thread and ``manage.py train --wait`` alike. The run is
claimed with a conditional update first, so a duplicated or retried job does nothing. Progress, stage
and a heartbeat go to the run's row as it goes; a cancel request is honoured between batches. Any failure
leaves the active model version and its index exactly as they were: the new index is built beside the
live one and the alias moves only after it passed its checks.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Max
from django.utils import timezone

from apps.datasets.models import Dataset, Item
from apps.discovery import services as discovery
from apps.labelling.models import Pair
from apps.training import services
from apps.training.encoding import dataset_encoder, encode_items, indexed_fields, store_distance
from apps.training.index import index_alias, index_collection, index_items_upsert, model_dir, vector_store
from apps.training.models import ModelVersion, TrainingRun
from simapp.learning import (
    GroupData,
    PairData,
    SimilarityModel,
    TrainConfig,
    TrainingCancelled,
    create_head,
    refits,
    train,
)
from simapp.learning import Progress as TrainProgress
from simapp.vectors import (
    BuildResult,
    Point,
    VectorStoreError,
    build_and_activate,
    collection_versions,
    make_payload,
    point_id,
)
from simapp.vectors import Progress as IndexProgress

logger = logging.getLogger(__name__)

Stage = TrainingRun.Stage
Status = TrainingRun.Status
# Share of the whole run each stage covers, for one overall progress figure.
_SPANS: dict[str, tuple[float, float]] = {
    Stage.ENCODE: (0.0, 0.30),
    Stage.TRAIN: (0.30, 0.80),
    Stage.EVALUATE: (0.80, 0.85),
    Stage.INDEX: (0.85, 0.98),
    Stage.ACTIVATE: (0.98, 1.0),
}

# Share of the training stage for choosing the number of epochs and for the refit on all the data.
_TRAIN_PHASES: dict[str, tuple[float, float]] = {"train": (0.0, 0.6), "refit": (0.6, 1.0)}


class RunCancelled(Exception):
    pass


class RunLost(RuntimeError):
    """The run was ended by someone else (the heartbeat reaper) while it worked."""


@dataclass
class ItemRows:
    """The dataset's items in id order, as the pipeline needs them."""

    ids: list[int]
    keys: list[str]
    texts: list[str]
    vectors: list[list[float] | None]
    labels: list[str]
    metadata: list[dict[str, Any]]
    hashes: list[str]

    @classmethod
    def of(cls, dataset: Dataset) -> ItemRows:
        rows = (
            Item.objects.filter(dataset=dataset)
            .order_by("id")
            .values_list("id", "key", "text", "vector", "label", "metadata", "content_hash")
        )
        columns = list(zip(*rows, strict=True)) if rows else [[] for _ in range(7)]
        return cls(*(list(column) for column in columns))


class RunReporter:
    """Writes a run's progress to its row (throttled) and answers whether a cancel was asked for."""

    def __init__(
        self, run_id: int, *, on_progress: Callable[[str, int, int, float], None] | None = None
    ) -> None:
        self.run_id = run_id
        self.on_progress = on_progress
        self._last_write = 0.0
        self._last_cancel_check = 0.0
        self._last_stage = ""
        self._cancel = False
        self.device: str | None = None

    def report(
        self, stage: str, done: int, total: int, *, loss: float | None = None, fraction: float | None = None
    ) -> None:
        """``fraction`` (of the stage, 0..1) overrides ``done / total`` where a stage has phases."""
        lo, hi = _SPANS[stage]
        if fraction is None:
            fraction = done / total if total else 0.0
        progress = lo + (hi - lo) * min(1.0, fraction)
        if self.on_progress:
            self.on_progress(stage, done, total, progress)
        now = time.monotonic()
        # Write at most twice a second, but always at a stage change, at a stage's end and with a loss.
        if stage != self._last_stage or done >= total or loss is not None or now - self._last_write >= 0.5:
            self._cancel = services.training_run_report(
                run_id=self.run_id,
                stage=stage,
                done=done,
                total=total,
                progress=progress,
                loss=loss,
                device=self.device,
            )
            self._last_write, self._last_stage = now, stage

    def cancelled(self) -> bool:
        now = time.monotonic()
        if not self._cancel and now - max(self._last_write, self._last_cancel_check) >= 0.5:
            self._cancel = TrainingRun.objects.filter(pk=self.run_id, cancel_requested=True).exists()
            self._last_cancel_check = now
        return self._cancel

    def check(self) -> None:
        if self.cancelled():
            raise RunCancelled


class Heartbeat(threading.Thread):
    """Touches the run's heartbeat every few seconds while the pipeline works, even inside a long batch.

    If the process dies (SIGKILL, OOM, power), the heartbeat stops and the reaper fails the run.
    """

    def __init__(self, run_id: int, interval: float) -> None:
        super().__init__(name=f"heartbeat-{run_id}", daemon=True)
        self.run_id = run_id
        self.interval = interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop_event.wait(self.interval):
                TrainingRun.objects.filter(pk=self.run_id, status=TrainingRun.Status.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
        except Exception:  # a heartbeat must never take the job down; the reaper will notice instead
            logger.exception("heartbeat of run %s stopped", self.run_id)
        finally:
            connection.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=self.interval + 5)


def training_run_execute(
    *, run_id: int, on_progress: Callable[[str, int, int, float], None] | None = None
) -> TrainingRun | None:
    """Run the whole pipeline for ``run_id`` if this process can claim it; returns the finished run.

    Returns None when the run was not queued any more (another worker has it, or it was cancelled).
    Never raises for a failure of the run itself: it ends the run as failed with the error text. An
    interruption (Ctrl-C, SystemExit) ends it as cancelled and is raised again.
    """
    close_old_connections()
    if not services.training_run_claim(run_id=run_id):
        logger.info("run %s was not queued any more; nothing to do", run_id)
        return None
    reporter = RunReporter(run_id, on_progress=on_progress)
    heartbeat = Heartbeat(run_id, settings.SIMAPP_HEARTBEAT_INTERVAL_S)
    heartbeat.start()
    try:
        metrics = _execute(TrainingRun.objects.select_related("dataset").get(pk=run_id), reporter)
    except (RunCancelled, TrainingCancelled):
        services.training_run_finish(
            run_id=run_id, status=TrainingRun.Status.CANCELLED, error="cancelled by request"
        )
    except Exception as exc:
        logger.exception("training run %s failed", run_id)
        services.training_run_finish(run_id=run_id, status=TrainingRun.Status.FAILED, error=_error_text(exc))
    except BaseException as exc:
        # Ctrl-C in `train --wait`, SystemExit: end the run now rather than leave it "running" (and
        # blocking a new run of the dataset) until the reaper notices the missing heartbeat.
        services.training_run_finish(
            run_id=run_id, status=TrainingRun.Status.CANCELLED, error=f"interrupted ({type(exc).__name__})"
        )
        raise
    else:
        services.training_run_finish(run_id=run_id, status=TrainingRun.Status.SUCCEEDED, metrics=metrics)
    finally:
        heartbeat.stop()
    return TrainingRun.objects.get(pk=run_id)


def _error_text(exc: Exception) -> str:
    """The run's error text: the exception's type and message, or what a time limit means."""
    from celery.exceptions import SoftTimeLimitExceeded

    if isinstance(exc, SoftTimeLimitExceeded):
        # Celery raises it without a message ("SoftTimeLimitExceeded: SoftTimeLimitExceeded()").
        limit = settings.SIMAPP_TRAIN_TIME_LIMIT_S
        return (
            f"the run took longer than its time limit ({limit} s, SIMAPP_TRAIN_TIME_LIMIT_S) and was stopped"
        )
    return f"{type(exc).__name__}: {exc}"


class _Laps:
    """Seconds spent in each part of a run, kept in its metrics: where a retrain's time went."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 3)
        self._last = now


def _execute(run: TrainingRun, reporter: RunReporter) -> dict[str, Any]:
    laps = _Laps()
    dataset = run.dataset
    config = run.config
    services.training_data_check(dataset=dataset, config=config)

    # Encode: one encoder pass over new or changed items; everything else comes from the cache.
    snapshot_at = timezone.now()
    rows = ItemRows.of(dataset)
    reporter.report(Stage.ENCODE, 0, len(rows.ids))
    encoder = dataset_encoder(dataset, rows.vectors)
    vectors, cache_stats = encode_items(
        encoder,
        rows,
        on_batch=lambda done: (reporter.report(Stage.ENCODE, done, len(rows.ids)), reporter.check()),
    )
    laps.lap("encode")

    # Train the head on the cached vectors.
    data = None if config.get("head") == "identity" else _training_data(dataset, rows, vectors)
    train_config = TrainConfig(
        head=config.get("head", "mlp"),
        loss=config.get("loss"),
        distance=encoder.distance,
        epochs=config.get("epochs"),
        learning_rate=config.get("lr"),
        batch_size=config.get("batch_size"),
        seed=config.get("seed", 0),
        knn_k=discovery.discovery_settings(dataset).knn_k,  # the k of the "unknown" calibration
    )

    seen = {"epoch": 1, "loss": None}
    # Without a refit (large data, by default) choosing the epoch count is the whole stage.
    phases = _TRAIN_PHASES if data is not None and refits(train_config, data) else {"train": (0.0, 1.0)}

    def on_train_progress(p: TrainProgress) -> None:
        # The loss curve grows live: when an epoch begins, the previous one's last loss is recorded.
        finished_loss = seen["loss"] if p.epoch > seen["epoch"] else None
        seen["epoch"], seen["loss"] = p.epoch, p.loss
        step, steps = (p.epoch - 1) * p.steps_per_epoch + p.step, p.epochs * p.steps_per_epoch
        # Training selects the epoch count on held-out items ("train"), then on small data refits on all
        # of them ("refit"), counting from epoch 1 again: give each phase its part of the stage, so the
        # overall progress never goes back (a refit that does not happen jumps forward at the evaluation).
        lo, hi = phases.get(p.stage, (0.0, 1.0))
        fraction = lo + (hi - lo) * (step / steps if steps else 0.0)
        reporter.report(Stage.TRAIN, step, steps, loss=finished_loss, fraction=fraction)

    if train_config.head == "identity":
        result = None  # nothing to learn: the frozen encoder's space is served as it is
        metrics: dict[str, Any] = {"head": "identity", "frozen": True, "train_seconds": 0.0}
    else:
        result = train(train_config, data, on_progress=on_train_progress, should_cancel=reporter.cancelled)
        reporter.device = result.device
        services.training_run_set_history(
            run_id=run.pk, loss_history=result.loss_history, device=result.device
        )
        # The held-out validation metric, fine-tuned and frozen (the identity head before training).
        metrics = {
            "metric": result.metric_name,
            "value": result.best_metric,
            "frozen": result.initial_metric,
            "loss": result.loss_name,
            "head": train_config.head,
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "n_train": result.n_train,
            "n_val": result.n_val,
            "train_seconds": round(result.seconds, 3),
        }
    reporter.report(Stage.EVALUATE, 0, 1)
    metrics |= {
        "encoded": cache_stats,
        "items": len(rows.ids),
        "data": "none" if data is None else "groups" if isinstance(data, GroupData) else "pairs",
    }
    reporter.report(Stage.EVALUATE, 1, 1)
    reporter.check()
    laps.lap("train")

    # Save the model as a new version (not active yet), then build its index beside the live one.
    head = create_head("identity", encoder.dim) if result is None else result.head
    model = SimilarityModel.from_encoder(encoder, head, metadata={"dataset": dataset.slug, "run": run.pk})
    number = (ModelVersion.objects.filter(dataset=dataset).aggregate(n=Max("number"))["n"] or 0) + 1
    store, alias = vector_store(), index_alias(dataset)
    if number == 1:
        # No version names a collection of this dataset, so any under its alias is a leftover: of a build
        # that died, or of a deleted dataset of the same slug whose index could not be dropped. Its alias
        # could point at the very collection this version builds, which build_and_activate refuses.
        for name in sorted(collection_versions(store, alias).values()):
            store.drop(name)
    # Read before anything of the version is written: a store that fails here leaves no row nor files.
    previous = store.get_alias(alias)
    relative = model_dir(dataset.slug, number)
    artifact = Path(settings.DATA_DIR) / relative
    if artifact.exists():  # left over by a run that died before recording its version
        shutil.rmtree(artifact)
    model.save(artifact)
    version = ModelVersion.objects.create(
        dataset=dataset,
        run=run,
        number=number,
        artifact_path=str(relative),
        collection=index_collection(dataset, number),
        metrics=metrics,
    )
    build: Any = None  # set once the new index is built and the alias has moved to it
    try:
        laps.lap("save")
        final = model.embed(vectors)  # (N, D) float32, normalised for cosine
        laps.lap("embed")
        build = version_index_build(dataset, version, rows, final, model.distance, reporter)
        laps.lap("index")
        # Before the version serves: its "unknown" threshold and every item's anomaly score.
        reporter.report(Stage.ACTIVATE, 0, 1)
        discovery.version_calibrate(
            dataset=dataset,
            version=version,
            labels=rows.labels,
            vectors=final,
            distance=model.distance,
            holdout_scores=None if result is None else result.holdout_scores,
        )
        laps.lap("calibrate")
        discovery.anomaly_scores_compute(
            dataset=dataset, version=version, item_ids=rows.ids, vectors=final, distance=model.distance
        )
        laps.lap("anomaly")
        with transaction.atomic():
            # The reaper may have failed this run meanwhile (a late heartbeat): a run that no longer counts
            # as running must not serve; raising puts the previous version and its alias back.
            if not TrainingRun.objects.select_for_update().filter(pk=run.pk, status=Status.RUNNING).exists():
                raise RunLost(
                    f"run {run.pk} stopped counting as running before its version could be activated"
                )
            ModelVersion.objects.filter(dataset=dataset, is_active=True).update(is_active=False)
            ModelVersion.objects.filter(pk=version.pk).update(is_active=True, activated_at=timezone.now())
        version_index_reconcile(dataset, rows, since=snapshot_at)
        reporter.report(Stage.ACTIVATE, 1, 1)
    except BaseException:
        try:
            _undo_version(version, alias=alias, previous=previous, switched=build is not None)
        finally:
            shutil.rmtree(artifact, ignore_errors=True)
        raise
    laps.lap("activate")
    metrics["version"] = number
    metrics["index_seconds"] = round(build.seconds, 3)
    metrics["seconds"] = laps.seconds
    return metrics


def _undo_version(version: ModelVersion, *, alias: str, previous: str | None, switched: bool) -> None:
    """Take back a version that failed at or after its alias switch, so index and database agree again.

    The alias goes back to ``previous`` (dropping the new collection removes the alias with it when there
    was none), the version that served before is active again and the new version's row is deleted.

    ``switched``: whether the build got as far as moving the alias. If it did not, the alias never changed,
    so a store that cannot be reached (it went away mid-upload) does not stop the row from going: a
    collection that no version names is never served, and the next build of that number replaces it. The
    run then fails with its own error, not with this clean-up's.
    """
    store = vector_store()
    try:
        if store.get_alias(alias) == version.collection and previous:
            store.set_alias(alias, previous)
        store.drop(version.collection)  # a no-op when build_and_activate already dropped it
    except VectorStoreError:
        if switched:
            raise
        logger.warning("could not drop the half-built collection %s", version.collection, exc_info=True)
    with transaction.atomic():
        ModelVersion.objects.filter(pk=version.pk).delete()
        versions = ModelVersion.objects.filter(dataset_id=version.dataset_id)
        # Only when this run had deactivated it: a version activated by hand meanwhile stays active.
        if previous and not versions.filter(is_active=True).exists():
            versions.filter(collection=previous).update(is_active=True)


def _training_data(dataset: Dataset, rows: ItemRows, vectors: np.ndarray) -> GroupData | PairData:
    """Group labels when the dataset has them (two labels with two items each), else scored pairs."""
    labels = np.asarray(rows.labels, dtype=object)
    labelled = np.flatnonzero(labels != "")
    if labelled.size:
        names, counts = np.unique(labels[labelled].astype(str), return_counts=True)
        usable = set(names[counts >= 2].tolist())
        if len(usable) >= 2:
            keep = np.asarray([i for i in labelled.tolist() if labels[i] in usable], dtype=np.int64)
            return GroupData(vectors[keep], labels[keep].astype(str))
    row_of = {item_id: row for row, item_id in enumerate(rows.ids)}
    pairs = Pair.objects.filter(dataset=dataset).values_list("item_a_id", "item_b_id", "score")
    # Pairs are read after the items: skip those whose items arrived later (not encoded by this run).
    index = [(row_of[a], row_of[b], score) for a, b, score in pairs if a in row_of and b in row_of]
    return PairData(vectors, [(a, b) for a, b, _ in index], [s for _, _, s in index])


def version_index_build(
    dataset: Dataset,
    version: ModelVersion,
    rows: ItemRows,
    final: np.ndarray,
    distance: str,
    reporter: RunReporter | None = None,
    *,
    before_activate: Callable[[], None] | None = None,
) -> BuildResult:
    """Build the version's collection from the snapshot ``rows`` (embedded as ``final``, (N, D)) and point
    the dataset's alias at it.

    ``reporter``: the run's, for progress and cancels. ``before_activate``: called once the collection has
    passed its checks, just before the alias moves; raising there drops the new collection and leaves the
    alias as it was.
    """
    total = len(rows.ids)

    def points() -> Any:
        for i, item_id in enumerate(rows.ids):
            yield Point(
                id=point_id(item_id),
                vector=final[i],
                payload=make_payload(rows.keys[i], rows.labels[i] or None, rows.metadata[i]),
            )

    class _Points:
        def __len__(self) -> int:
            return total

        def __iter__(self) -> Any:
            return points()

    def on_index_progress(p: IndexProgress) -> None:
        if reporter is not None:
            # Upload is the bulk of the work; the other steps are shown at the stage's end.
            done = p.done if p.stage == "upload" else total
            reporter.report(Stage.INDEX, min(done, total), total)
            if p.stage in ("upload", "optimize", "verify") or (p.stage == "activate" and p.done == 0):
                # Raising here makes build_and_activate drop the half-built collection. Once the alias has
                # switched ("activate" done, "prune"), the new version serves: a late cancel is ignored.
                reporter.check()
        if before_activate is not None and p.stage == "activate" and p.done == 0:
            before_activate()

    return build_and_activate(
        vector_store(),
        alias=index_alias(dataset),
        collection=version.collection,
        dim=int(final.shape[1]),
        distance=store_distance(distance),
        points=_Points(),
        indexed_fields=indexed_fields(rows.metadata),
        keep=settings.SIMAPP_INDEX_KEEP,
        on_progress=on_index_progress,
    )


def version_index_reconcile(dataset: Dataset, rows: ItemRows, *, since: datetime) -> None:
    """Bring the dataset's index, just built from the snapshot ``rows`` taken at ``since``, up to date with
    the items written and deleted meanwhile.

    Items written since went into the previous index (or none): they are embedded with the active model.
    Items deleted since left the previous index only; the new one was built from the snapshot and still
    holds them.
    """
    late = list(Item.objects.filter(dataset=dataset, updated_at__gte=since).values_list("id", flat=True))
    index_items_upsert(dataset=dataset, item_ids=late)
    remaining = set(Item.objects.filter(dataset=dataset).values_list("id", flat=True))
    gone = [item_id for item_id in rows.ids if item_id not in remaining]
    if gone:
        vector_store().delete(index_alias(dataset), [point_id(item_id) for item_id in gone])
