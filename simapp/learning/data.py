"""Training data over cached encoder outputs: items with group labels, or scored pairs of items."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class GroupData:
    """Items (N, D) with a group label each (class, intent, cluster): same label = similar.

    ``labels`` may be any hashables (strings, ints); ``classes`` and ``codes`` (N,) int64 are derived.
    """

    embeddings: np.ndarray
    labels: Sequence[Hashable] | np.ndarray
    classes: np.ndarray = field(init=False, repr=False)
    codes: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.embeddings = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        labels = np.asarray(self.labels)
        if self.embeddings.ndim != 2 or labels.shape != (len(self.embeddings),):
            raise ValueError(
                f"GroupData needs embeddings (N, D) and labels (N,), got {self.embeddings.shape} "
                f"and {labels.shape}"
            )
        self.labels = labels
        self.classes, codes = np.unique(labels, return_inverse=True)
        self.codes = codes.astype(np.int64)

    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def subset(self, indices: np.ndarray) -> GroupData:
        return GroupData(self.embeddings[indices], np.asarray(self.labels)[indices])


@dataclass
class PairData:
    """Pairs of items with a similarity score in [0, 1] (1 = same, 0 = unrelated; binary is 0/1).

    ``embeddings`` (N, D) are the items, ``pairs`` (P, 2) index into them, ``scores`` (P,).
    """

    embeddings: np.ndarray
    pairs: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        self.embeddings = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        self.pairs = np.asarray(self.pairs, dtype=np.int64).reshape(-1, 2)  # (P, 2)
        self.scores = np.asarray(self.scores, dtype=np.float32)
        if self.embeddings.ndim != 2 or self.scores.shape != (len(self.pairs),):
            raise ValueError("PairData needs embeddings (N, D), pairs (P, 2) and scores (P,)")
        if len(self.pairs) and (self.pairs.min() < 0 or self.pairs.max() >= len(self.embeddings)):
            raise ValueError("PairData.pairs index outside embeddings")
        if len(self.scores) and (self.scores.min() < 0 or self.scores.max() > 1):
            raise ValueError("PairData.scores must lie in [0, 1]; rescale graded scores (e.g. STS 0..5 / 5)")

    @classmethod
    def from_vectors(cls, left: np.ndarray, right: np.ndarray, scores: np.ndarray) -> PairData:
        """Pairs given as two aligned arrays (P, D) of vectors: row i of ``left`` with row i of ``right``."""
        n = len(left)
        pairs = np.stack([np.arange(n), np.arange(n, 2 * n)], axis=1)  # (P, 2)
        return cls(np.concatenate([left, right]), pairs, scores)

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def subset(self, indices: np.ndarray) -> PairData:
        """The pairs at ``indices``, sharing the same item array."""
        return PairData(self.embeddings, self.pairs[indices], self.scores[indices])
