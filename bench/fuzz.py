"""Schema-driven fuzzing of the whole REST API, long run: ``python -m bench.fuzz [--examples N] [--seed S]
[--database-url postgres://…] [--json]``.

The same harness as ``tests/test_api_fuzz.py`` (``tests/fuzzing.py``), with many more examples: in a fresh
temporary data directory (embedded Qdrant Edge, empty embedding cache) and a fresh database (a SQLite file
there, or with ``--database-url`` a ``test_<name>`` database created on that PostgreSQL server and dropped
afterwards), it builds the fuzzing data (a CLINC150 slice with metadata, labelled pairs and anomaly
feedback, retrained with the real MiniLM encoder; an ODDS thyroid slice as vectors, retrained; an empty
dataset), fetches the schema from ``/api/schema/`` with a staff token, and sends ``--examples`` generated
cases (valid and invalid input) to every operation, in-process through the app's WSGI handler, each case
in a rolled-back transaction. Checks: no 5xx, and every documented response matches its schema.

Prints one line per operation (cases, seconds, verdict, status codes), the failures, a summary line, and
with ``--json`` one JSON object as its last line. Exits 1 when an operation failed. ``--seed`` picks the
random inputs (default: a new seed each run, printed, so that a failing run can be repeated).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.database import throwaway_database
from bench.host import SERVICE_VARIABLES, machine

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SIMAPP_SHARED_DATA", REPO.parent / "shared" / "data"))


def django_setup(data_dir: Path, database_url: str | None) -> Callable[[], None]:
    """Start Django on ``data_dir`` and a fresh database; returns what drops that database again."""
    for name in SERVICE_VARIABLES:
        os.environ.pop(name, None)
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    os.environ["SIMAPP_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "simapp.settings")
    return throwaway_database()[1]  # without a URL, the SQLite file in data_dir, kept with it to look at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200, help="generated cases per operation")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a new one)")
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL server to run against (in a new test_<name> database) instead of SQLite",
    )
    parser.add_argument("--json", action="store_true", help="also print the JSON line (always last)")
    args = parser.parse_args()
    seed = random.randrange(2**32) if args.seed is None else args.seed

    started = time.perf_counter()
    load_before = round(os.getloadavg()[0], 2)
    data_dir = Path(tempfile.mkdtemp(prefix="simapp-bench-fuzz-"))
    drop_database = django_setup(data_dir, args.database_url)
    # One line per 4xx (or per refused oversized form, a 400 too) would drown the report; a 5xx's
    # traceback is in its operation's failure.
    for name in ("django.request", "django.security"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    from django.db import connection

    from apps.common import background
    from apps.training.index import vector_store_close
    from tests.fuzzing import fuzz_data_build, fuzz_operation, fuzz_session, load_schema, operations

    try:
        data = fuzz_data_build(SHARED)
        setup_s = time.perf_counter() - started
        reports = []
        with fuzz_session(data) as errors:
            for operation in operations(load_schema(data)):
                op_started = time.perf_counter()
                report = fuzz_operation(
                    operation, data=data, errors=errors, examples=args.examples, seed=seed
                )
                reports.append(report)
                statuses = " ".join(f"{code}:{n}" for code, n in sorted(report.statuses.items()))
                print(
                    f"{report.label:<55} {report.cases:>6} cases {time.perf_counter() - op_started:>7.1f} s  "
                    f"{'FAILED' if report.failure else 'ok':<6} {statuses}",
                    flush=True,
                )
    finally:
        background.drain()
        vector_store_close()
        connection.close()
        drop_database()

    failed = [report for report in reports if report.failure]
    for report in failed:
        print(f"\n== {report.label}\n{report.failure}")
    statuses_all: Counter[int] = Counter()
    for report in reports:
        statuses_all.update(report.statuses)
    figures: dict[str, Any] = {
        "benchmark": "fuzz",
        "database": connection.vendor,
        "examples_per_operation": args.examples,
        "seed": seed,
        "operations": len(reports),
        "cases": sum(report.cases for report in reports),
        "failures": len(failed),
        "failed_operations": [report.label for report in failed],
        "server_errors": sum(n for code, n in statuses_all.items() if code >= 500),
        "statuses": {str(code): n for code, n in sorted(statuses_all.items())},
        "setup_seconds": round(setup_s, 1),
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": round(os.getloadavg()[0], 2),
        "total_seconds": round(time.perf_counter() - started, 1),
        "data_dir": str(data_dir),
    }
    print(
        f"\n{figures['operations']} operations, {figures['cases']} cases ({args.examples} per operation, "
        f"seed {seed}, {figures['database']}): {figures['failures']} failed operations, "
        f"{figures['server_errors']} 5xx responses; {figures['total_seconds']} s"
    )
    if args.json:
        print(json.dumps(figures))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
