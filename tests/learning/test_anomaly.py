"""kNN anomaly scores (Django-free): plain scores against brute force, and the trimmed reference set."""

from __future__ import annotations

import numpy as np
import pytest

from simapp.learning.anomaly import knn_scores, neighbour_lists, trimmed_knn_scores


def brute_force_knn(x: np.ndarray, k: int, *, reference: np.ndarray | None = None) -> np.ndarray:
    """Mean Euclidean distance of each row to its k nearest reference rows, itself excluded (float64)."""
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))  # (N, N)
    np.fill_diagonal(d, np.inf)
    if reference is not None:
        d[:, ~reference] = np.inf
    return np.sort(d, axis=1)[:, :k].mean(axis=1)


def cluster_with_outliers(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """200 points of a unit Gaussian in 4-D, then 4 points far out in different directions (rows 200-203)."""
    rng = np.random.default_rng(seed)
    cluster = rng.normal(size=(200, 4))
    far = np.asarray([[9.0, 0, 0, 0], [0, -9.0, 0, 0], [0, 0, 9.0, 0], [6.0, 6.0, -6.0, 0]])
    return np.vstack([cluster, far]), np.arange(200, 204)


def test_knn_scores_exclude_self_and_match_brute_force() -> None:
    x = np.random.default_rng(1).normal(size=(60, 5))

    scores = knn_scores(x, k=4, distance="euclidean")

    np.testing.assert_allclose(scores, brute_force_knn(x, 4), rtol=1e-4, atol=1e-5)
    assert scores.shape == (60,) and (scores > 0).all()  # with itself as a neighbour, the first would be 0


def test_knn_scores_with_a_reference_mask_and_with_queries() -> None:
    x = np.random.default_rng(2).normal(size=(40, 3))
    reference = np.ones(40, dtype=bool)
    reference[[3, 17, 25]] = False
    queries = np.asarray([[0.0, 0.0, 0.0], [5.0, 5.0, 5.0]])

    masked = knn_scores(x, k=3, distance="euclidean", reference=reference)
    queried = knn_scores(x, k=3, distance="euclidean", queries=queries)

    np.testing.assert_allclose(masked, brute_force_knn(x, 3, reference=reference), rtol=1e-4, atol=1e-5)
    to_all = np.sort(np.linalg.norm(queries[:, None, :] - x[None, :, :], axis=-1), axis=1)[:, :3].mean(1)
    np.testing.assert_allclose(queried, to_all, rtol=1e-4, atol=1e-5)


def test_knn_scores_cosine_is_one_minus_cosine_similarity() -> None:
    x = np.random.default_rng(3).normal(size=(30, 6))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = 1.0 - unit @ unit.T
    np.fill_diagonal(d, np.inf)

    scores = knn_scores(x, k=5, distance="cosine")

    np.testing.assert_allclose(scores, np.sort(d, axis=1)[:, :5].mean(1), rtol=1e-4, atol=1e-5)


def test_knn_scores_refuse_an_empty_reference_set() -> None:
    with pytest.raises(ValueError, match="the reference set is empty"):
        knn_scores(np.zeros((3, 2)), k=2, distance="euclidean", reference=np.zeros(3, dtype=bool))


def test_contamination_takes_the_top_share_out_of_the_reference_set() -> None:
    x, _ = cluster_with_outliers()
    x = x[:200]  # continuous scores: no ties at the cut

    result = trimmed_knn_scores(x, k=5, distance="euclidean", contamination=0.1)

    # The first pass looks at each row's nearest 10% of the rows (20), not just its 5 nearest.
    first = brute_force_knn(x, 20)
    top = set(np.argsort(-first)[:20].tolist())  # 10% of 200
    assert set(np.flatnonzero(~result.reference).tolist()) == top
    assert result.reference.sum() == 180
    # The second pass scores every row against the 180 that remain (itself excluded when it is one).
    np.testing.assert_allclose(
        result.scores, brute_force_knn(x, 5, reference=result.reference), rtol=1e-4, atol=1e-5
    )


def test_rows_among_many_trimmed_rows_are_scored_against_the_whole_reference_set() -> None:
    rng = np.random.default_rng(4)
    cluster = rng.normal(size=(200, 4))
    # A sparse shell far out: every one of its points is trimmed, and their nearest neighbours are each
    # other, so their neighbour lists hold few reference items.
    shell = rng.normal(size=(30, 4))
    shell = 20.0 * shell / np.linalg.norm(shell, axis=1, keepdims=True)
    x = np.vstack([cluster, shell])

    result = trimmed_knn_scores(x, k=5, distance="euclidean", contamination=0.15)

    assert not result.reference[200:].any()
    np.testing.assert_allclose(
        result.scores, brute_force_knn(x, 5, reference=result.reference), rtol=1e-4, atol=1e-5
    )


def test_zero_contamination_keeps_every_row_in_the_reference_set() -> None:
    x, _ = cluster_with_outliers()

    result = trimmed_knn_scores(x, k=5, distance="euclidean", contamination=0.0)

    assert result.reference.all() and result.first_pass_threshold == float("inf")
    np.testing.assert_allclose(result.scores, brute_force_knn(x, 5), rtol=1e-4, atol=1e-5)


def test_feedback_moves_rows_in_and_out_of_the_reference_set() -> None:
    x, outliers = cluster_with_outliers()
    first = brute_force_knn(x, 5)
    typical = [int(i) for i in np.argsort(first)[:3]]  # the most normal rows, which trimming keeps
    normal = [int(outliers[0]), int(outliers[1])]  # far out, which trimming would drop
    anomalous = [*typical, int(outliers[2])]

    result = trimmed_knn_scores(
        x, k=5, distance="euclidean", contamination=0.05, normal=normal, anomalous=anomalous
    )

    assert result.reference[normal].all()
    assert not result.reference[anomalous].any()
    np.testing.assert_allclose(
        result.scores, brute_force_knn(x, 5, reference=result.reference), rtol=1e-4, atol=1e-5
    )


def test_far_out_points_get_the_top_scores() -> None:
    x, outliers = cluster_with_outliers()

    result = trimmed_knn_scores(x, k=10, distance="euclidean", contamination=0.05)

    assert set(np.argsort(-result.scores)[:4].tolist()) == set(outliers.tolist())
    assert result.scores[outliers].min() > 2 * np.quantile(result.scores[:200], 0.99)


def cluster_and_group() -> tuple[np.ndarray, np.ndarray]:
    """The 200-point cluster, then five identical points far away (rows 200-204)."""
    x, _ = cluster_with_outliers()
    group = np.repeat([[12.0, -12.0, 12.0, -12.0]], 5, axis=0)
    return np.vstack([x[:200], group]), np.arange(200, 205)


def test_trimming_scores_a_tight_group_by_its_distance_to_the_normal_items() -> None:
    x, rows = cluster_and_group()

    plain = knn_scores(x, k=10, distance="euclidean")  # 4 of each one's 10 neighbours are at distance 0
    trimmed = trimmed_knn_scores(x, k=10, distance="euclidean", contamination=0.05)

    assert not trimmed.reference[rows].any()
    kept = x[trimmed.reference]  # the cluster less its own trimmed edge
    to_kept = np.sort(np.linalg.norm(x[rows][:, None, :] - kept[None, :, :], axis=-1), axis=1)[:, :10]
    np.testing.assert_allclose(trimmed.scores[rows], to_kept.mean(axis=1), rtol=1e-4)
    assert (trimmed.scores[rows] > 1.6 * plain[rows]).all()
    assert set(np.argsort(-trimmed.scores)[:5].tolist()) == set(rows.tolist())


def test_trimming_unmasks_a_tight_group_larger_than_k() -> None:
    x, rows = cluster_and_group()

    plain = knn_scores(x, k=3, distance="euclidean")  # k < 5: each one's neighbours are the others
    trimmed = trimmed_knn_scores(x, k=3, distance="euclidean", contamination=0.05)

    assert plain[rows].max() < 1e-3  # they vouch for each other
    assert not trimmed.reference[rows].any()
    assert set(np.argsort(-trimmed.scores)[:5].tolist()) == set(rows.tolist())
    assert trimmed.scores[rows].min() > 3 * trimmed.scores[:200].max()


@pytest.mark.parametrize("contamination", [-0.1, 1.0, 1.5])
def test_a_contamination_outside_zero_to_one_is_refused(contamination: float) -> None:
    with pytest.raises(ValueError, match=f"contamination must be in \\[0, 1\\), not {contamination}"):
        trimmed_knn_scores(np.zeros((5, 2)), k=2, distance="euclidean", contamination=contamination)


def test_a_single_row_is_refused() -> None:
    with pytest.raises(ValueError, match="at least two items"):
        trimmed_knn_scores(np.zeros((1, 2)), k=2, distance="euclidean", contamination=0.05)


def test_cosine_neighbour_lists_of_a_large_set_are_the_exact_ones() -> None:
    # 8,200 vectors in 40 tight clusters: past the size at which the lists come from the bfloat16
    # candidate search (on CPUs that compute it natively), with ~200 members per cluster all within one
    # bfloat16 rounding of each other, so the candidates alone would miss true neighbours.
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 32))
    x = centres[rng.integers(0, 40, 8200)] + 0.05 * rng.normal(size=(8200, 32))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = unit[:300] @ unit.T  # (300, 8200) float64
    cos[np.arange(300), np.arange(300)] = -np.inf

    dists, idx = neighbour_lists(x, 15, distance="cosine")

    assert dists.shape == idx.shape == (8200, 15)
    # The 15 smallest distances, each belonging to the item returned for it (ties may swap items).
    np.testing.assert_allclose(dists[:300], 1.0 - np.sort(cos, axis=1)[:, ::-1][:, :15], atol=2e-6)
    np.testing.assert_allclose(dists[:300], 1.0 - np.take_along_axis(cos, idx[:300], axis=1), atol=2e-6)
    assert not (idx == np.arange(8200)[:, None]).any()
