"""Evaluation metrics as plain functions over numpy arrays (torch tensors are accepted too).

Retrieval metrics take the labels of each query's ranked neighbours (Q, K); :func:`nearest_neighbors`
produces the ranking. Cosine similarity is in [-1, 1] and cosine distance is ``1 - cos`` (package
convention); Euclidean distance is used for ``distance="euclidean"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from simapp.learning.device import amp_dtype
from simapp.learning.similarity import check_distance, pairwise_distance

ArrayLike = np.ndarray | torch.Tensor | Sequence[Any]


def _tensor(x: ArrayLike) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu()
    return torch.as_tensor(np.asarray(x, dtype=np.float32))


def _labels(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def nearest_neighbors(
    queries: ArrayLike,
    index: ArrayLike,
    k: int,
    *,
    distance: str = "cosine",
    exclude_self: bool = False,
    chunk_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours: ``(distances, indices)``, each (Q, K), nearest first.

    ``exclude_self`` drops neighbour ``i`` for query ``i`` (leave-one-out when queries are the index).
    """
    check_distance(distance)
    q, x = _tensor(queries), _tensor(index)
    k = min(k, len(x) - (1 if exclude_self else 0))
    if (
        distance == "cosine"
        and len(x) >= _BF16_MIN_INDEX
        and amp_dtype(torch.device("cpu")) == torch.bfloat16
    ):
        # bfloat16 similarities take half the memory of float32 ones: twice the queries per product.
        return _cosine_neighbors_bf16(q, x, k, exclude_self=exclude_self, chunk_size=2 * chunk_size)
    dists = np.empty((len(q), k), dtype=np.float32)
    idx = np.empty((len(q), k), dtype=np.int64)
    for start in range(0, len(q), chunk_size):
        d = pairwise_distance(q[start : start + chunk_size], x, distance)  # (q, N)
        if exclude_self:
            rows = torch.arange(len(d))
            d[rows, rows + start] = float("inf")
        top_d, top_i = torch.topk(d, k, dim=1, largest=False)  # (q, K)
        dists[start : start + len(d)] = top_d.numpy()
        idx[start : start + len(d)] = top_i.numpy()
    return dists, idx


# Index size from which cosine neighbours are found with a bfloat16 product (where the CPU computes it
# natively) and then ranked exactly in float32; below it the float32 product alone is cheap.
_BF16_MIN_INDEX = 4096
_GATHER = 256  # queries per gather of candidate vectors when checking them in float32


