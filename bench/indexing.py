"""Embedded index speed and quality: ``python -m bench.indexing [--json] [--n 100000] [--data embedding]``.

Builds one model version in the embedded engine (Qdrant Edge) the way a training job does, through
``build_and_activate``: upload in batches, optimise (HNSW graph, payload indexes, int8 quantisation),
verify (count + canaries), switch the alias. Then measures single-query latency through the alias and
recall@10 against exact brute force in NumPy on held-out queries.

Data (synthetic, seeded; no encoder needed): ``embedding`` mimics sentence embeddings (384-d, unit
norm, 200 topics in a 48-d latent space projected to 384-d plus isotropic noise, so near neighbours
have cosine ~0.85 and random pairs ~0), with a label (150 classes) and metadata (lang, year) on each
point, indexed. ``normal`` is i.i.d. Gaussian noise, the worst case for any graph index (no structure,
all distances nearly equal); it is reported for honesty, not as the target case.

Prints a table and, as the last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.host import machine
from simapp.vectors import EdgeStore, Filter, IndexParams, Point, Progress, build_and_activate, make_payload

TARGET_POINTS_PER_S = 3_000


def make_vectors(kind: str, n: int, dim: int, seed: int) -> NDArray[np.float32]:
    """(n, dim) float32 rows, unit-normalised for ``embedding``."""
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.normal(size=(n, dim)).astype(np.float32)
    latent, topics = 48, 200
    # Fixed structure (centres, projection) from seed 0, so held-out queries share the index's topics.
    structure = np.random.default_rng(0)
    centres = structure.normal(size=(topics, latent)).astype(np.float32)
    projection = structure.normal(size=(latent, dim)).astype(np.float32) / np.sqrt(latent)
    z = centres[rng.integers(0, topics, n)] + 0.6 * rng.normal(size=(n, latent)).astype(np.float32)
    x = z @ projection + 0.1 * rng.normal(size=(n, dim)).astype(np.float32)  # (n, dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def points(vectors: NDArray[np.float32]) -> Iterator[Point]:
    for i, vector in enumerate(vectors):
        yield Point(
            id=i,
            vector=vector,
            payload=make_payload(
                f"item-{i}", f"class-{i % 150}", {"lang": ("en", "de", "fr")[i % 3], "year": 2000 + i % 25}
            ),
        )


def exact_top10(
    index: NDArray[np.float32], queries: NDArray[np.float32], mask: NDArray[np.bool_] | None = None
) -> NDArray[np.int64]:
    """(Q, 10) ids of the exact cosine neighbours among the rows where ``mask`` holds."""
    unit_index = index / np.linalg.norm(index, axis=1, keepdims=True)
    unit_queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    scores = unit_queries @ unit_index.T  # (Q, N)
    if mask is not None:
        scores[:, ~mask] = -np.inf
    top = np.argpartition(-scores, 10, axis=1)[:, :10]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def recall_at_10(found: list[list[int]], truth: NDArray[np.int64]) -> float:
    return float(np.mean([len(set(f) & set(t.tolist())) / 10 for f, t in zip(found, truth, strict=True)]))


def percentile_ms(seconds: list[float], q: float) -> float:
    return round(float(np.percentile(seconds, q)) * 1e3, 3)


def timed_nearest(
    store: EdgeStore, queries: NDArray[np.float32], flt: Filter | None
) -> tuple[list[float], list[list[int]]]:
    """Single queries through the alias: (seconds per query, hit ids per query)."""
    seconds: list[float] = []
    found: list[list[int]] = []
    for q in queries:
        t0 = time.perf_counter()
        hits = store.nearest("bench", q, limit=10, filter=flt)
        seconds.append(time.perf_counter() - t0)
        found.append([h.id for h in hits])
    return seconds, found


def run(n: int, dim: int, kind: str, queries: int, root: Path) -> dict[str, Any]:
    vectors = make_vectors(kind, n, dim, seed=1)
    held_out = make_vectors(kind, queries, dim, seed=2)
    params = IndexParams()
    stage_started: dict[str, float] = {}

    def on_progress(p: Progress) -> None:
        stage_started.setdefault(p.stage, time.perf_counter())

    load_before = os.getloadavg()[0]
    with EdgeStore(root, index=params) as store:
        started = time.perf_counter()
        result = build_and_activate(
            store,
            alias="bench",
            collection="bench_v1",
            dim=dim,
            distance="cosine",
            points=points(vectors),
            indexed_fields={"lang": "keyword", "year": "integer"},
            batch_size=1_000,
            on_progress=on_progress,
        )
        finished = time.perf_counter()
        upload_s = stage_started["optimize"] - stage_started["upload"]
        optimize_s = stage_started["verify"] - stage_started["optimize"]

        for q in held_out[:20]:  # warm caches, as a serving process would be
            store.nearest("bench", q, limit=10)
        latencies, found = timed_nearest(store, held_out, None)
        t0 = time.perf_counter()
        store.nearest_batch("bench", held_out, limit=10)
        batch_s = time.perf_counter() - t0
        rows = np.arange(n)
        filters = {
            # name: (filter, which rows match); payloads are assigned in points() above
            "lang=de (33%)": (Filter(metadata={"lang": "de"}), rows % 3 == 1),
            "year=2003 (4%)": (Filter(metadata={"year": 2003}), rows % 25 == 3),
            "label (0.7%)": (Filter(label="class-7"), rows % 150 == 7),
        }
        filtered = {}
        for name, (flt, mask) in filters.items():
            seconds, hits = timed_nearest(store, held_out, flt)
            filtered[name] = {
                "p50_ms": percentile_ms(seconds, 50),
                "recall_at_10": round(recall_at_10(hits, exact_top10(vectors, held_out, mask)), 4),
            }
    load_after = os.getloadavg()[0]

    recall = recall_at_10(found, exact_top10(vectors, held_out))
    index_s = upload_s + optimize_s
    return {
        "benchmark": "indexing",
        "engine": f"qdrant-edge-py {version('qdrant-edge-py')}",
        "data": kind,
        "n": n,
        "dim": dim,
        "upload_s": round(upload_s, 2),
        "optimize_s": round(optimize_s, 2),
        "index_points_per_s": round(n / index_s),
        "build_and_activate_s": round(finished - started, 2),
        "end_to_end_points_per_s": round(n / (finished - started)),
        "target_points_per_s": TARGET_POINTS_PER_S,
        "meets_target": n / index_s >= TARGET_POINTS_PER_S,
        "queries": queries,
        "nearest_p50_ms": percentile_ms(latencies, 50),
        "nearest_p99_ms": percentile_ms(latencies, 99),
        "filtered": filtered,
        "batch_ms_per_query": round(batch_s / queries * 1e3, 3),
        "recall_at_10": round(recall, 4),
        "canaries": len(result.canaries),
        "index_params": {
            "m": params.m,
            "ef_construct": params.ef_construct,
            "payload_m": params.payload_m,
            "hnsw_ef": params.hnsw_ef,
            "quantization": "int8" if params.quantization else None,
            "oversampling": params.oversampling,
        },
        "load_avg_1m": [round(load_before, 2), round(load_after, 2)],
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--n", type=int, default=100_000, help="points to index (default 100,000)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200, help="held-out queries for latency and recall")
    parser.add_argument("--data", choices=("embedding", "normal"), default="embedding")
    parser.add_argument("--dir", type=Path, default=None, help="where to build (default: a temporary dir)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-indexing-", dir=args.dir) as tmp:
        figures = run(args.n, args.dim, args.data, args.queries, Path(tmp) / "qdrant")

    if not args.json:
        f = figures
        rows = [
            ("points x dim", f"{f['n']:,} x {f['dim']} ({f['data']})"),
            ("upload (batches of 1,000)", f"{f['upload_s']:.2f} s"),
            ("optimize (HNSW + int8 + payload indexes)", f"{f['optimize_s']:.2f} s"),
            (
                "indexing rate, upload + HNSW",
                f"{f['index_points_per_s']:,} points/s (target {TARGET_POINTS_PER_S:,})",
            ),
            (
                "build_and_activate end to end",
                f"{f['build_and_activate_s']:.2f} s = {f['end_to_end_points_per_s']:,} points/s",
            ),
            ("nearest, limit 10: p50 / p99", f"{f['nearest_p50_ms']:.3f} / {f['nearest_p99_ms']:.3f} ms"),
            *(
                (f"  with filter {name}: p50, recall@10", f"{v['p50_ms']:.3f} ms, {v['recall_at_10']:.4f}")
                for name, v in f["filtered"].items()
            ),
            ("nearest_batch, per query", f"{f['batch_ms_per_query']:.3f} ms"),
            (f"recall@10 vs exact ({f['queries']} held-out queries)", f"{f['recall_at_10']:.4f}"),
            ("load average before / after", f"{f['load_avg_1m'][0]} / {f['load_avg_1m'][1]}"),
            ("machine", f["machine"]),
        ]
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            print(f"{label:<{width}}  {value}")
    print(json.dumps(figures))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
