from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.datasets.models import Dataset
from apps.datasets.selectors import dataset_stats


class Command(BaseCommand):
    help = "Print a dataset's counts: items, pairs, distinct labels, active model version."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        dataset = Dataset.objects.filter(slug=options["slug"]).first()
        if dataset is None:
            raise CommandError(f"no dataset '{options['slug']}'")
        stats = dataset_stats(dataset=dataset)
        if options["json"]:
            self.stdout.write(json.dumps(stats))
            return
        for name, value in stats.items():
            self.stdout.write(f"{name:>15}: {'none' if value is None else value}")
