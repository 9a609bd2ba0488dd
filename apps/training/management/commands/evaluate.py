from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.datasets.formats import FORMATS, DataFormatError
from apps.datasets.models import Dataset
from apps.training.evaluation import EvaluationError, model_evaluate
from simapp.vectors import VectorStoreUnavailable


class Command(BaseCommand):
    help = "Measure the active model and index of a dataset on a labelled file (metrics fit the data)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("path")
        parser.add_argument("--format", required=True, choices=FORMATS, dest="fmt")
        parser.add_argument(
            "--split", help="clinc150: the split (its oos_<split> gives out-of-scope examples)"
        )
        parser.add_argument("--k", type=int, default=10, help="neighbours per query (default 10)")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        dataset = Dataset.objects.filter(slug=options["slug"]).first()
        if dataset is None:
            raise CommandError(f"no dataset '{options['slug']}'")
        try:
            with open(options["path"], "rb") as fp:
                metrics = model_evaluate(
                    dataset=dataset,
                    fp=fp,
                    source=options["path"],
                    fmt=options["fmt"],
                    split=options["split"],
                    k=options["k"],
                )
        except OSError as exc:
            raise CommandError(f"{options['path']}: {exc.strerror}") from None
        except (DataFormatError, EvaluationError, VectorStoreUnavailable) as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.stdout.write(json.dumps(metrics))
            return
        for name, value in metrics.items():
            self.stdout.write(
                f"{name:>15}: {value:.4f}" if isinstance(value, float) else f"{name:>15}: {value}"
            )
