"""Learning-core benchmark: ``python -m bench.learning [--json]``.

On the shared data (``SIMAPP_SHARED_DATA``, default ``<repo>/../shared/data``), with the product's
default code path (``create_encoder("minilm")``, ``EmbeddingCache``, ``train(TrainConfig(...))``,
``SimilarityModel.embed``, the metric functions):

* encodes every text once through the persistent cache under ``var/bench-cache/`` (a rerun only reads);
* CLINC150: trains on ``train``, reports kNN accuracy on ``val`` and OOS AUROC of ``oos_val`` against
  ``val`` (score: mean cosine distance to the k nearest training items), frozen and fine-tuned;
* STS-B: trains on ``sts-train`` (scores / 5), reports Spearman on ``sts-dev``, frozen and fine-tuned;
* Banking77: trains on ``train``, reports kNN accuracy on ``test``, frozen and fine-tuned;
* cache speed-up: one head-training epoch over CLINC150 train (default head, loss and batches) reading
  cached vectors, against the same epoch running the frozen encoder on every batch (timed on the first
  batches and scaled per batch to the whole epoch, since a full uncached epoch takes minutes).

Prints a table, then, as its last line, one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simapp.learning import (
    EmbeddingCache,
    Encoder,
    GroupData,
    PairData,
    SimilarityModel,
    TrainConfig,
    TrainResult,
    auroc,
    content_hash,
    create_encoder,
    create_head,
    knn_accuracy,
    oos_scores,
    spearman,
    train,
)
from simapp.learning.device import amp_dtype, resolve_device
from simapp.learning.trainer import DEFAULT_GROUP_BATCH, REFIT_MAX_ITEMS, TrainStep, default_loss_name

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SIMAPP_SHARED_DATA", REPO.parent / "shared" / "data"))
TARGETS = {
    "cache_speedup_per_epoch": 100.0,
    "clinc150_val_knn_accuracy": 0.96,
    "clinc150_val_oos_auroc": 0.985,
    "stsb_dev_spearman": 0.872,
    "banking77_test_knn_accuracy": 0.93,
}
MAX_TRAIN_SECONDS = 60.0


def load_clinc() -> dict[str, list[list[str]]]:
    return json.loads((SHARED / "clinc150" / "data_full_train_val.json").read_text(encoding="utf-8"))


def load_banking(split: str) -> tuple[list[str], list[str]]:
    with (SHARED / "banking77" / f"{split}.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r["text"] for r in rows], [r["category"] for r in rows]


def load_sts(split: str) -> tuple[list[str], list[str], np.ndarray]:
    """STS-B: TAB-separated, no quoting; fields 5, 6, 7 = score, sentence 1, sentence 2."""
    left, right, scores = [], [], []
    for line in (SHARED / "stsb" / f"sts-{split}.csv").read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")[:7]
        scores.append(float(fields[4]))
        left.append(fields[5])
        right.append(fields[6])
    return left, right, np.asarray(scores)


class Embedder:
    """Cached encoder outputs, with the cache's hit/miss counts and the time spent."""

    def __init__(self, cache: EmbeddingCache) -> None:
        self.cache = cache
        self.seconds = 0.0

    def __call__(self, texts: list[str]) -> np.ndarray:
        start = time.perf_counter()
        vectors = self.cache.get_or_compute([content_hash(t) for t in texts], texts)
        self.seconds += time.perf_counter() - start
        return vectors


def knn_figures(
    model: SimilarityModel,
    index: np.ndarray,
    index_labels: list[str],
    queries: np.ndarray,
    query_labels: list[str],
    oos: np.ndarray | None,
    k: int,
) -> tuple[float, float | None]:
    x, q = model.embed(index), model.embed(queries)
    accuracy = knn_accuracy(q, query_labels, x, index_labels, k=k, distance=model.distance)
    if oos is None:
        return accuracy, None
    o = model.embed(oos)
    scores = np.concatenate([oos_scores(q, x, k=k), oos_scores(o, x, k=k)])
    labels = np.concatenate([np.zeros(len(q)), np.ones(len(o))])
    return accuracy, auroc(scores, labels)


