"""kNN anomaly scores: how far each item is from its nearest *normal* items.

The score of an item is its mean distance to the ``k`` nearest items of a reference set of presumed
normal items (itself excluded). Scoring against every item lets a group of anomalies vouch for each other,
so the reference set is trimmed first. The first pass looks wider than ``k``: each item's mean distance to
its nearest ``contamination`` share of the data (a group of anomalies smaller than that share cannot fill
it with its own members), measured against a random sample of at most ``FIRST_PASS_SAMPLE`` reference
items so that it costs a fraction of the second pass. The ``contamination`` share with the highest
first-pass scores leaves the reference set, and the second pass scores every item, with ``k``, against
what remains. Feedback moves items in or out of the reference set: items confirmed as anomalies always
leave it, items confirmed as normal always stay.

On the ODDS sets (standardised features, k = 10, contamination 0.05; all rows), against the plain kNN
detector (mean distance to the 10 nearest items), AUROC: shuttle 0.8492 vs 0.6467, cardio 0.7064 vs
0.7046, thyroid 0.9668 vs 0.9611, annthyroid 0.8098 vs 0.8084 (a first pass with the same k as the second
gave shuttle 0.6474: its anomalies come in groups larger than k). See BENCHMARKS.md for the product run.

The second pass reads one neighbour list per item: its ``k + margin`` nearest other items, exact. An item
whose list runs out of reference items (it sits among many trimmed ones) is scored again against the
whole reference set. The lists come from :func:`~simapp.learning.metrics.nearest_neighbors`, which for
cosine data on CPUs with native bfloat16 picks candidates with a bfloat16 matrix product and ranks them
in float32, searching again in float32 wherever bfloat16 rounding could have hidden a neighbour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike

from simapp.learning.device import amp_dtype
from simapp.learning.metrics import nearest_neighbors

MARGIN = 10  # neighbours kept beyond k, so that trimming rarely forces a recomputation
FIRST_PASS_SAMPLE = 5_000  # reference items the wide first pass measures against
_CHUNK = 2048  # first-pass queries per matrix product: (2048, S) bfloat16 similarities at a time


def neighbour_lists(vectors: ArrayLike, m: int, *, distance: str) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``m`` nearest other rows: ``(distances, indices)``, each (N, m), nearest first, exact."""
    x = np.asarray(vectors, dtype=np.float32)
    return nearest_neighbors(x, x, m, distance=distance, exclude_self=True)


