"""Many labellers at once and a retrain race, over real HTTP: ``python -m bench.load [--labellers 20]
[--labels 1000] [--racers 10] [--json]``.

Setup, in this process: a throw-away database (a fresh PostgreSQL database next to ``DATABASE_URL``'s when
it is set, which is what this benchmark is for: SQLite serialises writers; else a temporary SQLite file),
one text dataset of real CLINC150 queries with enough items for ``--labels`` distinct pairs, one user with
an API token per labeller, and a staff user.

Served by gunicorn on loopback (``--workers`` x ``--threads``, DEBUG off) with a Celery broker configured
(Redis, ``--broker``) and no worker consuming it, as in production where workers are other machines: a
started retrain stays queued, so the race below is decided by the start alone.

Measured:

- Labelling: ``--labellers`` threads, each its own user with its own token and keep-alive connection,
  released together, each POSTs ``--labels`` labels (one pair per request, as the label API takes them)
  to ``/api/datasets/<slug>/pairs/``, one after another, and stops. Throughput (labels/s over the wall
  time), latency percentiles, errors (anything but 201, or no answer), and the pairs stored afterwards:
  they must be exactly the ones sent (labeller, pair, score), ``labellers x labels`` of them.
- Retrain race: ``--racers`` threads with connections already open, released together, each POSTs a
  retrain of the same dataset. Exactly one run may be created (one 201, the others 200 with its id).

Prints a table and, last, one JSON line. The same functions drive ``tests/test_load.py``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.database import database_url, throwaway_database
from bench.host import free_port, healthz_wait

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SIMAPP_SHARED_DATA", REPO.parent / "shared" / "data"))
CLINC = SHARED / "clinc150" / "data_full_train_val.json"
SLUG = "load"
PORTS = range(8100, 8200)  # the ports this benchmark (and its test) may bind
DEFAULT_BROKER = "redis://127.0.0.1:6379/5"


# -- setup (needs Django set up and a migrated database) ----------------------------------------------------


@dataclass
class Labeller:
    username: str
    token: str
    labels: list[tuple[str, str, float]]  # (key a, key b, score) in the order they are sent


@dataclass
class Plan:
    slug: str
    items: int
    labellers: list[Labeller]
    staff_token: str

    @property
    def expected(self) -> set[tuple[str, str, str, float]]:
        """(username, key a, key b, score) of every label sent, keys in the stored (id) order."""
        return {
            (lab.username, *sorted((a, b)), score) for lab in self.labellers for a, b, score in lab.labels
        }


def items_for(labels: int) -> int:
    """The fewest items whose distinct pairs number at least ``labels`` (two items at least)."""
    n = 2
    while n * (n - 1) // 2 < labels:
        n += 1
    return n


def prepare(*, labellers: int, labels: int, seed: int = 0, slug: str = SLUG) -> Plan:
    """The dataset (real CLINC150 queries with their intents), the labellers and their labels, a staff user."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from apps.datasets.formats import ItemRecord
    from apps.datasets.services import dataset_records_save
    from apps.labelling.models import Pair

    n_items = items_for(labels)
    document = json.loads(CLINC.read_text(encoding="utf-8"))
    records = [
        ItemRecord(key=f"q{number:05d}", text=text, label=intent, line=number)
        for number, (text, intent) in enumerate(document["train"][:n_items])
    ]
    dataset_records_save(
        slug=slug,
        records=records,
        source_name="bench.load",
        pair_source=Pair.Source.IMPORT,
        create_missing=True,
    )
    keys = [r.key for r in records]
    all_pairs = [(a, b) for i, a in enumerate(keys) for b in keys[i + 1 :]]
    rng = random.Random(seed)
    users = get_user_model().objects
    plan_labellers = []
    for number in range(labellers):
        user = users.create_user(f"labeller-{number:02d}")  # no password: the token is the credential
        chosen = rng.sample(all_pairs, labels)
        plan_labellers.append(
            Labeller(
                username=user.username,
                token=Token.objects.create(user=user).key,
                labels=[(a, b, float(rng.random() < 0.5)) for a, b in chosen],
            )
        )
    staff = users.create_user("load-admin", is_staff=True)
    return Plan(
        slug=slug,
        items=n_items,
        labellers=plan_labellers,
        staff_token=Token.objects.create(user=staff).key,
    )


def stored(plan: Plan) -> dict[str, Any]:
    """What the database holds for the plan's dataset, compared with what was sent."""
    from apps.labelling.models import Pair
    from apps.training.models import TrainingRun

    rows = set(
        Pair.objects.filter(dataset__slug=plan.slug).values_list(
            "annotator__username", "item_a__key", "item_b__key", "score"
        )
    )
    expected = plan.expected
    return {
        "pairs_stored": len(rows),
        "pairs_expected": len(expected),
        "pairs_missing": len(expected - rows),
        "pairs_unexpected": len(rows - expected),
        "runs": TrainingRun.objects.filter(dataset__slug=plan.slug).count(),
    }