def timed_train(config: TrainConfig, data: GroupData | PairData) -> tuple[TrainResult, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = train(config, data)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def epoch_speedup(
    encoder: Encoder,
    texts: list[str],
    vectors: np.ndarray,
    labels: list[str],
    *,
    head_name: str,
    uncached_batches: int,
) -> dict[str, float]:
    """One epoch of the trainer's own step (:class:`TrainStep`: default loss and identity anchor,
    AdamW, one-cycle schedule, the default m-per-class batches, the trainer's mixed precision) with head
    ``head_name``, reading cached vectors, vs the same step running the frozen encoder on each batch
    (timed on ``uncached_batches`` batches and scaled to the epoch)."""
    config = TrainConfig(head=head_name, distance=encoder.distance)
    data = GroupData(vectors, labels)
    loss_name = default_loss_name(data, config.distance)
    device = resolve_device(config.device)
    batch_size = config.batch_size or DEFAULT_GROUP_BATCH
    warmup = 2

    def make_step(rows: Callable[[np.ndarray], torch.Tensor] | None, steps: int) -> TrainStep:
        torch.manual_seed(0)
        step = TrainStep(config, data, loss_name=loss_name, device=device, rows=rows)
        step.schedule(steps)
        return step

    def encoded(idx: np.ndarray) -> torch.Tensor:
        # What a batch costs without the cache: the encoder runs as it does when it fills the cache.
        return torch.from_numpy(encoder.encode([texts[i] for i in idx.tolist()])).to(device)  # (B, D)

    cached = make_step(None, 0)
    batches = list(cached.sampler(batch_size, config.samples_per_class, np.random.default_rng(0)))
    cached.schedule(warmup + len(batches))
    uncached = make_step(encoded, warmup + uncached_batches)

    def run(step: TrainStep, selected: list[np.ndarray]) -> float:
        start = time.perf_counter()
        for batch in selected:
            float(step(batch))  # the trainer reads every step's loss
        return time.perf_counter() - start

    # Warm-up, untimed: allocations, thread pools, and the encoder's weights (loaded on first use).
    run(cached, batches[-warmup:])
    run(uncached, batches[-warmup:])
    cached_epoch = run(cached, batches)
    uncached_epoch = run(uncached, batches[:uncached_batches]) / uncached_batches * len(batches)
    return {
        "speedup": uncached_epoch / cached_epoch,
        "cached": cached_epoch,
        "uncached": uncached_epoch,
        "batches": len(batches),
        "batch_size": len(batches[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="also print the JSON line (always last)")
    parser.add_argument("--cache-dir", default=str(REPO / "var" / "bench-cache"))
    parser.add_argument("--uncached-batches", type=int, default=4)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    started = time.perf_counter()

    encoder = create_encoder("minilm")
    cache = EmbeddingCache(args.cache_dir, encoder)
    embed = Embedder(cache)
    clinc = load_clinc()
    c_train, c_val, c_oos = clinc["train"], clinc["val"], clinc["oos_val"]
    b_train_x, b_train_y = load_banking("train")
    b_test_x, b_test_y = load_banking("test")
    s_train = load_sts("train")
    s_dev = load_sts("dev")

    c_train_v = embed([t for t, _ in c_train])
    c_val_v = embed([t for t, _ in c_val])
    c_oos_v = embed([t for t, _ in c_oos])
    b_train_v, b_test_v = embed(b_train_x), embed(b_test_x)
    s_train_a, s_train_b = embed(s_train[0]), embed(s_train[1])
    s_dev_a, s_dev_b = embed(s_dev[0]), embed(s_dev[1])
    figures: dict[str, Any] = {
        "cache_items_requested": cache.stats.requested,
        "cache_hits": cache.stats.hits,
        "cache_misses": cache.stats.misses,
        "encode_seconds": embed.seconds,
    }

    config = TrainConfig(distance=encoder.distance)
    k = config.knn_k
    frozen = SimilarityModel.from_encoder(encoder, create_head("identity", encoder.dim))

    # CLINC150: train on train, evaluate on val and oos_val.
    c_train_labels = [label for _, label in c_train]
    c_val_labels = [label for _, label in c_val]
    result, wall, cpu = timed_train(config, GroupData(c_train_v, c_train_labels))
    tuned = SimilarityModel.from_encoder(encoder, result.head)
    acc, oos_auc = knn_figures(tuned, c_train_v, c_train_labels, c_val_v, c_val_labels, c_oos_v, k)
    acc0, oos_auc0 = knn_figures(frozen, c_train_v, c_train_labels, c_val_v, c_val_labels, c_oos_v, k)
    figures |= {
        "clinc150_val_knn_accuracy": acc,
        "clinc150_val_knn_accuracy_frozen": acc0,
        "clinc150_val_oos_auroc": oos_auc,
        "clinc150_val_oos_auroc_frozen": oos_auc0,
        "clinc150_train_seconds": wall,
        "clinc150_train_cpu_seconds": cpu,
        "clinc150_epochs": f"{result.epochs_run} run, {result.best_epoch} chosen, refit {len(result.refit_history)}",
        "clinc150_holdout_knn_accuracy": result.best_metric,
    }

    # STS-B: train on sts-train, Spearman on sts-dev.
    pairs = PairData.from_vectors(s_train_a, s_train_b, s_train[2] / 5.0)
    result, wall, cpu = timed_train(config, pairs)
    tuned = SimilarityModel.from_encoder(encoder, result.head)
    cos = np.sum(tuned.embed(s_dev_a) * tuned.embed(s_dev_b), axis=1)
    cos0 = np.sum(frozen.embed(s_dev_a) * frozen.embed(s_dev_b), axis=1)
    figures |= {
        "stsb_dev_spearman": spearman(cos, s_dev[2]),
        "stsb_dev_spearman_frozen": spearman(cos0, s_dev[2]),
        "stsb_train_seconds": wall,
        "stsb_epochs": f"{result.epochs_run} run, {result.best_epoch} chosen, refit {len(result.refit_history)}",
    }

    # Banking77: train on train, kNN accuracy on test.
    result, wall, cpu = timed_train(config, GroupData(b_train_v, b_train_y))
    tuned = SimilarityModel.from_encoder(encoder, result.head)
    acc, _ = knn_figures(tuned, b_train_v, b_train_y, b_test_v, b_test_y, None, k)
    acc0, _ = knn_figures(frozen, b_train_v, b_train_y, b_test_v, b_test_y, None, k)
    figures |= {
        "banking77_test_knn_accuracy": acc,
        "banking77_test_knn_accuracy_frozen": acc0,
        "banking77_train_seconds": wall,
        "banking77_epochs": f"{result.epochs_run} run, {result.best_epoch} chosen, refit {len(result.refit_history)}",
    }

    speed: dict[str, dict[str, float]] = {}
    for head_name in (config.head, "skip"):
        speed[head_name] = epoch_speedup(
            encoder,
            [t for t, _ in c_train],
            c_train_v,
            c_train_labels,
            head_name=head_name,
            uncached_batches=args.uncached_batches,
        )
    default, skip = speed[config.head], speed["skip"]
    default_hidden = getattr(create_head(config.head, encoder.dim), "hidden_dim", encoder.dim)
    figures |= {
        "cache_speedup_per_epoch": default["speedup"],
        "cache_epoch_seconds_cached": default["cached"],
        "cache_epoch_seconds_uncached": default["uncached"],
        "cache_speedup_per_epoch_skip_head": skip["speedup"],
        "cache_epoch_seconds_cached_skip_head": skip["cached"],
        "cache_epoch_seconds_uncached_skip_head": skip["uncached"],
        "cache_epoch_uncached_measured": f"{args.uncached_batches} of {default['batches']} batches, scaled per batch",
        "cache_epoch_batch_size": default["batch_size"],
    }
    figures |= {
        "device": result.device,
        "torch_threads": torch.get_num_threads(),
        "head_precision": str(amp_dtype(torch.device(result.device)) or torch.float32).removeprefix("torch."),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "defaults": (
            f"head={config.head} (hidden {default_hidden // encoder.dim}x), loss groups=supcon pairs=cosent, "
            f"group batch {config.batch_size or DEFAULT_GROUP_BATCH}, refit up to {REFIT_MAX_ITEMS} items, "
            f"knn k={k} distance-weighted"
        ),
        "total_seconds": time.perf_counter() - started,
    }
    figures = {key: round(v, 4) if isinstance(v, float) else v for key, v in figures.items()}

    print_table(figures)
    if args.json:
        print(json.dumps(figures))


def print_table(f: dict[str, Any]) -> None:
    def row(name: str, key: str, target: str) -> None:
        frozen = f.get(f"{key}_frozen")
        met = ""
        if key in TARGETS:
            met = "met" if f[key] >= TARGETS[key] else "MISSED"
        frozen_text = f"{frozen:.4f}" if isinstance(frozen, float) else ""
        print(f"| {name:<40} | {frozen_text:>8} | {f[key]:>10.4f} | {target:>8} | {met:<6} |")

    print(f"| {'figure':<40} | {'frozen':>8} | {'fine-tuned':>10} | {'target':>8} | {'':<6} |")
    print(f"| {'-' * 40} | {'-' * 8} | {'-' * 10} | {'-' * 8} | {'-' * 6} |")
    row("CLINC150 val kNN accuracy", "clinc150_val_knn_accuracy", ">= 0.96")
    row("CLINC150 val OOS AUROC", "clinc150_val_oos_auroc", ">= 0.985")
    row("STS-B dev Spearman", "stsb_dev_spearman", ">= 0.872")
    row("Banking77 test kNN accuracy", "banking77_test_knn_accuracy", ">= 0.93")
    train_met = "met" if f["clinc150_train_seconds"] <= MAX_TRAIN_SECONDS else "MISSED"
    print(
        f"| {'CLINC150 head training (s, wall)':<40} | {'':>8} | {f['clinc150_train_seconds']:>10.1f} "
        f"| {'<= 60':>8} | {train_met:<6} |"
    )
    for label, suffix in (("default mlp", ""), ("skip, linear", "_skip_head")):
        speedup = f[f"cache_speedup_per_epoch{suffix}"]
        print(
            f"| {'cache speed-up per epoch, ' + label:<40} | {'':>8} | {speedup:>10.1f} | {'>= 100':>8} "
            f"| {'met' if speedup >= 100 else 'MISSED':<6} |"
        )
    print(
        f"epoch (default head): cached {f['cache_epoch_seconds_cached']:.2f} s, uncached "
        f"{f['cache_epoch_seconds_uncached']:.1f} s ({f['cache_epoch_uncached_measured']}); "
        f"cache: {f['cache_hits']} hits, {f['cache_misses']} misses, {f['encode_seconds']:.1f} s; "
        f"device {f['device']}; load average {f['load_average_before']:.2f} -> {f['load_average_after']:.2f}"
    )


if __name__ == "__main__":
    main()
