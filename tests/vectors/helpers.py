"""Small real-looking data and exact reference answers for the vector-store tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from simapp.vectors import Distance, Hit, Point, make_payload

LABELS = ("billing", "cards", "transfers")


def make_points(
    n: int, dim: int, *, seed: int = 0, first_id: int = 0
) -> tuple[list[Point], NDArray[np.float32]]:
    """``n`` points with seeded normal vectors (n, dim), three labels and some metadata."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    points = [
        Point(
            id=first_id + i,
            vector=vectors[i],
            payload=make_payload(
                f"item-{first_id + i}",
                LABELS[i % len(LABELS)],
                {
                    "lang": "en" if i % 2 == 0 else "de",
                    "year": 1990 + i % 30,
                    "rating": round(i % 50 / 10, 1),
                },
            ),
        )
        for i in range(n)
    ]
    return points, vectors


def unit(x: NDArray[np.float32]) -> NDArray[np.float32]:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def exact_scores(vectors: NDArray[np.float32], query: NDArray[np.float32], distance: Distance) -> NDArray:
    """(N,) the score each backend must report: cosine similarity, or L2 distance."""
    if distance == "cosine":
        return unit(vectors) @ unit(query)
    return np.linalg.norm(vectors - query, axis=1)


def exact_nearest(
    vectors: NDArray[np.float32],
    query: NDArray[np.float32],
    distance: Distance,
    limit: int,
    *,
    first_id: int = 0,
    keep: Callable[[int], bool] = lambda i: True,
) -> list[tuple[int, float]]:
    """Brute-force reference: [(id, score)] best first, over the rows for which ``keep(row)`` holds."""
    scores = exact_scores(vectors, query, distance)
    rows = [i for i in range(len(vectors)) if keep(i)]
    rows.sort(key=lambda i: -scores[i] if distance == "cosine" else scores[i])
    return [(first_id + i, float(scores[i])) for i in rows[:limit]]


def assert_hits(hits: list[Hit], expected: list[tuple[int, float]], *, tol: float = 1e-4) -> None:
    assert [h.id for h in hits] == [i for i, _ in expected]
    np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected], atol=tol)
