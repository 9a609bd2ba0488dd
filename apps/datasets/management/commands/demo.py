"""``manage.py demo``: set up the demo (database, demo admin, bundled datasets, trained models) and serve it.

Safe to run again: the database is migrated in place, the demo user is kept, items already imported are
found unchanged (imports are idempotent), and a dataset whose active model version was trained on the
data it still has is not retrained. A retrain that is needed encodes only new or changed items (the
embedding cache under ``SIMAPP_DATA_DIR`` keeps the rest).

The server is Django's threaded ``runserver`` without the autoreloader, in this process: the embedded
vector store belongs to one process, so the process that trained and indexed serves as well, and
retrains started from the pages run in its job thread.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from apps.common import background
from apps.datasets.formats import DataFormatError, ItemRecord, iter_clinc150
from apps.datasets.models import Dataset, Item
from apps.datasets.services import ImportResult, dataset_import, dataset_records_save, dataset_update
from apps.labelling.models import Pair
from apps.training import jobs, selectors, services
from apps.training.index import vector_store
from apps.training.models import ModelVersion, TrainingRun
from simapp.env import env_bool
from simapp.vectors import VectorStoreUnavailable

DEMO_DATA = Path(__file__).resolve().parents[2] / "demo_data"
CLINC150_FILE = DEMO_DATA / "clinc150" / "data_full_train_val.json"
CARDIO_FILE = DEMO_DATA / "odds" / "cardio.mat"

# Not a format of the importers: a CLINC150 out-of-scope split read as unlabelled items.
OOS_FORMAT = "clinc150-oos"


@dataclass(frozen=True)
class DemoSource:
    """One file of a demo dataset.

    ``fmt`` is an importer format (``clinc150``, ``odds``, ``csv``, ...) or ``clinc150-oos``: the
    out-of-scope queries of a CLINC150 split, stored **without a label** and with ``metadata.outlier = 1``.
    Unlabelled, they are no class to train on or to vote in classification, yet they are indexed and scored:
    the anomaly dashboard has real out-of-scope queries to find, and "unknown" in classify has a reason.
    """

    path: Path
    fmt: str
    split: str | None = None


@dataclass(frozen=True)
class DemoDataset:
    slug: str
    name: str
    description: str
    sources: tuple[DemoSource, ...]
    # Options of `manage.py train` ({} = the defaults; {"head": "identity"} indexes the frozen encoder).
    train: dict[str, Any] = field(default_factory=dict)


DEMO_DATASETS: tuple[DemoDataset, ...] = (
    DemoDataset(
        slug="clinc150",
        name="CLINC150 intents",
        description=(
            "Questions people ask a voice assistant, labelled with one of 150 intents (100 each; CLINC150 "
            "train split, CC BY 3.0), plus 100 out-of-scope questions without a label "
            "(metadata.outlier = 1). Fine-tuned with the default head; try Classify with a question no "
            "intent covers, and the Anomalies page."
        ),
        sources=(
            DemoSource(CLINC150_FILE, "clinc150", "train"),
            DemoSource(CLINC150_FILE, OOS_FORMAT, "oos_train"),
        ),
    ),
    DemoDataset(
        slug="cardio",
        name="Cardiotocography (ODDS)",
        description=(
            "1,831 foetal heart-rate recordings, 21 features each (ODDS cardio, from UCI); 176 are outliers "
            "(metadata.outlier = 1). No labels to learn from: indexed with the frozen encoder (standardised "
            "features, Euclidean distance) for anomaly scores and neighbours."
        ),
        sources=(DemoSource(CARDIO_FILE, "odds"),),
        train={"head": "identity"},
    ),
)


class Command(BaseCommand):
    help = (
        "Set up the demo (database, demo admin, bundled datasets, trained and indexed models) and serve it "
        "at http://127.0.0.1:8000. Safe to run again: it reuses what exists."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--addr", default="127.0.0.1:8000", help="address:port to serve on")
        parser.add_argument("--no-serve", action="store_true", help="set up only, do not start the server")
        parser.add_argument(
            "--retrain", action="store_true", help="retrain every demo dataset even when its model is current"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        addr = options["addr"]
        if not options["no_serve"]:
            _check_port_free(addr)  # before minutes of setup, not after
        self.stdout.write("• database")
        call_command("migrate", verbosity=0)
        _open_vector_store()
        username, password_note = self._demo_user()
        for demo in DEMO_DATASETS:
            dataset = self._import(demo)
            self._train(demo, dataset, force=options["retrain"])

        self.stdout.write(self.style.SUCCESS(f"\nsimapp demo: http://{addr}/"))
        self.stdout.write(f"  log in as {username} / {password_note}")
        for demo in DEMO_DATASETS:
            self.stdout.write(f"  {_serving_line(Dataset.objects.get(slug=demo.slug))}")
        if options["no_serve"]:
            return
        self.stdout.write("  stop with Ctrl-C; `make demo` again restarts it and reuses all of the above\n")
        self.stdout.flush()
        call_command("runserver", addr, use_reloader=False)

    def _demo_user(self) -> tuple[str, str]:
        """Create the demo admin once; return its name and how to describe its password."""
        username = os.environ.get("SIMAPP_DEMO_USER", "demo")
        password = os.environ.get("SIMAPP_DEMO_PASSWORD", "")
        if not password and not env_bool("DJANGO_DEBUG", True):  # as configured (tests run with DEBUG off)
            # A superuser with a password printed in the README must not appear on a production server.
            raise CommandError("DJANGO_DEBUG is off: set SIMAPP_DEMO_PASSWORD to the demo admin's password")
        password = password or "simapp-demo"
        user, created = get_user_model().objects.get_or_create(
            username=username, defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            user.set_password(password)
            user.save()
            self.stdout.write(f"• demo admin '{username}' created")
        elif not user.check_password(password):
            return username, f"(the password set since; reset it: python manage.py changepassword {username})"
        return username, password

    def _import(self, demo: DemoDataset) -> Dataset:
        for source in demo.sources:
            split = f" [{source.split}]" if source.split else ""
            self.stdout.write(f"• {demo.slug}: import {source.path.name}{split}")
            with _Bars(self.stderr._out, source.path.name) as bars:
                try:
                    result = _import_source(demo, source, on_progress=bars.progress)
                except (DataFormatError, OSError) as exc:  # only if the bundled files were damaged or removed
                    raise CommandError(f"could not import the demo data: {exc}") from None
            self.stdout.write(f"  {result.summary()}")
        # New items of a dataset that already serves go into its index in the job thread: let that finish.
        background.drain()
        dataset = Dataset.objects.get(slug=demo.slug)
        if not dataset.description:
            dataset = dataset_update(dataset=dataset, description=demo.description)
        return dataset

    def _train(self, demo: DemoDataset, dataset: Dataset, *, force: bool) -> None:
        active = selectors.model_version_active(dataset=dataset)
        reason = "retrain asked for" if force else model_stale_reason(dataset=dataset, version=active)
        if reason is None and active is not None:
            self.stdout.write(f"• {demo.slug}: v{active.number} is up to date with the data; not retrained")
            return
        self.stdout.write(f"• {demo.slug}: train ({reason})")
        services.training_runs_reap()
        if not jobs.uses_broker():
            # Without a broker the job queue is a web process's memory: a run it left queued when it stopped
            # would never start, and would block this one.
            for run in TrainingRun.objects.filter(dataset=dataset, status=TrainingRun.Status.QUEUED):
                services.training_run_cancel(run=run)
                self.stdout.write(f"  cancelled run {run.pk}, left queued by a server that stopped")
        # The encoder's "loading the model" log line would cut through the progress bar.
        logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
        train_args = [f"--{name.replace('_', '-')}={value}" for name, value in demo.train.items()]
        call_command(
            "train", demo.slug, "--wait", *train_args, stdout=self.stdout._out, stderr=self.stderr._out
        )


def model_stale_reason(*, dataset: Dataset, version: ModelVersion | None) -> str | None:
    """Why ``dataset`` needs a retrain before it serves, or None when its active version is current.

    Current means: the version's run started after every item and pair of the dataset was last written,
    and it saw as many items as there are now (a deletion writes nothing that a timestamp would show).
    """
    if version is None:
        return "no model yet"
    since = version.run.started_at or version.run.created_at
    items = Item.objects.filter(dataset=dataset)
    count, trained_on = items.count(), version.metrics.get("items")
    if trained_on is not None and count != trained_on:
        return f"{count} items now, v{version.number} was trained on {trained_on}"
    if items.filter(updated_at__gte=since).exists():
        return f"items added or changed since v{version.number}"
    if Pair.objects.filter(dataset=dataset, updated_at__gte=since).exists():
        return f"pairs labelled since v{version.number}"
    return None


def _import_source(demo: DemoDataset, source: DemoSource, *, on_progress: Any) -> ImportResult:
    size = source.path.stat().st_size
    with source.path.open("rb") as fp:
        if source.fmt != OOS_FORMAT:
            return dataset_import(
                slug=demo.slug,
                fp=fp,
                source_name=source.path.name,
                fmt=source.fmt,
                split=source.split,
                name=demo.name,
                on_progress=on_progress,
                total_bytes=size,
            )
        return dataset_records_save(
            slug=demo.slug,
            records=list(_out_of_scope_records(fp, source)),
            source_name=source.path.name,
            pair_source=Pair.Source.IMPORT,
            create_missing=True,
            name=demo.name,
            on_progress=on_progress,
        )


def _out_of_scope_records(fp: IO[bytes], source: DemoSource) -> Iterator[ItemRecord]:
    # Keyed as the clinc150 importer keys rows (`<split>-<index>`), so both kinds sit side by side.
    for row in iter_clinc150(fp, source=source.path.name, splits=(source.split or "oos_train",)):
        yield ItemRecord(
            key=f"{row.split}-{row.index:05d}",
            text=row.text,
            label="",
            metadata={"outlier": 1},
            line=row.line,
        )


def _serving_line(dataset: Dataset) -> str:
    items = Item.objects.filter(dataset=dataset).count()
    version = selectors.model_version_active(dataset=dataset)
    if version is None:
        return f"{dataset.slug}: {items:,} items, no model"
    metrics = version.metrics
    if metrics.get("head") == "identity":
        quality = "the frozen encoder"
    else:
        quality = f"held-out {metrics.get('metric')} {_fmt(metrics.get('value'))} (frozen {_fmt(metrics.get('frozen'))})"
    return f"{dataset.slug}: {items:,} items, v{version.number} serves: {quality}"


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _check_port_free(addr: str) -> None:
    host, _, port = addr.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit():
        raise CommandError(f"--addr {addr!r}: expected address:port, e.g. 127.0.0.1:8000")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError as exc:
            raise CommandError(
                f"cannot serve on {addr}: {exc.strerror}. Is the demo already running? Stop it, or pick "
                f"another address: python manage.py demo --addr 127.0.0.1:8001"
            ) from None


def _open_vector_store() -> None:
    """Open the store now: a second demo on the same data directory stops here, with the reason."""
    try:
        vector_store()
    except VectorStoreUnavailable as exc:
        raise CommandError(f"{exc} Is the demo (or another simapp process) already running?") from None


class _Bars:
    """tqdm bars for an import's stages ("read" counts bytes, "write" counts rows), one at a time."""

    def __init__(self, stream: Any, name: str) -> None:
        self.stream = stream or sys.stderr
        self.name = name
        self.bars: dict[str, tqdm] = {}

    def progress(self, stage: str, done: int, total: int) -> None:
        bar = self.bars.get(stage)
        if bar is None:
            for other in self.bars.values():
                other.close()
            bar = self.bars[stage] = tqdm(
                total=total or None,
                unit="B" if stage == "read" else " rows",
                unit_scale=stage == "read",
                desc=f"  {stage} {self.name}",
                file=self.stream,
                leave=False,
            )
        bar.update(done - bar.n)

    def __enter__(self) -> _Bars:
        return self

    def __exit__(self, *exc: object) -> None:
        for bar in self.bars.values():
            bar.close()