# -- the server -----------------------------------------------------------------------------------------------


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@contextmanager
def serve(
    *, database_url: str, data_dir: Path, broker_url: str, workers: int = 2, threads: int = 8
) -> Iterator[Server]:
    """gunicorn serving simapp on a free loopback port of ``PORTS``, DEBUG off, until the block ends."""
    env = {k: v for k, v in os.environ.items() if k not in ("QDRANT_URL", "QDRANT_API_KEY")}
    env |= {
        "DATABASE_URL": database_url,
        "SIMAPP_DATA_DIR": str(data_dir),
        "CELERY_BROKER_URL": broker_url,
        # Settings refuse a broker with the embedded vector store unless a worker owns it. Nothing here
        # opens the store (labels and a run start never touch the index), and no worker runs at all.
        "SIMAPP_WORKER_OWNS_STORE": "1",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "bench-load-not-a-secret",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SECURE_SSL_REDIRECT": "0",  # plain HTTP on loopback (production sits behind TLS)
        "SIMAPP_LOG_LEVEL": "WARNING",
    }
    port = free_port(PORTS)
    log = data_dir / f"gunicorn-{port}.log"
    command = [
        sys.executable, "-m", "gunicorn", "simapp.wsgi:application", "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers), "--threads", str(threads), "--timeout", "120",
        "--log-level", "warning",
    ]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(port=port, process=process, log=log)
    try:
        wait_ready(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def wait_ready(server: Server, timeout: float = 120) -> None:
    if healthz_wait(server.port, server.process, timeout):
        return
    if server.process.poll() is not None:
        raise RuntimeError(f"gunicorn exited with {server.process.returncode}:\n{server.log_tail()}")
    raise RuntimeError(f"gunicorn did not answer /healthz within {timeout} s:\n{server.log_tail()}")


# -- the load -------------------------------------------------------------------------------------------------


@dataclass
class LabelResult:
    sent: int = 0
    created: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, of every answered request

    @property
    def labels_per_s(self) -> float:
        return self.created / self.seconds if self.seconds else 0.0

    def ms(self, q: float) -> float:
        return round(1000 * float(np.percentile(self.latencies, q)), 2) if self.latencies else 0.0


def label_concurrently(port: int, plan: Plan, *, timeout: float = 900) -> LabelResult:
    """Every labeller of ``plan`` at once, each on its own connection; returns when all are done.

    Bounded: each sends exactly its labels, then stops; past ``timeout`` seconds the labels not sent yet
    count as errors. A failed request is counted, not retried.
    """
    result = LabelResult()
    lock = threading.Lock()
    start = threading.Barrier(len(plan.labellers) + 1)
    deadline = [0.0]
    path = f"/api/datasets/{plan.slug}/pairs/"

    def work(labeller: Labeller) -> None:
        headers = {"Authorization": f"Token {labeller.token}", "Content-Type": "application/json"}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[float] = []
        errors: list[str] = []
        created = 0
        start.wait()
        for n, (a, b, score) in enumerate(labeller.labels):
            if time.monotonic() > deadline[0]:
                errors += [f"{labeller.username}: not sent before the deadline"] * (len(labeller.labels) - n)
                break
            body = json.dumps({"a": a, "b": b, "score": score})
            began = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                errors.append(f"{labeller.username}: {type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            mine.append(time.perf_counter() - began)
            if response.status == 201:
                created += 1
            else:
                errors.append(f"{labeller.username}: {response.status} {data[:300]!r}")
        conn.close()
        with lock:
            result.sent += len(labeller.labels)
            result.created += created
            result.errors += len(errors)
            result.error_samples += errors[: max(0, 10 - len(result.error_samples))]
            result.latencies += mine

    threads = [threading.Thread(target=work, args=(lab,), daemon=True) for lab in plan.labellers]
    for thread in threads:
        thread.start()
    deadline[0] = time.monotonic() + timeout
    began = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join(timeout=timeout + 120)
    result.seconds = time.perf_counter() - began
    if any(thread.is_alive() for thread in threads):
        raise RuntimeError("a labeller thread did not finish (a request hung past its 60 s socket timeout)")
    return result


@dataclass
class RaceResult:
    statuses: list[int]
    run_ids: list[int | None]
    details: list[str]

    @property
    def created(self) -> int:
        return self.statuses.count(201)


def retrain_race(port: int, *, token: str, slug: str, racers: int = 10) -> RaceResult:
    """``racers`` retrain requests for one dataset, sent at the same moment on open connections."""
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    # The identity head: trainable whatever was labelled (a run starts, it is not run here).
    body = json.dumps({"head": "identity"})
    answers: list[tuple[int, int | None, str]] = [(0, None, "not answered")] * racers
    start = threading.Barrier(racers)

    def race(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.connect()  # so that the barrier releases requests, not TCP handshakes
        start.wait()
        try:
            conn.request("POST", f"/api/datasets/{slug}/runs/", body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            answers[n] = (0, None, f"{type(exc).__name__}: {exc}")
            return
        finally:
            conn.close()
        try:
            run_id = json.loads(data).get("id")
        except ValueError:
            run_id = None
        answers[n] = (response.status, run_id, data[:300].decode(errors="replace"))

    threads = [threading.Thread(target=race, args=(n,), daemon=True) for n in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return RaceResult(
        statuses=[a[0] for a in answers], run_ids=[a[1] for a in answers], details=[a[2] for a in answers]
    )


def flush_broker(broker_url: str) -> None:
    """Remove what the race queued (its message stays unconsumed: no worker runs) from the broker's db."""
    import redis

    redis.Redis.from_url(broker_url, socket_connect_timeout=2).flushdb()


# -- the command ----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--labellers", type=int, default=20)
    parser.add_argument("--labels", type=int, default=1000, help="labels per labeller")
    parser.add_argument("--racers", type=int, default=10, help="simultaneous retrain requests")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=8, help="gunicorn threads per worker")
    parser.add_argument("--broker", default=DEFAULT_BROKER, help="Redis URL (its database is flushed)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    load_before = os.getloadavg()
    scratch = Path(tempfile.mkdtemp(prefix="simapp-bench-load-"))
    os.environ["SIMAPP_DATA_DIR"] = str(scratch)  # the SQLite file, when there is no DATABASE_URL
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "simapp.settings")
    backend, drop_database = throwaway_database()
    from django.db import connection, connections

    try:
        setup_began = time.perf_counter()
        plan = prepare(labellers=args.labellers, labels=args.labels, seed=args.seed)
        setup_s = time.perf_counter() - setup_began
        url = database_url(connection.settings_dict)
        connections.close_all()
        flush_broker(args.broker)
        try:
            with serve(
                database_url=url,
                data_dir=scratch,
                broker_url=args.broker,
                workers=args.workers,
                threads=args.threads,
            ) as server:
                labelled = label_concurrently(server.port, plan)
                race = retrain_race(server.port, token=plan.staff_token, slug=plan.slug, racers=args.racers)
                server_log = server.log_tail(6000)
        finally:
            flush_broker(args.broker)
        found = stored(plan)
    finally:
        connections.close_all()
        drop_database()
        shutil.rmtree(scratch, ignore_errors=True)

    figures: dict[str, Any] = {
        "benchmark": "load",
        "database": backend,
        "server": f"gunicorn, {args.workers} workers x {args.threads} threads, DEBUG off, Redis broker",
        "labellers": args.labellers,
        "labels_per_labeller": args.labels,
        "items": plan.items,
        "setup_s": round(setup_s, 2),
        "seconds": round(labelled.seconds, 2),
        "labels_per_s": round(labelled.labels_per_s, 1),
        "p50_ms": labelled.ms(50),
        "p95_ms": labelled.ms(95),
        "p99_ms": labelled.ms(99),
        "max_ms": labelled.ms(100),
        "requests": labelled.sent,
        "created": labelled.created,
        "errors": labelled.errors,
        "error_samples": labelled.error_samples,
        **{k: v for k, v in found.items() if k != "runs"},
        "race_requests": args.racers,
        "race_statuses": sorted(race.statuses),
        "race_runs_created": found["runs"],
        "race_distinct_run_ids": len(set(race.run_ids)),
        "race_ok": found["runs"] == 1
        and race.created == 1
        and set(race.statuses) <= {200, 201}
        and len(set(race.run_ids)) == 1,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }
    figures["ok"] = (
        figures["errors"] == 0
        and figures["pairs_stored"] == figures["pairs_expected"] == args.labellers * args.labels
        and figures["pairs_missing"] == figures["pairs_unexpected"] == 0
        and figures["race_ok"]
    )
    if not args.json:
        print(
            f"{args.labellers} labellers x {args.labels} labels over HTTP ({figures['server']}, {backend}), "
            f"{plan.items} items"
        )
        print("| figure | value |\n| --- | ---: |")
        for name in (
            "labels_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms", "seconds", "errors", "pairs_stored",
            "pairs_expected", "pairs_missing", "pairs_unexpected",
        ):  # fmt: skip
            print(f"| {name} | {figures[name]:,} |")
        print(
            f"| retrain race: {args.racers} requests | {figures['race_runs_created']} run created, "
            f"statuses {figures['race_statuses']} |"
        )
        for sample in labelled.error_samples:
            print(f"error: {sample}")
        for status, detail in zip(race.statuses, race.details, strict=True):
            if status not in (200, 201):
                print(f"retrain race answer {status}: {detail}")
        if server_log.strip():
            print(f"server log (end):\n{server_log}")
    print(json.dumps(figures))
    if not figures["ok"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
