from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from simapp.learning import (
    auroc,
    cosine_to_score,
    knn_accuracy,
    knn_predict,
    mean_reciprocal_rank,
    nearest_neighbors,
    oos_scores,
    pairwise_distance,
    precision_at_k,
    r_precision,
    retrieval_metrics,
    score_to_cosine,
    spearman,
)

NEIGHBOURS = np.array([["a", "b", "a"], ["b", "b", "a"], ["c", "c", "c"]])  # (Q=3, K=3)
QUERIES = np.array(["a", "a", "b"])


def test_precision_at_k() -> None:
    assert precision_at_k(NEIGHBOURS, QUERIES, 1) == pytest.approx(1 / 3)
    assert precision_at_k(NEIGHBOURS, QUERIES, 3) == pytest.approx((2 + 1 + 0) / 9)


def test_mean_reciprocal_rank_counts_zero_for_a_query_without_a_hit() -> None:
    assert mean_reciprocal_rank(NEIGHBOURS, QUERIES) == pytest.approx((1 + 1 / 3 + 0) / 3)


def test_r_precision_uses_each_querys_own_relevant_count() -> None:
    # R = 2 for the first two queries, 1 for the third.
    assert r_precision(NEIGHBOURS, QUERIES, [2, 2, 1]) == pytest.approx((1 / 2 + 0 / 2 + 0) / 3)
    with pytest.raises(ValueError, match="needs 4 neighbours"):
        r_precision(NEIGHBOURS, QUERIES, [4, 1, 1])


def test_knn_vote_weighted_by_distance_differs_from_the_plain_majority() -> None:
    labels = np.array([["x", "y", "y"]])
    distances = np.array([[0.01, 0.5, 0.6]])

    assert knn_predict(labels, distances, weighting="uniform").tolist() == ["y"]
    assert knn_predict(labels, distances, weighting="distance").tolist() == ["x"]


def test_knn_vote_breaks_ties_towards_the_nearest_neighbour() -> None:
    labels = np.array([["x", "y"], ["y", "x"]])
    distances = np.ones((2, 2))

    assert knn_predict(labels, distances, weighting="uniform").tolist() == ["x", "y"]


def test_knn_accuracy_and_nearest_neighbours_on_points_on_a_line() -> None:
    index = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])
    index_labels = np.array([0, 0, 0, 1, 1])
    queries = np.array([[0.4], [10.6], [6.5]])

    dists, idx = nearest_neighbors(queries, index, 2, distance="euclidean")

    assert idx.tolist() == [[0, 1], [4, 3], [3, 2]]
    np.testing.assert_allclose(dists, [[0.4, 0.6], [0.4, 0.6], [3.5, 4.5]], rtol=1e-4)
    # Query 3 is nearer the class-1 point (3.5) than the class-0 point (4.5): 1-NN says 1, label says 0.
    accuracy = knn_accuracy(queries, [0, 1, 0], index, index_labels, k=1, distance="euclidean")
    assert accuracy == pytest.approx(2 / 3)


def test_nearest_neighbours_can_leave_each_item_out() -> None:
    points = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])

    _, with_self = nearest_neighbors(points, points, 1)
    _, without_self = nearest_neighbors(points, points, 1, exclude_self=True)

    assert with_self[:, 0].tolist() == [0, 1, 2]
    assert without_self[:, 0].tolist() == [1, 0, 1]


@pytest.mark.parametrize("spread", [0.05, 0.5])
def test_cosine_neighbours_of_a_large_index_are_the_exact_ones(spread: float) -> None:
    # 6,000 vectors in 60 clusters: large enough for the bfloat16 candidate search (on CPUs that compute
    # bfloat16 natively). With spread 0.05 a cluster's ~100 members are all within one bfloat16 rounding
    # of each other, so the candidates alone would miss true neighbours.
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(60, 32))
    index = centres[rng.integers(0, 60, 6000)] + spread * rng.normal(size=(6000, 32))
    queries = centres[rng.integers(0, 60, 300)] + spread * rng.normal(size=(300, 32))
    unit = index / np.linalg.norm(index, axis=1, keepdims=True)
    cos = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ unit.T  # (300, 6000) float64
    self_cos = unit[:300] @ unit.T
    np.fill_diagonal(self_cos, -np.inf)

    dists, idx = nearest_neighbors(queries, index, 10)
    self_dists, self_idx = nearest_neighbors(index[:300], index, 10, exclude_self=True)

    # The k smallest distances, each belonging to the item returned for it (ties may swap items).
    for found, found_idx, exact in ((dists, idx, cos), (self_dists, self_idx, self_cos)):
        np.testing.assert_allclose(found, 1.0 - np.sort(exact, axis=1)[:, ::-1][:, :10], atol=2e-6)
        np.testing.assert_allclose(found, 1.0 - np.take_along_axis(exact, found_idx, axis=1), atol=2e-6)
    assert not (self_idx == np.arange(300)[:, None]).any()


def test_retrieval_metrics_on_two_clean_clusters_are_perfect() -> None:
    points = np.array([[1.0, 0.0], [0.99, 0.1], [0.98, 0.2], [0.0, 1.0], [0.1, 0.99], [0.2, 0.98]])
    labels = np.array(["a", "a", "a", "b", "b", "b"])

    metrics = retrieval_metrics(points, labels, points, labels, k=2, exclude_self=True)

    assert metrics == {
        "precision_at_1": 1.0,
        "precision_at_2": 1.0,
        "mrr": 1.0,
        "r_precision": 1.0,
        "knn_accuracy": 1.0,
    }


def test_auroc_counts_ties_as_one_half() -> None:
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5], [0, 1]) == 0.5
    assert auroc([1, 2, 3], [0, 1, 1]) == 1.0
    with pytest.raises(ValueError, match="one positive and one negative"):
        auroc([1, 2], [0, 0])


def test_spearman_is_rank_correlation() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 400]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_oos_score_is_the_mean_distance_to_the_k_nearest() -> None:
    index = np.array([[1.0, 0.0], [0.0, 1.0]])
    queries = np.array([[1.0, 0.0], [-1.0, 0.0]])

    scores = oos_scores(queries, index, k=2)

    np.testing.assert_allclose(scores, [(0 + 1) / 2, (1 + 2) / 2], atol=1e-6)


def test_one_cosine_convention_for_scores_and_distances() -> None:
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])

    assert pairwise_distance(a, b).tolist() == [[0.0, 1.0, 2.0]]
    assert cosine_to_score(-1.0) == 0.0
    assert cosine_to_score(0.0) == 0.5
    assert score_to_cosine(1.0) == 1.0
    assert score_to_cosine(cosine_to_score(0.3)) == pytest.approx(0.3)
    assert math.isclose(float(pairwise_distance(a, b, "euclidean")[0, 2]), 4.0, rel_tol=1e-6)
