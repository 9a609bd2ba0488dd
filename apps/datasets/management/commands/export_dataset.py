from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.datasets.archive import dataset_archive_export
from apps.datasets.formats import DataFormatError
from apps.datasets.models import Dataset
from apps.datasets.services import EXPORT_FORMATS, dataset_export


class Command(BaseCommand):
    help = (
        "Write a dataset's items and pairs (jsonl, csv), or everything of it (archive: a zip of items, pairs, "
        "users, feedback, runs, model versions, anomaly scores) to a file that import_dataset reads back."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("path", help="output file ('-' for standard output)")
        parser.add_argument("--format", required=True, choices=(*EXPORT_FORMATS, "archive"), dest="fmt")
        parser.add_argument(
            "--artifacts",
            action="store_true",
            help="archive: include the model versions' files, so the restored dataset serves without a retrain",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        dataset = Dataset.objects.filter(slug=options["slug"]).first()
        if dataset is None:
            raise CommandError(f"no dataset '{options['slug']}'")
        if options["fmt"] == "archive":
            self._archive(dataset, options["path"], artifacts=options["artifacts"])
            return
        if options["artifacts"]:
            raise CommandError("--artifacts goes with --format archive only")
        chunks = dataset_export(dataset=dataset, fmt=options["fmt"])
        if options["path"] == "-":
            for chunk in chunks:
                self.stdout.write(chunk, ending="")
            return
        try:
            with open(options["path"], "w", encoding="utf-8", newline="") as out:
                for chunk in chunks:
                    out.write(chunk)
        except OSError as exc:
            raise CommandError(f"{options['path']}: {exc.strerror}") from None

    def _archive(self, dataset: Dataset, path: str, *, artifacts: bool) -> None:
        if path == "-":
            raise CommandError("an archive is a zip file: give a file path, not '-'")
        # Written beside the target and renamed at the end: a failed export leaves no half archive.
        partial = f"{path}.partial"
        try:
            with open(partial, "wb") as out:
                result = dataset_archive_export(dataset=dataset, fp=out, artifacts=artifacts)
            os.replace(partial, path)
        except OSError as exc:
            raise CommandError(f"{exc.filename or path}: {exc.strerror}") from None
        except DataFormatError as exc:
            raise CommandError(str(exc)) from None
        finally:
            if os.path.exists(partial):
                os.remove(partial)
        for number in result.artifacts_missing:
            self.stderr.write(
                f"note: v{number} has no model files in the data directory; archived without them"
            )
        self.stdout.write(self.style.SUCCESS(f"{path}: {result.summary()}"))
