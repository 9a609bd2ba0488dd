"""The labelling page at 100,000 items: ``python -m bench.labelling [--json] [--items N] [--trips N]``.

Setup, in this process, in a fresh data directory (SQLite, embedded Qdrant Edge): import the CLINC150
train split (15,000 real items) and retrain it with the product's pipeline (real MiniLM from the shared
embedding cache, trained head, index), so that the ``uncertain`` and ``hard`` strategies have an active
model. The dataset then grows to ``--items`` with copies of the real items: each copies a real item's
label and text with a number appended, written as item rows (``bulk_create``), and is indexed with the
real item's final embedding plus Gaussian noise (cosine about 0.9 to the original, as bench.serving), so
that the whole dataset is in the index. The dataset asks for two annotators per pair; another annotator
has labelled ``--peer-pairs`` random pairs, which the ``review`` strategy offers.

Measured: the server side of the labelling page's round trip "submit an answer, get the next pair" (one
POST of ``/datasets/clinc150/label/answer/`` as htmx sends it: validation, the label written, the next pair
chosen, progress and per-annotator counts, the partial rendered), ``--trips`` times per strategy, each
answering the pair the previous response showed. Requests go through Django's test client in this
process with DEBUG off; the time is ``time.perf_counter`` around each request, so it is the server's
work without network or browser. Also the full page (GET, with the agreement panel). Full (generation 2)
garbage collections during the trips are counted: with torch and the encoder loaded the process tracks
~300,000 objects, and each full collection stops it for over 100 ms, whichever request it falls in.
``--reuse DIR`` measures again in a data directory that ``--keep`` kept. Prints a table and, last, one
JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SIMAPP_SHARED_DATA", REPO.parent / "shared" / "data"))
CLINC = SHARED / "clinc150" / "data_full_train_val.json"
STRATEGIES = ("random", "uncertain", "hard", "review")
TARGET_MS = 50.0
SLUG = "clinc150"
HTMX = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "labelling-work"}
_PAIR = re.compile(r'name="a" value="(\d+)">\s*<input type="hidden" name="b" value="(\d+)"')


def configure(data_dir: Path, cache_dir: Path | None) -> None:
    """Settings for an in-process server with DEBUG off, before Django starts."""
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # The embedding cache of bench.learning / bench.serving: the retrain encodes nothing when they ran.
        (data_dir / "embeddings").symlink_to(cache_dir.resolve(), target_is_directory=True)
    os.environ["SIMAPP_DATA_DIR"] = str(data_dir)
    os.environ["DJANGO_DEBUG"] = "false"
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-labelling-not-secret")
    os.environ["DJANGO_ALLOWED_HOSTS"] = "testserver"
    os.environ["DJANGO_SECURE_SSL_REDIRECT"] = "false"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "simapp.settings")
    import django

    warnings.filterwarnings("ignore", message="No directory at", module="whitenoise")  # no collectstatic
    django.setup()
    from django.conf import settings
    from django.test import override_settings

    # Static URLs without a collectstatic manifest: serving static files is not what is measured.
    plain = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    override_settings(STORAGES={**settings.STORAGES, "staticfiles": plain}).enable()


def setup(n_items: int, peer_pairs: int, seed: int) -> dict[str, Any]:
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from apps.datasets.models import Item
    from apps.labelling.models import Pair
    from apps.training.index import index_alias, vector_store
    from bench._clinc import grow_with_variants, trained_clinc150

    call_command("migrate", verbosity=0)
    trained = trained_clinc150(SLUG, CLINC)
    dataset, rows, train_s = trained.dataset, trained.rows, trained.train_seconds
    ids, _, grow_s = grow_with_variants(trained, n_items, seed, prefix="copy")

    dataset.settings = {**dataset.settings, "annotators_per_pair": 2, "label_target": 1000}
    dataset.save(update_fields=["settings", "updated_at"])
    peer = User.objects.create_user("peer")
    User.objects.create_user("labeller")
    all_ids = rows.ids + ids
    picker = random.Random(seed)
    keys: set[tuple[int, int]] = set()
    while len(keys) < peer_pairs:
        a, b = picker.sample(all_ids, 2)
        keys.add((min(a, b), max(a, b)))
    Pair.objects.bulk_create(
        Pair(dataset=dataset, item_a_id=a, item_b_id=b, score=float(picker.random() < 0.3), annotator=peer)
        for a, b in sorted(keys)
    )
    return {
        "items": Item.objects.filter(dataset=dataset).count(),
        "indexed": vector_store().count(index_alias(dataset)),
        "peer_pairs": peer_pairs,
        "setup_train_s": round(train_s, 1),
        "setup_grow_s": round(grow_s, 1),
    }


def shown(html: str) -> tuple[int, int]:
    found = _PAIR.search(html)
    assert found, html[:3000]
    return int(found[1]), int(found[2])


def measure(trips: int, seed: int) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from apps.labelling.models import Pair

    pauses: list[tuple[int, float]] = []  # (generation, seconds) of each garbage collection
    started_at = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started_at[0] = time.perf_counter()
        else:
            pauses.append((info["generation"], time.perf_counter() - started_at[0]))

    gc.callbacks.append(on_gc)
    client = Client()
    client.force_login(get_user_model().objects.get(username="labeller"))
    picker = random.Random(seed)
    results: dict[str, Any] = {}
    for strategy in STRATEGIES:
        page = client.get(f"/datasets/{SLUG}/label/?strategy={strategy}")
        assert page.status_code == 200, page.content[:2000]
        pair = shown(page.content.decode())
        times: list[float] = []
        used: dict[str, int] = {}
        full_gcs: list[float] = []
        queries = 0
        for trip in range(trips + 5):  # five warm-up trips first
            data = {"a": pair[0], "b": pair[1], "answer": picker.choice("01"), "strategy": strategy}
            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                response = client.post(f"/datasets/{SLUG}/label/answer/", data, **HTMX)
                elapsed = time.perf_counter() - started
            html = response.content.decode()
            assert response.status_code == 200, html[:2000]
            reason = re.search(r"Why this pair: ([^.<]*)", html)
            used[reason[1] if reason else "?"] = used.get(reason[1] if reason else "?", 0) + 1
            if trip >= 5:
                times.append(elapsed)
                queries = max(queries, len(captured))
                full_gcs += [seconds for generation, seconds in pauses if generation == 2]
            pauses.clear()
            pair = shown(html)
        results[strategy] = {
            "p50_ms": ms(times, 50),
            "p99_ms": ms(times, 99),
            "mean_ms": round(1000 * float(np.mean(times)), 2),
            "max_ms": round(1000 * max(times), 2),
            "max_queries": queries,
            "why": used,
            "full_gc": len(full_gcs),
            "full_gc_max_ms": round(1000 * max(full_gcs, default=0.0), 1),
        }
    page_times = []
    for _ in range(20):
        started = time.perf_counter()
        response = client.get(f"/datasets/{SLUG}/label/")
        page_times.append(time.perf_counter() - started)
        assert response.status_code == 200
    results["page_get"] = {"p50_ms": ms(page_times, 50), "p99_ms": ms(page_times, 99)}
    results["labelled_by_labeller"] = Pair.objects.filter(annotator__username="labeller").count()
    return results


def ms(seconds: list[float], q: float) -> float:
    return round(1000 * float(np.percentile(seconds, q)), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--trips", type=int, default=200, help="round trips per strategy")
    parser.add_argument("--peer-pairs", type=int, default=5_000, help="pairs another annotator labelled")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the data directory and say where")
    parser.add_argument("--reuse", type=Path, help="measure again in a data directory kept by --keep")
    parser.add_argument("--cache-dir", default=str(REPO / "var" / "bench-cache"))
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    data_dir = args.reuse or Path(tempfile.mkdtemp(prefix="simapp-bench-labelling-"))
    try:
        if args.reuse:
            configure(data_dir, None)
            info = json.loads((data_dir / "bench-labelling.json").read_text())
        else:
            configure(data_dir, Path(args.cache_dir))
            info = setup(args.items, args.peer_pairs, args.seed)
            (data_dir / "bench-labelling.json").write_text(json.dumps(info))
        results = measure(args.trips, args.seed)
    finally:
        index = sys.modules.get("apps.training.index")  # absent if Django did not start
        if index is not None:
            index.vector_store_close()
        if not args.keep and not args.reuse:
            shutil.rmtree(data_dir, ignore_errors=True)
    figures: dict[str, Any] = {
        "benchmark": "labelling",
        **info,
        "trips_per_strategy": args.trips,
        "target_ms": TARGET_MS,
        **{f"{s}_p50_ms": results[s]["p50_ms"] for s in STRATEGIES},
        **{f"{s}_p99_ms": results[s]["p99_ms"] for s in STRATEGIES},
        **{f"{s}_max_ms": results[s]["max_ms"] for s in STRATEGIES},
        "meets_target": all(results[s]["p99_ms"] <= TARGET_MS for s in STRATEGIES),
        "page_get_p50_ms": results["page_get"]["p50_ms"],
        "page_get_p99_ms": results["page_get"]["p99_ms"],
        "max_queries": {s: results[s]["max_queries"] for s in STRATEGIES},
        "full_gc_during_trips": {s: results[s]["full_gc"] for s in STRATEGIES},
        "full_gc_max_ms": max(results[s]["full_gc_max_ms"] for s in STRATEGIES),
        "tracked_objects": len(gc.get_objects()),
        "why": {s: results[s]["why"] for s in STRATEGIES},
        "labelled_by_labeller": results["labelled_by_labeller"],
        "server": "Django test client in-process, DEBUG off, SQLite (WAL), embedded Qdrant Edge",
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
    }
    if args.keep:
        figures["data_dir"] = str(data_dir)
    if not args.json:
        print(
            f"Answer + next pair, server time, {args.trips} round trips per strategy, {info['items']:,} items"
        )
        print(
            "| strategy | p50 ms | p99 ms | mean ms | max ms | SQL queries | full GCs (max ms) | target p99 | |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for s in STRATEGIES:
            r = results[s]
            met = "met" if r["p99_ms"] <= TARGET_MS else "MISSED"
            print(
                f"| {s} | {r['p50_ms']} | {r['p99_ms']} | {r['mean_ms']} | {r['max_ms']} | {r['max_queries']} | "
                f"{r['full_gc']} ({r['full_gc_max_ms']}) | {TARGET_MS:g} | {met} |"
            )
        page = results["page_get"]
        print(f"| full page (GET, with agreement) | {page['p50_ms']} | {page['p99_ms']} | | | | | | |")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
