"""Serving at 100,000 items over HTTP: ``python -m bench.serving [--json] [--items N]``.

Setup, in this process, in a fresh data directory (SQLite, embedded Qdrant Edge): import the CLINC150
train split (15,000 real items) and retrain it with the product's pipeline (real MiniLM, trained head,
index, anomaly scores). The dataset then grows to ``--items`` with variants of the real items: each copies
a real item's label, its text with a number appended, and its final embedding plus Gaussian noise (cosine
about 0.9 to the original), written as item rows and upserted into the active index, which is then
optimised. Measured here: anomaly scoring of every item through ``discovery.anomaly_scores_compute``
(database write included) and recall@10 of the index against exact search on 200 items.

Serving: the store is closed and gunicorn serves the app (one worker, since the embedded engine belongs
to one process, with 4 threads; DEBUG off). This process sends requests over loopback, one at a time on
a keep-alive connection, after a warm-up: item neighbours, recommend (2 positive + 1 negative item ids),
recommend with a label filter, and classify with CLINC150 test texts the server has never seen (so the
encoder runs on each). Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.host import embedded_env, healthz_wait

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SIMAPP_SHARED_DATA", REPO.parent / "shared" / "data"))
CLINC = SHARED / "clinc150" / "data_full_train_val.json"
TARGETS = {
    "recommend_p50_ms": 15.0,
    "recommend_p99_ms": 50.0,
    "classify_p50_ms": 30.0,
    "anomaly_items_per_s": 3000.0,
    "recall_at_10": 0.98,
}


def setup(data_dir: Path, n_items: int, seed: int, cache_dir: Path) -> dict[str, Any]:
    """Build the served dataset in ``data_dir``; returns setup figures and what the requests need."""
    # The product's embedding cache lives at <data dir>/embeddings; sharing bench.learning's makes the
    # setup's retrain encode nothing when that benchmark ran before (serving is measured, not encoding).
    cache_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "embeddings").symlink_to(cache_dir.resolve(), target_is_directory=True)
    os.environ["SIMAPP_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "simapp.settings")
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connections
    from rest_framework.authtoken.models import Token

    from apps.discovery import services as discovery
    from apps.training.index import index_alias, vector_store, vector_store_close
    from bench._clinc import grow_with_variants, trained_clinc150

    call_command("migrate", verbosity=0)
    trained = trained_clinc150("clinc150", CLINC)
    dataset, version, model = trained.dataset, trained.version, trained.model
    ids, noisy, grow_s = grow_with_variants(
        trained, n_items, seed, prefix="variant", metadata={"variant": True}
    )
    rng = np.random.default_rng(seed + 1)
    store, alias = vector_store(), index_alias(dataset)
    all_ids = trained.rows.ids + ids
    vectors = np.concatenate([trained.vectors, noisy])
    started = time.perf_counter()
    summary = discovery.anomaly_scores_compute(
        dataset=dataset, version=version, item_ids=all_ids, vectors=vectors, distance=model.distance
    )
    anomaly_s = time.perf_counter() - started

    sample = rng.choice(len(all_ids), size=200, replace=False)
    truth = np.argsort(-(vectors[sample] @ vectors.T), axis=1)[:, :10]  # exact cosine top 10, itself first
    found = [[h.id for h in store.nearest(alias, vectors[i], limit=10)] for i in sample.tolist()]
    id_array = np.asarray(all_ids)
    recall = float(
        np.mean([len(set(f) & set(id_array[t].tolist())) / 10 for f, t in zip(found, truth, strict=True)])
    )

    user = User.objects.create_user("bench", password="bench-serving")
    token = Token.objects.create(user=user).key
    document = json.loads(CLINC.read_text(encoding="utf-8"))
    vector_store_close()
    connections.close_all()
    return {
        "setup": {
            "train_seconds": round(trained.train_seconds, 1),
            "grow_seconds": round(grow_s, 1),
            "anomaly_seconds": round(anomaly_s, 2),
            "anomaly_summary": summary,
        },
        "items": len(all_ids),
        "anomaly_items_per_s": len(all_ids) / anomaly_s,
        "recall_at_10": recall,
        "token": token,
        "item_ids": all_ids,
        "labels": sorted(set(trained.rows.labels)),
        # Queries the server has never seen: the val split (the index holds train only).
        "query_texts": [text for text, _ in document["val"] + document["oos_val"]],
        "version": version.number,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = embedded_env()
    env |= {
        "SIMAPP_DATA_DIR": str(data_dir),
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "bench-serving-not-a-secret",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SECURE_SSL_REDIRECT": "0",  # plain HTTP on loopback (production sits behind TLS)
    }
    command = [
        sys.executable, "-m", "gunicorn", "simapp.wsgi:application", "--bind", f"127.0.0.1:{port}",
        "--workers", "1", "--threads", "4", "--timeout", "120", "--log-level", "warning",
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=REPO, env=env)


class Client:
    def __init__(self, port: int, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: Any = None) -> tuple[float, dict[str, Any]]:
        payload = None if body is None else json.dumps(body)
        started = time.perf_counter()
        self.conn.request(method, path, body=payload, headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()
        seconds = time.perf_counter() - started
        if response.status != 200:
            raise SystemExit(f"{method} {path} answered {response.status}: {data[:500]!r}")
        return seconds, json.loads(data)


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    if healthz_wait(port, process, timeout):
        return
    if process.poll() is not None:
        raise SystemExit(f"gunicorn exited with {process.returncode}")
    raise SystemExit("gunicorn did not answer /healthz in time")


def ms(seconds: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000.0, q))


def measure(client: Client, info: dict[str, Any], n: int, seed: int) -> dict[str, list[float]]:
    rng = random.Random(seed)
    ids, labels, texts = info["item_ids"], info["labels"], info["query_texts"]
    base = "/api/datasets/clinc150"

    def neighbours() -> float:
        return client.call("GET", f"{base}/items/{rng.choice(ids)}/neighbours/?limit=10")[0]

    def recommend() -> float:
        positive = rng.sample(ids, 2)
        body = {"positive": positive, "negative": [rng.choice(ids)], "limit": 10}
        return client.call("POST", f"{base}/recommend/", body)[0]

    def recommend_filtered() -> float:
        body = {"positive": [rng.choice(ids)], "limit": 10, "filter": {"label": rng.choice(labels)}}
        return client.call("POST", f"{base}/recommend/", body)[0]

    unseen = iter(rng.sample(texts, len(texts)))

    def classify() -> float:
        seconds, answer = client.call("POST", f"{base}/classify/", {"text": next(unseen), "top": 3})
        assert answer["labels"], answer
        return seconds

    kinds = {
        "neighbours": neighbours,
        "recommend": recommend,
        "recommend_filtered": recommend_filtered,
        "classify": classify,
    }
    for call in kinds.values():  # warm-up: connections, caches, first model load
        for _ in range(20):
            call()
    return {name: [call() for _ in range(n)] for name, call in kinds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300, help="requests per kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reuse", type=Path, help="serve a data directory an earlier run set up (kept with --keep) again"
    )
    parser.add_argument("--keep", action="store_true", help="keep the data directory and say where")
    parser.add_argument(
        "--cache-dir",
        default=str(REPO / "var" / "bench-cache"),
        help="embedding cache shared with bench.learning",
    )
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    if args.reuse:
        data_dir = args.reuse
        info = json.loads((data_dir / "bench-serving.json").read_text())
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="simapp-bench-serving-"))
        info = setup(data_dir, args.items, args.seed, Path(args.cache_dir))
        (data_dir / "bench-serving.json").write_text(json.dumps(info))
    port = free_port()
    server = serve(data_dir, port)
    try:
        wait_ready(port, server)
        timings = measure(Client(port, info["token"]), info, args.requests, args.seed)
    finally:
        server.terminate()
        server.wait(timeout=30)
        if not args.keep and not args.reuse:
            shutil.rmtree(data_dir, ignore_errors=True)
    figures: dict[str, Any] = {
        "items": info["items"],
        "recommend_p50_ms": ms(timings["recommend"], 50),
        "recommend_p99_ms": ms(timings["recommend"], 99),
        "classify_p50_ms": ms(timings["classify"], 50),
        "anomaly_items_per_s": info["anomaly_items_per_s"],
        "recall_at_10": info["recall_at_10"],
        "neighbours_p50_ms": ms(timings["neighbours"], 50),
        "neighbours_p99_ms": ms(timings["neighbours"], 99),
        "recommend_filtered_p50_ms": ms(timings["recommend_filtered"], 50),
        "recommend_filtered_p99_ms": ms(timings["recommend_filtered"], 99),
        "classify_p99_ms": ms(timings["classify"], 99),
        "requests_per_kind": args.requests,
        "served_version": info["version"],
        "server": "gunicorn, 1 worker x 4 threads, DEBUG off, SQLite, embedded Qdrant Edge",
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
    } | info["setup"]
    if args.keep:
        figures["data_dir"] = str(data_dir)
    figures = {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}
    if not args.json:
        print("| figure | value | target | |\n| --- | ---: | ---: | --- |")
        for name, target in TARGETS.items():
            value = figures[name]
            met = value >= target if name in ("anomaly_items_per_s", "recall_at_10") else value <= target
            print(f"| {name} | {value:,.4g} | {target:,.4g} | {'met' if met else 'MISSED'} |")
        for name in (
            "neighbours_p50_ms",
            "neighbours_p99_ms",
            "recommend_filtered_p50_ms",
            "classify_p99_ms",
        ):
            print(f"| {name} | {figures[name]:,.4g} | | |")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
