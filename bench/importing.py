"""Import speed on the real shared data: ``python -m bench.importing [--json]``.

Each dataset is imported into a fresh database (a temporary SQLite file, or a throw-away PostgreSQL
database when DATABASE_URL is set), then imported again, which must add nothing. The CLINC150 train split
is also imported by a real ``manage.py import_dataset`` process, start-up included, as a user runs it.
Prints a table and, as the last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.database import throwaway_database

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SIMAPP_SHARED_DATA", REPO.parent / "shared" / "data"))

CASES: list[dict[str, Any]] = [
    {
        "name": "clinc150_train",
        "path": SHARED / "clinc150" / "data_full_train_val.json",
        "fmt": "clinc150",
        "split": "train",
    },
    {"name": "stsb_train", "path": SHARED / "stsb" / "sts-train.csv", "fmt": "stsb"},
    {
        "name": "banking77_train",
        "path": SHARED / "banking77" / "train.csv",
        "fmt": "csv",
        "label": "category",
    },
    {"name": "odds_shuttle", "path": SHARED / "odds" / "shuttle.mat", "fmt": "odds"},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="simapp-bench-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "simapp.settings")
    if not os.environ.get("DATABASE_URL"):
        os.environ["SIMAPP_DATA_DIR"] = str(scratch)
    backend, drop_database = throwaway_database()
    from django.db import connection

    from apps.datasets.formats import ColumnNames
    from apps.datasets.services import dataset_import

    def run(case: dict[str, Any], slug: str) -> tuple[float, Any]:
        start = time.perf_counter()
        with case["path"].open("rb") as fp:
            result = dataset_import(
                slug=slug,
                fp=fp,
                source_name=case["path"].name,
                fmt=case["fmt"],
                split=case.get("split"),
                columns=ColumnNames(label=case.get("label", "label")),
            )
        return time.perf_counter() - start, result

    figures: dict[str, Any] = {"database": backend}
    rows = []
    try:
        for case in CASES:
            first_s, first = run(case, case["name"])
            again_s, again = run(case, case["name"])
            added = again.items_created + again.pairs_created
            figures |= {
                f"{case['name']}_items": first.items_created,
                f"{case['name']}_pairs": first.pairs_created,
                f"{case['name']}_import_seconds": round(first_s, 3),
                f"{case['name']}_reimport_seconds": round(again_s, 3),
                f"{case['name']}_reimport_added": added,
            }
            rows.append((case["name"], first.items_created, first.pairs_created, first_s, again_s, added))

        # The whole command as a user runs it: a new process, Django start-up, import, exit.
        env = dict(os.environ)
        if backend == "postgresql":
            env["DATABASE_URL"] = _with_database(os.environ["DATABASE_URL"], connection.settings_dict["NAME"])
        connection.close()
        case = CASES[0]
        start = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "manage.py",
                "import_dataset",
                "clinc150_cli",
                str(case["path"]),
                "--format",
                "clinc150",
                "--split",
                "train",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        figures["clinc150_train_command_seconds"] = round(time.perf_counter() - start, 3)
        figures["clinc150_train_command_output"] = done.stdout.strip()
    finally:
        drop_database()

    if not args.json:
        print(f"database: {backend}")
        print(
            f"{'dataset':<18}{'items':>8}{'pairs':>8}{'import s':>10}{'items/s':>10}{'again s':>10}{'added':>7}"
        )
        for name, items, pairs, first_s, again_s, added in rows:
            print(
                f"{name:<18}{items:>8}{pairs:>8}{first_s:>10.2f}{items / first_s:>10.0f}{again_s:>10.2f}{added:>7}"
            )
        print(
            f"manage.py import_dataset clinc150 --split train (new process): {figures['clinc150_train_command_seconds']:.2f} s"
        )
    print(json.dumps(figures))


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


if __name__ == "__main__":
    main()
