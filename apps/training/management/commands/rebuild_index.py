from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.common import background
from apps.datasets.models import Dataset
from apps.training.restore import IndexRestoreRefused, dataset_index_restore


class Command(BaseCommand):
    help = (
        "Rebuild the index of each dataset's active model version from its model files, in the foreground: "
        "after a restore (import_dataset --format archive --no-index, or the database and the data directory "
        "without Qdrant's storage). The dataset does not serve while its index is rebuilt."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slugs", nargs="*", metavar="SLUG", help="datasets to rebuild")
        parser.add_argument("--all", action="store_true", help="every dataset with an active model version")

    def handle(self, *args: Any, **options: Any) -> None:
        slugs: list[str] = options["slugs"]
        if options["all"] == bool(slugs):
            raise CommandError("give dataset slugs, or --all")
        if options["all"]:
            datasets = list(Dataset.objects.filter(model_versions__is_active=True).order_by("slug"))
        else:
            found = {d.slug: d for d in Dataset.objects.filter(slug__in=slugs)}
            missing = [slug for slug in slugs if slug not in found]
            if missing:
                raise CommandError(f"no dataset '{missing[0]}'")
            datasets = [found[slug] for slug in slugs]
        if not datasets:
            self.stdout.write("no dataset has an active model version: nothing to rebuild")
            return
        failed = []
        for dataset in datasets:
            try:
                build = dataset_index_restore(dataset=dataset)
            except IndexRestoreRefused as exc:
                self.stderr.write(f"{dataset.slug}: {exc}")
                failed.append(dataset.slug)
                continue
            self.stdout.write(
                self.style.SUCCESS(f"{dataset.slug}: {build.collection} ({build.points} items)")
            )
        background.drain()
        if failed:
            raise CommandError(f"no index rebuilt for {', '.join(failed)}")
