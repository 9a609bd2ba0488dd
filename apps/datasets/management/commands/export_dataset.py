from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.datasets.models import Dataset
from apps.datasets.services import EXPORT_FORMATS, dataset_export


class Command(BaseCommand):
    help = "Write a dataset's items and pairs to a file that import_dataset reads back unchanged."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("path", help="output file ('-' for standard output)")
        parser.add_argument("--format", required=True, choices=EXPORT_FORMATS, dest="fmt")

    def handle(self, *args: Any, **options: Any) -> None:
        dataset = Dataset.objects.filter(slug=options["slug"]).first()
        if dataset is None:
            raise CommandError(f"no dataset '{options['slug']}'")
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
