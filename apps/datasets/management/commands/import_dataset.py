from __future__ import annotations

import json
import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from apps.common import background
from apps.common.limits import upload_too_large
from apps.datasets.archive import dataset_archive_import
from apps.datasets.formats import FORMATS, ColumnNames, DataFormatError
from apps.datasets.models import Dataset
from apps.datasets.services import dataset_import
from apps.datasets.signals import ItemsChangeUnavailable

# Files smaller than this import too fast for a progress bar to help.
_PROGRESS_MIN_BYTES = 2 * 1024 * 1024


class Command(BaseCommand):
    help = (
        "Import items and pairs from a file into a dataset (created if missing). All or nothing; idempotent. "
        "--format archive restores a whole dataset from export_dataset --format archive as dataset SLUG."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="dataset slug")
        parser.add_argument("path", help="file to import")
        parser.add_argument("--format", required=True, choices=(*FORMATS, "archive"), dest="fmt")
        parser.add_argument("--split", help="clinc150: which split to read (train, val, oos_val, …)")
        parser.add_argument("--name", default="", help="display name for a new dataset")
        parser.add_argument("--key-column", default="key", help="csv/jsonl: column holding the item key")
        parser.add_argument("--text-column", default="text", help="csv/jsonl: column holding the text")
        parser.add_argument("--label-column", default="label", help="csv/jsonl: column holding the label")
        parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
        parser.add_argument(
            "--no-index",
            action="store_true",
            help="archive: do not rebuild the active version's index now (manage.py rebuild_index does it later)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path = options["path"]
        try:
            size = os.path.getsize(path)
            fp = open(path, "rb")  # noqa: SIM115 - closed below, after the import
        except OSError as exc:
            raise CommandError(f"{path}: {exc.strerror}") from None
        # The same limits as the import page and API; the row limit is checked while reading.
        too_large = upload_too_large(size, what="the file")
        if too_large:
            fp.close()
            raise CommandError(f"{path}: {too_large}")
        if options["fmt"] == "archive":
            with fp:
                self._restore(fp, options)
            return
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
        except (DataFormatError, ItemsChangeUnavailable) as exc:
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

    def _restore(self, fp: Any, options: dict[str, Any]) -> None:
        """``--format archive``: restore the whole dataset, then rebuild its index unless ``--no-index``."""
        from apps.training.restore import IndexRestoreRefused, dataset_index_restore

        defaults = {
            "split": None,
            "name": "",
            "key_column": "key",
            "text_column": "text",
            "label_column": "label",
        }
        for option, default in defaults.items():
            if options[option] != default:
                raise CommandError(f"--{option.replace('_', '-')} does not apply to --format archive")
        bars: dict[str, tqdm] = {}

        def progress(table: str, done: int, total: int) -> None:
            if options["json"] or total < 10_000:
                return
            bar = bars.get(table)
            if bar is None:
                bar = bars[table] = tqdm(total=total, unit=" rows", desc=table, file=sys.stderr)
            bar.update(done - bar.n)

        try:
            result = dataset_archive_import(
                fp=fp, source_name=options["path"], slug=options["slug"], on_progress=progress
            )
        except DataFormatError as exc:
            raise CommandError(str(exc)) from None
        finally:
            for bar in bars.values():
                bar.close()
        index = "not built (--no-index): manage.py rebuild_index " + result.dataset
        if result.active_version is None:
            index = "none (no active model version)"
        elif not options["no_index"]:
            try:
                build = dataset_index_restore(dataset=Dataset.objects.get(slug=result.dataset))
                index = f"{build.collection} ({build.points} items)"
            except IndexRestoreRefused as exc:
                index = f"not built: {exc}"
            except Exception as exc:
                raise CommandError(
                    f"{result.summary()}; but its index could not be built ({type(exc).__name__}: {exc}): "
                    f"fix that, then run manage.py rebuild_index {result.dataset}"
                ) from exc
        background.drain()
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict() | {"index": index}))
            return
        self.stdout.write(self.style.SUCCESS(result.summary()))
        self.stdout.write(f"index: {index}")
