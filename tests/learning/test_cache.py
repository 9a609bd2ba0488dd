from __future__ import annotations

import hashlib
import multiprocessing
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from simapp.learning import EmbeddingCache, Encoder, TrainableEncoderError, content_hash


class CountingEncoder(Encoder):
    """A deterministic fake text encoder that records every item it computes (in a file, so that
    computations in other processes are counted too)."""

    name = "counting"
    distance = "cosine"
    dim = 8

    def __init__(self, log: Path, *, version: str = "v1", delay: float = 0.0) -> None:
        self.log = log
        self.version = version
        self.delay = delay
        self.is_trainable = False

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"counting-{self.version}".encode()).hexdigest()

    @property
    def trainable(self) -> bool:
        return self.is_trainable

    def encode(self, items: Sequence[Any], *, batch_size: int | None = None) -> np.ndarray:
        with self.log.open("a") as fh:
            fh.writelines(f"{item}\n" for item in items)
        time.sleep(self.delay * len(items))
        return np.stack([self.vector(str(item)) for item in items]).astype(np.float32)

    def vector(self, text: str) -> np.ndarray:
        seed = int(hashlib.sha256(f"{self.version}:{text}".encode()).hexdigest()[:8], 16)
        return np.random.default_rng(seed).normal(size=self.dim).astype(np.float32)

    def get_config_dict(self) -> dict[str, Any]:
        return {"name_or_path": "counting", "version": self.version}

    def computed(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


TEXTS = ["how do i reset my pin", "what is my balance", "book a table for two", "play some jazz"]


def _fill(root: Path, log: Path, texts: list[str], barrier: Any, out: Path) -> None:
    """Run in a child process: wait for the other filler, then fill the shared cache."""
    cache = EmbeddingCache(root, CountingEncoder(log, delay=0.005), chunk_size=16)
    barrier.wait()
    np.save(out, cache.get_or_compute([content_hash(t) for t in texts], texts))


def test_each_item_is_computed_once_across_two_runs(tmp_path: Path) -> None:
    encoder = CountingEncoder(tmp_path / "log")
    hashes = [content_hash(t) for t in TEXTS]

    first = EmbeddingCache(tmp_path / "cache", encoder).get_or_compute(hashes, TEXTS)
    # A new cache object on the same directory stands for a restarted process.
    restarted = EmbeddingCache(tmp_path / "cache", encoder)
    second = restarted.get_or_compute(hashes, TEXTS)

    assert encoder.computed() == TEXTS
    assert (restarted.last_stats.hits, restarted.last_stats.misses) == (4, 0)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(second, np.stack([encoder.vector(t) for t in TEXTS]))


def test_only_missing_items_are_computed_and_duplicates_once(tmp_path: Path) -> None:
    encoder = CountingEncoder(tmp_path / "log")
    cache = EmbeddingCache(tmp_path / "cache", encoder)
    cache.get_or_compute([content_hash(t) for t in TEXTS[:2]], TEXTS[:2])

    texts = [*TEXTS, TEXTS[3]]
    vectors = cache.get_or_compute([content_hash(t) for t in texts], texts)

    assert encoder.computed() == [*TEXTS[:2], *TEXTS[2:]]
    assert (cache.last_stats.hits, cache.last_stats.misses) == (2, 2)
    assert (cache.stats.hits, cache.stats.misses) == (2, 4)
    assert len(cache) == 4
    np.testing.assert_array_equal(vectors[4], vectors[3])


def test_changed_content_is_recomputed_never_served_stale(tmp_path: Path) -> None:
    encoder = CountingEncoder(tmp_path / "log")
    cache = EmbeddingCache(tmp_path / "cache", encoder)
    cache.get_or_compute([content_hash(t) for t in TEXTS], TEXTS)

    edited = [*TEXTS[:3], "play some loud jazz"]
    vectors = cache.get_or_compute([content_hash(t) for t in edited], edited)

    assert encoder.computed() == [*TEXTS, "play some loud jazz"]
    assert (cache.last_stats.hits, cache.last_stats.misses) == (3, 1)
    np.testing.assert_array_equal(vectors[3], encoder.vector("play some loud jazz"))


def test_changed_encoder_recomputes_everything(tmp_path: Path) -> None:
    hashes = [content_hash(t) for t in TEXTS]
    EmbeddingCache(tmp_path / "cache", CountingEncoder(tmp_path / "log1")).get_or_compute(hashes, TEXTS)
    new_encoder = CountingEncoder(tmp_path / "log2", version="v2")

    cache = EmbeddingCache(tmp_path / "cache", new_encoder)
    vectors = cache.get_or_compute(hashes, TEXTS)

    assert new_encoder.computed() == TEXTS
    assert (cache.last_stats.hits, cache.last_stats.misses) == (0, 4)
    np.testing.assert_array_equal(vectors, np.stack([new_encoder.vector(t) for t in TEXTS]))
    assert len(list((tmp_path / "cache").iterdir())) == 2  # one directory per encoder fingerprint


def test_trainable_encoder_is_refused(tmp_path: Path) -> None:
    encoder = CountingEncoder(tmp_path / "log")
    encoder.is_trainable = True

    with pytest.raises(TrainableEncoderError, match="trainable parameters"):
        EmbeddingCache(tmp_path / "cache", encoder)
    assert not (tmp_path / "cache").exists()


def test_encoder_made_trainable_later_is_refused_before_computing(tmp_path: Path) -> None:
    encoder = CountingEncoder(tmp_path / "log")
    cache = EmbeddingCache(tmp_path / "cache", encoder)
    encoder.is_trainable = True

    with pytest.raises(TrainableEncoderError):
        cache.get_or_compute([content_hash(TEXTS[0])], TEXTS[:1])
    assert encoder.computed() == []
    assert len(cache) == 0


def test_cache_is_memory_mapped_and_atomic_on_disk(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "cache", CountingEncoder(tmp_path / "log"))
    cache.get_or_compute([content_hash(t) for t in TEXTS], TEXTS)

    names = sorted(p.name for p in cache.directory.iterdir())

    shard = next(n for n in names if n.endswith(".keys.npy")).removesuffix(".keys.npy")
    assert names == [".lock", f"{shard}.keys.npy", f"{shard}.vec.npy", "encoder.json"]
    assert isinstance(cache._shards[0], np.memmap)


def test_another_writers_temporary_files_are_never_read(tmp_path: Path) -> None:
    encoder = CountingEncoder(tmp_path / "log")
    cache = EmbeddingCache(tmp_path / "cache", encoder)
    cache.get_or_compute([content_hash(t) for t in TEXTS], TEXTS)
    # What a writer that is mid-publish (or crashed) leaves behind: half-written, unreadable files.
    (cache.directory / ".tmp-0123-x.keys.npy").write_bytes(b"partial")
    (cache.directory / ".tmp-4567-x.keys.npy.part").write_bytes(b"partial")

    reader = EmbeddingCache(tmp_path / "cache", encoder)
    vectors = reader.get_or_compute([content_hash(t) for t in TEXTS], TEXTS)

    assert len(reader) == 4
    assert (reader.last_stats.hits, reader.last_stats.misses) == (4, 0)
    np.testing.assert_array_equal(vectors, np.stack([encoder.vector(t) for t in TEXTS]))


def test_missing_hash_in_get_raises_key_error(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "cache", CountingEncoder(tmp_path / "log"))

    with pytest.raises(KeyError, match=content_hash("nope")):
        cache.get([content_hash("nope")])


def test_two_processes_filling_at_once_compute_each_item_once(tmp_path: Path) -> None:
    texts_a = [f"query number {i}" for i in range(120)]
    texts_b = [f"query number {i}" for i in range(60, 180)]  # overlaps texts_a on 60..119
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [
        context.Process(
            target=_fill, args=(tmp_path / "cache", tmp_path / "log", texts, barrier, tmp_path / out)
        )
        for texts, out in [(texts_a, "a.npy"), (texts_b, "b.npy")]
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    result_a, result_b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")

    computed = CountingEncoder(tmp_path / "log").computed()
    assert sorted(computed) == sorted(f"query number {i}" for i in range(180))
    np.testing.assert_array_equal(result_a[60:], result_b[:60])
    reader = EmbeddingCache(tmp_path / "cache", CountingEncoder(tmp_path / "log"))
    assert len(reader) == 180


def test_content_hash_separates_kinds_and_content() -> None:
    assert content_hash("1") != content_hash([1.0])
    assert content_hash([1, 2]) == content_hash(np.array([1.0, 2.0]))
    assert content_hash("a") != content_hash("a ")
    assert content_hash("é") == hashlib.sha256("text\0é".encode()).hexdigest()
