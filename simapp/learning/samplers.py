"""Batch samplers: class-balanced batches for groups, shuffled batches for pairs."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class MPerClassSampler:
    """Batches of ``batch_size // m`` distinct classes with ``m`` items each (class-balanced).

    Classes are drawn uniformly, so rare classes are seen as often as frequent ones and every batch has
    positives for every anchor. Items are drawn without replacement within a batch when the class has
    at least ``m`` of them. An epoch has ``ceil(N / batch_size)`` batches.
    """

    def __init__(self, codes: np.ndarray, *, m: int, batch_size: int, rng: np.random.Generator) -> None:
        if m < 2:
            raise ValueError("m (samples per class) must be at least 2 so that anchors have positives")
        self.codes = np.asarray(codes)
        self.m = m
        self.rng = rng
        self.members = [np.nonzero(self.codes == c)[0] for c in np.unique(self.codes)]
        self.classes_per_batch = max(1, min(batch_size // m, len(self.members)))
        self.batch_size = self.classes_per_batch * m
        self.steps = max(1, -(-len(self.codes) // self.batch_size))

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[np.ndarray]:
        for _ in range(self.steps):
            chosen = self.rng.choice(len(self.members), self.classes_per_batch, replace=False)
            parts = []
            for c in chosen.tolist():
                members = self.members[c]
                parts.append(self.rng.choice(members, self.m, replace=len(members) < self.m))
            yield np.concatenate(parts)  # (B,) item indices, m consecutive per class


class ShuffleSampler:
    """Batches of ``batch_size`` indices over ``n`` rows in a fresh random order each epoch."""

    def __init__(self, n: int, *, batch_size: int, rng: np.random.Generator) -> None:
        self.n = n
        self.batch_size = batch_size
        self.rng = rng
        self.steps = max(1, -(-n // batch_size))

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[np.ndarray]:
        order = self.rng.permutation(self.n)
        for step in range(self.steps):
            yield order[step * self.batch_size : (step + 1) * self.batch_size]
