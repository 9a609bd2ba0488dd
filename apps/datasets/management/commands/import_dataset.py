from __future__ import annotations

import json
import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from apps.common import background
from apps.datasets.formats import FORMATS, ColumnNames, DataFormatError
from apps.datasets.services import dataset_import

# Files smaller than this import too fast for a progress bar to help.
_PROGRESS_MIN_BYTES = 2 * 1024 * 1024


class Command(BaseCommand):
    help = (
        "Import items and pairs from a file into a dataset (created if missing). All or nothing; idempotent."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="dataset slug")
        parser.add_argument("path", help="file to import")
        parser.add_argument("--format", required=True, choices=FORMATS, dest="fmt")
        parser.add_argument("--split", help="clinc150: which split to read (train, val, oos_val, …)")
        parser.add_argument("--name", default="", help="display name for a new dataset")
        parser.add_argument("--key-column", default="key", help="csv/jsonl: column holding the item key")
        parser.add_argument("--text-column", default="text", help="csv/jsonl: column holding the text")
        parser.add_argument("--label-column", default="label", help="csv/jsonl: column holding the label")
        parser.add_argument("--json", action="store_true", help="print the result as one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        path = options["path"]
        try:
            size = os.path.getsize(path)
            fp = open(path, "rb")  # noqa: SIM115 - closed below, after the import
        except OSError as exc:
            raise CommandError(f"{path}: {exc.strerror}") from None
        show = size >= _PROGRESS_MIN_BYTES and not options["json"]
        name = os.path.basename(path)
        bars: dict[str, tqdm] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if not show:
                return
            bar = bars.get(stage)
            if bar is None:
                for other in bars.values():
                    other.close()
                unit = "B" if stage == "read" else " rows"
                bar = bars[stage] = tqdm(
                    total=total or None,
                    unit=unit,
                    unit_scale=stage == "read",
                    desc=f"{stage} {name}",
                    file=sys.stderr,
                )
            bar.update(done - bar.n)

        try:
            with fp:
                result = dataset_import(
                    slug=options["slug"],
                    fp=fp,
                    source_name=path,
                    fmt=options["fmt"],
                    split=options["split"],
                    columns=ColumnNames(
                        key=options["key_column"], text=options["text_column"], label=options["label_column"]
                    ),
                    name=options["name"],
                    on_progress=progress,
                    total_bytes=size,
                )
        except DataFormatError as exc:
            raise CommandError(str(exc)) from None
        finally:
            for bar in bars.values():
                bar.close()
        # New items may be on their way into the active index in the job thread: let that finish.
        background.drain()
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict()))
            return
        for notice in result.notices:
            self.stderr.write(f"note: {notice}")
        self.stdout.write(self.style.SUCCESS(result.summary()))