def knn_scores(
    vectors: ArrayLike,
    *,
    k: int,
    distance: str,
    reference: np.ndarray | None = None,
    queries: ArrayLike | None = None,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """Mean distance (Q,) of each query to its ``k`` nearest reference rows of ``vectors`` (N, D).

    ``reference`` is a boolean mask (N,) of the rows that count as neighbours (default: all). Without
    ``queries`` the rows of ``vectors`` (or only those at the indices ``rows``) are the queries, and a
    row is never its own neighbour (leave-one-out).
    """
    x = np.asarray(vectors, dtype=np.float32)
    ref = np.ones(len(x), dtype=bool) if reference is None else np.asarray(reference, dtype=bool)
    if not ref.any():
        raise ValueError("the reference set is empty: no item counts as normal")
    if queries is not None:
        q = np.asarray(queries, dtype=np.float32)
        ref_rows = np.flatnonzero(ref)
        dists, _ = nearest_neighbors(q, x[ref_rows], min(k, len(ref_rows)), distance=distance)
        return dists.mean(axis=1)
    return _rescore(x, np.arange(len(x)) if rows is None else np.asarray(rows), ref, k, distance)


def _rescore(x: np.ndarray, rows: np.ndarray, reference: np.ndarray, k: int, distance: str) -> np.ndarray:
    """Scores of ``rows`` against the whole reference set, each row left out of its own neighbours."""
    ref_rows = np.flatnonzero(reference)
    if len(rows) == 0:
        return np.empty(0, dtype=np.float64)
    want = max(1, min(k, len(ref_rows) - 1)) if len(ref_rows) > 1 else 1
    dists, idx = nearest_neighbors(x[rows], x[ref_rows], min(want + 1, len(ref_rows)), distance=distance)
    dists = np.where(ref_rows[idx] == rows[:, None], np.inf, dists)
    dists.sort(axis=1)
    dists = dists[:, :want]
    return np.where(np.isfinite(dists), dists, 0.0).mean(axis=1)  # 0: a lone reference row is the query


def _scores_from_lists(
    x: np.ndarray, dists: np.ndarray, idx: np.ndarray, reference: np.ndarray, k: int, distance: str
) -> np.ndarray:
    """Mean distance to the ``k`` nearest reference items, read from the neighbour lists where they hold
    enough reference items, computed again for the other rows."""
    k = min(k, max(1, int(reference.sum()) - 1))
    usable = reference[idx]  # (N, M): which listed neighbours are in the reference set
    # The first k usable entries of each sorted list: rank of each usable entry among the usable ones.
    rank = np.cumsum(usable, axis=1)
    take = usable & (rank <= k)
    enough = take.sum(axis=1) == k
    scores = np.empty(len(x), dtype=np.float64)
    scores[enough] = (dists * take).sum(axis=1)[enough] / k
    short = np.flatnonzero(~enough)
    scores[short] = _rescore(x, short, reference, k, distance)
    return scores


@dataclass
class AnomalyScores:
    scores: np.ndarray  # (N,) mean distance to the k nearest reference items
    reference: np.ndarray  # (N,) bool: the rows used as the normal reference set
    first_pass_threshold: float  # score above which an item left the reference set


def trimmed_knn_scores(
    vectors: ArrayLike,
    *,
    k: int,
    distance: str,
    contamination: float,
    normal: Sequence[int] = (),
    anomalous: Sequence[int] = (),
) -> AnomalyScores:
    """Scores of every row against a reference set trimmed of its ``contamination`` share of likely
    anomalies; rows in ``normal`` are always in the reference set, rows in ``anomalous`` never."""
    if not 0.0 <= contamination < 1.0:
        raise ValueError(f"contamination must be in [0, 1), not {contamination}")
    x = np.asarray(vectors, dtype=np.float32)
    n = len(x)
    if n < 2:
        raise ValueError("anomaly scores need at least two items")
    reference = np.ones(n, dtype=bool)
    reference[list(anomalous)] = False
    if not reference.any():
        raise ValueError("the reference set is empty: every item is a confirmed anomaly")
    first = _first_pass(x, reference, k, distance, contamination)
    threshold = float(np.quantile(first, 1.0 - contamination)) if contamination > 0 else float("inf")
    reference &= first <= threshold
    reference[list(normal)] = True
    reference[list(anomalous)] = False
    dists, idx = neighbour_lists(x, k + MARGIN, distance=distance)
    if reference.sum() < 2:  # everything was trimmed away: score against all but confirmed anomalies
        reference = np.ones(n, dtype=bool)
        reference[list(anomalous)] = False
    return AnomalyScores(_scores_from_lists(x, dists, idx, reference, k, distance), reference, threshold)


def _first_pass(
    x: np.ndarray, reference: np.ndarray, k: int, distance: str, contamination: float
) -> np.ndarray:
    """Each row's mean distance to its nearest ``contamination`` share (at least ``k``) of a seeded
    sample of the reference rows, itself left out.

    It only decides which items leave the reference set, so for cosine data on CPUs with native bfloat16
    the distances are the bfloat16 ones: a mean over hundreds of them is precise enough to rank items,
    and it keeps this pass at a fifth of the second pass's time at 100,000 items.
    """
    rows = np.flatnonzero(reference)
    if len(rows) > FIRST_PASS_SAMPLE:
        rows = np.sort(np.random.default_rng(0).choice(rows, FIRST_PASS_SAMPLE, replace=False))
    wide = max(k, int(np.ceil(contamination * len(rows))))
    if distance != "cosine" or amp_dtype(torch.device("cpu")) != torch.bfloat16 or wide + 1 >= len(rows):
        sample = np.zeros(len(x), dtype=bool)
        sample[rows] = True
        return _rescore(x, np.arange(len(x)), sample, wide, distance)
    xt = torch.nn.functional.normalize(torch.from_numpy(x), dim=1).to(torch.bfloat16)
    ref = xt[torch.from_numpy(rows)]  # (S, D)
    position = np.full(len(x), -1, dtype=np.int64)  # column of each row in the sample, -1 if absent
    position[rows] = np.arange(len(rows))
    scores = np.empty(len(x), dtype=np.float64)
    for start in range(0, len(x), _CHUNK):
        stop = min(len(x), start + _CHUNK)
        sims = torch.nn.functional.linear(xt[start:stop], ref)  # (c, S)
        own = torch.from_numpy(position[start:stop])
        inside = torch.nonzero(own >= 0).flatten()
        sims[inside, own[inside]] = -torch.inf  # not its own neighbour
        top = torch.topk(sims, wide, dim=1).values.float()  # (c, wide)
        scores[start:stop] = (1.0 - top).mean(dim=1).numpy()
    return scores
