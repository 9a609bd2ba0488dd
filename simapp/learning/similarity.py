"""The one similarity convention of the package (see the package docstring).

Cosine similarity is in ``[-1, 1]``; a ``[0, 1]`` score is ``(cos + 1) / 2``. Distances: cosine
distance ``1 - cos`` (``[0, 2]``) or Euclidean.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Distance = Literal["cosine", "euclidean"]
DISTANCES: tuple[str, ...] = ("cosine", "euclidean")


def check_distance(distance: str) -> Distance:
    if distance not in DISTANCES:
        raise ValueError(f"Unknown distance {distance!r}; valid: {', '.join(DISTANCES)}")
    return distance  # type: ignore[return-value]


def cosine_to_score(cos: torch.Tensor | float) -> torch.Tensor | float:
    """Map a cosine similarity in ``[-1, 1]`` to a score in ``[0, 1]``."""
    return (cos + 1.0) / 2.0


def score_to_cosine(score: torch.Tensor | float) -> torch.Tensor | float:
    """Map a ``[0, 1]`` pair score to the cosine similarity it stands for, in ``[-1, 1]``."""
    return 2.0 * score - 1.0


def pairwise_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every row of ``a`` (A, D) with every row of ``b`` (B, D): (A, B) in [-1, 1]."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def pairwise_distance(a: torch.Tensor, b: torch.Tensor, distance: str = "cosine") -> torch.Tensor:
    """Distance of every row of ``a`` (A, D) to every row of ``b`` (B, D): (A, B), smaller is nearer.

    Cosine distance is ``1 - cos``. Euclidean distance is computed from the Gram matrix (one matmul)
    after centring both sides on ``b``'s mean, which keeps the cancellation error of
    ``|a|^2 + |b|^2 - 2ab`` small for points far from the origin; it is clamped at a tiny epsilon
    before the square root, so its gradient stays finite for identical rows.
    """
    if check_distance(distance) == "cosine":
        return 1.0 - pairwise_similarity(a, b)
    centre = b.mean(0, keepdim=True).detach()  # (1, D)
    a, b = a - centre, b - centre
    sq = (a * a).sum(-1)[:, None] + (b * b).sum(-1)[None, :] - 2.0 * a @ b.T  # (A, B)
    return sq.clamp_min(1e-12).sqrt()


def paired_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of row i of ``a`` (B, D) with row i of ``b`` (B, D): (B,) in [-1, 1]."""
    return F.cosine_similarity(a, b, dim=-1)


def paired_distance(a: torch.Tensor, b: torch.Tensor, distance: str = "cosine") -> torch.Tensor:
    """Distance of row i of ``a`` (B, D) to row i of ``b`` (B, D): (B,)."""
    if check_distance(distance) == "cosine":
        return 1.0 - paired_similarity(a, b)
    return ((a - b).pow(2).sum(-1).clamp_min(1e-12)).sqrt()
