from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from apps.datasets.formats import DataFormatError
from apps.datasets.services import dataset_import

DEMO_DATA = Path(__file__).resolve().parents[2] / "demo_data"

# (slug, display name, file, format, split): real data shipped with the app, licenses beside the files.
DEMO_DATASETS = [
    (
        "clinc150",
        "CLINC150 intents",
        DEMO_DATA / "clinc150" / "data_full_train_val.json",
        "clinc150",
        "train",
    ),
    ("cardio", "Cardiotocography (ODDS)", DEMO_DATA / "odds" / "cardio.mat", "odds", None),
]


class Command(BaseCommand):
    help = "Set up the demo (database, demo admin, bundled datasets) and serve it. Safe to run again."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--addr", default="127.0.0.1:8000", help="address:port to serve on")
        parser.add_argument("--no-serve", action="store_true", help="set up only, do not start the server")

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write("• database")
        call_command("migrate", verbosity=0)
        username = os.environ.get("SIMAPP_DEMO_USER", "demo")
        password = os.environ.get("SIMAPP_DEMO_PASSWORD", "simapp-demo")
        user, created = get_user_model().objects.get_or_create(
            username=username, defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            user.set_password(password)
            user.save()
        for slug, name, path, fmt, split in DEMO_DATASETS:
            self.stdout.write(f"• dataset {slug} from {path.name}")
            try:
                with path.open("rb") as fp:
                    result = dataset_import(
                        slug=slug,
                        fp=fp,
                        source_name=path.name,
                        fmt=fmt,
                        split=split,
                        name=name,
                        total_bytes=path.stat().st_size,
                    )
            except DataFormatError as exc:  # only if the bundled files were damaged
                self.stderr.write(f"  could not import: {exc}")
                continue
            self.stdout.write(f"  {result.summary()}")
        host = options["addr"]
        self.stdout.write(
            self.style.SUCCESS(
                f"\nsimapp demo: http://{host}/   log in as {username} / "
                f"{password if created else '(the password set when this user was created)'}"
            )
        )
        if not options["no_serve"]:
            call_command("runserver", host, use_reloader=False)