def _cosine_neighbors_bf16(
    q: torch.Tensor, x: torch.Tensor, k: int, *, exclude_self: bool, chunk_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`nearest_neighbors` for cosine distance, exact, with most of the work in bfloat16 (several
    times faster than float32 on CPUs that compute it natively).

    A bfloat16 product picks ``2k + 8`` candidates per query, whose cosines are computed again in float32
    and ranked. A neighbour outside the candidates has a bfloat16 cosine at most the last candidate's, so
    an exact cosine at most that plus the rounding bound: where the k-th exact cosine clears that, the
    list is exact; the other queries (near-duplicates tied in bfloat16) are searched again in float32.
    The bound is per query: rounding the unit vectors ``q`` and ``x`` to bfloat16 moves them by
    ``|dq|`` and ``|dx|`` (measured; at most 2^-8 each), which moves their dot product by at most
    ``|dq| + |dx| + |dq| |dx|`` (Cauchy-Schwarz); the bfloat16 result rounds by at most 2^-8 more, and
    the float32 sums of D products by at most D 2^-24 each. On MiniLM vectors of CLINC150 (3,000 val
    queries against 15,000 train items, k = 10) no query needed the second search, and the whole took
    about 60 % of the float32 search's time on one core; on random unit vectors (20,000 x 384, k = 10)
    0.4 % of the queries needed it."""
    qn, xn = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(x, dim=1)
    low = xn.to(torch.bfloat16)  # (N, D)
    dx = float((xn - low.float()).norm(dim=1).max())  # largest move of an index vector
    slack = 2.0**-8 + 2.1 * xn.shape[1] * 2.0**-24 + 1e-6  # result rounding and float32 sums
    wanted = min(2 * k + 8, len(x))
    dists = np.empty((len(q), k), dtype=np.float32)
    idx = np.empty((len(q), k), dtype=np.int64)
    for start in range(0, len(q), chunk_size):
        chunk = qn[start : start + chunk_size]  # (c, D)
        rows = torch.arange(len(chunk))
        own = rows + start
        chunk_low = chunk.to(torch.bfloat16)
        dq = (chunk - chunk_low.float()).norm(dim=1)  # (c,)
        sims = torch.nn.functional.linear(chunk_low, low)  # (c, N) approximate cosines
        if exclude_self:
            sims[rows, own] = -torch.inf
        candidates = torch.topk(sims, wanted, dim=1)  # (c, W)
        exact = torch.empty(candidates.indices.shape, dtype=torch.float32)  # (c, W) float32 cosines
        # The candidates' vectors are gathered a few hundred queries at a time, so that they are still
        # in cache when the products read them: same values, 25 % less time at 15,000 items on 2 cores.
        for lo in range(0, len(chunk), _GATHER):
            block = candidates.indices[lo : lo + _GATHER]  # (g, W)
            exact[lo : lo + _GATHER] = torch.einsum("gd,gwd->gw", chunk[lo : lo + _GATHER], xn[block])
        if exclude_self:
            exact[candidates.indices == own[:, None]] = -torch.inf
        top = torch.topk(exact, k, dim=1)  # nearest first
        values, found = top.values, torch.gather(candidates.indices, 1, top.indices)
        error = dq + dx + dq * dx + slack  # (c,) bound on |bfloat16 cosine - exact cosine|
        unsure = top.values[:, -1] - candidates.values[:, -1].float() <= error
        again = torch.nonzero(unsure).flatten() if wanted < len(x) else torch.empty(0, dtype=torch.long)
        for lo in range(0, len(again), _GATHER):
            some = again[lo : lo + _GATHER]
            full = chunk[some] @ xn.T  # (u, N) float32 cosines
            if exclude_self:
                full[torch.arange(len(some)), own[some]] = -torch.inf
            redo = torch.topk(full, k, dim=1)
            values[some], found[some] = redo.values, redo.indices
        dists[start : start + len(chunk)] = (1.0 - values).numpy()
        idx[start : start + len(chunk)] = found.numpy()
    return dists, idx


def knn_predict(
    neighbor_labels: ArrayLike, neighbor_distances: ArrayLike, *, weighting: str = "distance"
) -> np.ndarray:
    """Majority vote over neighbours (Q, K); with ``weighting="distance"`` each vote weighs ``1 / d``.

    Inverse-distance votes let a few very close neighbours outvote a crowd of loosely related ones;
    ties go to the label of the nearest neighbour among the tied ones.
    """
    labels = _labels(neighbor_labels)
    d = np.asarray(_labels(neighbor_distances), dtype=np.float64)
    if weighting == "distance":
        weights = 1.0 / (d + 1e-6)
    elif weighting == "uniform":
        weights = np.ones_like(d)
    else:
        raise ValueError(f"Unknown weighting {weighting!r}; valid: distance, uniform")
    classes, codes = np.unique(labels, return_inverse=True)
    codes = codes.reshape(labels.shape)  # (Q, K)
    votes = np.zeros((len(labels), len(classes)))
    np.add.at(votes, (np.arange(len(labels))[:, None], codes), weights)
    # Among tied classes, the earliest (nearest) neighbour's class wins.
    best = votes.max(axis=1, keepdims=True)
    tied = np.isclose(votes, best, rtol=1e-12, atol=0.0)  # (Q, C)
    first_tied = tied[np.arange(len(labels))[:, None], codes].argmax(axis=1)  # (Q,)
    return classes[codes[np.arange(len(labels)), first_tied]]


def knn_accuracy(
    queries: ArrayLike,
    query_labels: ArrayLike,
    index: ArrayLike,
    index_labels: ArrayLike,
    *,
    k: int = 10,
    distance: str = "cosine",
    weighting: str = "distance",
    exclude_self: bool = False,
) -> float:
    """Fraction of queries whose (distance-weighted) kNN vote over the index gives their own label."""
    dists, idx = nearest_neighbors(queries, index, k, distance=distance, exclude_self=exclude_self)
    predicted = knn_predict(_labels(index_labels)[idx], dists, weighting=weighting)
    return float(np.mean(predicted == _labels(query_labels)))


def precision_at_k(neighbor_labels: ArrayLike, query_labels: ArrayLike, k: int) -> float:
    """Mean fraction of the first ``k`` neighbours (Q, K>=k) that share the query's label."""
    hits = _labels(neighbor_labels)[:, :k] == _labels(query_labels)[:, None]  # (Q, k)
    return float(hits.mean())


def mean_reciprocal_rank(neighbor_labels: ArrayLike, query_labels: ArrayLike) -> float:
    """Mean of ``1 / rank`` of the first relevant neighbour; 0 for a query with none in its K."""
    hits = _labels(neighbor_labels) == _labels(query_labels)[:, None]  # (Q, K)
    first = hits.argmax(axis=1)
    reciprocal = np.where(hits.any(axis=1), 1.0 / (first + 1), 0.0)
    return float(reciprocal.mean())


def r_precision(neighbor_labels: ArrayLike, query_labels: ArrayLike, relevant_counts: ArrayLike) -> float:
    """Mean precision at R, where R is each query's number of relevant items in the index.

    ``neighbor_labels`` (Q, K) must have ``K >= max(R)``; queries with ``R = 0`` are skipped.
    """
    labels = _labels(neighbor_labels)
    r = np.asarray(_labels(relevant_counts), dtype=np.int64)
    if labels.shape[1] < r.max(initial=0):
        raise ValueError(f"r_precision needs {r.max()} neighbours per query, got {labels.shape[1]}")
    hits = labels == _labels(query_labels)[:, None]  # (Q, K)
    in_r = np.arange(labels.shape[1])[None, :] < r[:, None]  # (Q, K): within each query's R
    keep = r > 0
    return float(((hits & in_r).sum(axis=1)[keep] / r[keep]).mean())


def retrieval_metrics(
    queries: ArrayLike,
    query_labels: ArrayLike,
    index: ArrayLike,
    index_labels: ArrayLike,
    *,
    k: int = 10,
    distance: str = "cosine",
    exclude_self: bool = False,
) -> dict[str, float]:
    """precision@1, precision@k, MRR@k, R-precision and kNN accuracy (k, distance-weighted) at once."""
    q_labels, x_labels = _labels(query_labels), _labels(index_labels)
    classes, counts = np.unique(x_labels, return_counts=True)
    count_of = dict(zip(classes.tolist(), counts.tolist(), strict=True))
    relevant = np.array([count_of.get(label, 0) for label in q_labels.tolist()]) - (1 if exclude_self else 0)
    depth = max(k, int(relevant.max(initial=0)))
    dists, idx = nearest_neighbors(queries, index, depth, distance=distance, exclude_self=exclude_self)
    neighbours = x_labels[idx]  # (Q, depth)
    predicted = knn_predict(neighbours[:, :k], dists[:, :k])
    return {
        "precision_at_1": precision_at_k(neighbours, q_labels, 1),
        f"precision_at_{k}": precision_at_k(neighbours, q_labels, k),
        "mrr": mean_reciprocal_rank(neighbours[:, :k], q_labels),
        "r_precision": r_precision(neighbours, q_labels, relevant),
        "knn_accuracy": float(np.mean(predicted == q_labels)),
    }


def spearman(predicted: ArrayLike, target: ArrayLike) -> float:
    """Spearman rank correlation (ties averaged)."""
    from scipy.stats import spearmanr  # here, not at the top: scipy.stats adds ~0.3 s to every start-up

    return float(spearmanr(_labels(predicted), _labels(target)).statistic)


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve: the probability that a positive (label 1) outscores a negative.

    Computed from ranks (Mann-Whitney U), ties counting one half. Raises ``ValueError`` if either
    class is absent.
    """
    s = np.asarray(_labels(scores), dtype=np.float64)
    y = np.asarray(_labels(labels)).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("auroc needs at least one positive and one negative")
    from scipy.stats import rankdata

    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def oos_scores(queries: ArrayLike, index: ArrayLike, *, k: int = 10, distance: str = "cosine") -> np.ndarray:
    """Out-of-scope / anomaly score (Q,): mean distance to the ``k`` nearest index items; higher = farther."""
    dists, _ = nearest_neighbors(queries, index, k, distance=distance)
    return dists.mean(axis=1)
