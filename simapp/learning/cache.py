"""Persistent embedding cache keyed by (encoder fingerprint, content hash).

Layout on disk, one directory per encoder fingerprint::

    <root>/<fingerprint>/encoder.json                 what produced these vectors (for people)
    <root>/<fingerprint>/.lock                        fcntl lock taken while filling
    <root>/<fingerprint>/<shard>.vec.npy              (n, D) float32, memory-mapped for reading
    <root>/<fingerprint>/<shard>.keys.npy             (n,) content hashes (hex), row i <-> vector row i

Shards are immutable and published by atomic renames (vectors first, keys last), so a reader only sees
complete shards; a process that crashes mid-write leaves a ``.tmp-*.part`` file that nobody reads. Filling
takes an exclusive ``flock`` per chunk and re-checks what is missing under the lock, so two processes
filling the same cache at once compute every item exactly once between them. The key is a hash of the
content, so changed content is a new key and a stale vector can never be returned for it; a changed
encoder is a new fingerprint, i.e. a new directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simapp.learning.encoders import Encoder

_HASH_DTYPE = np.dtype("S64")  # hex sha256; hex never contains NUL, which numpy 'S' would strip


class TrainableEncoderError(ValueError):
    """Raised when a trainable encoder is given to the cache: its outputs change as it trains."""


def content_hash(content: str | bytes | Sequence[float] | np.ndarray) -> str:
    """sha256 hex digest of an item's content: text (UTF-8) or a numeric vector (as float64).

    The kind is part of the hash, so the text ``"1"`` and the vector ``[1.0]`` never collide.
    """
    digest = hashlib.sha256()
    if isinstance(content, str):
        digest.update(b"text\0")
        digest.update(content.encode("utf-8"))
    elif isinstance(content, bytes):
        digest.update(b"bytes\0")
        digest.update(content)
    else:
        digest.update(b"vector\0")
        digest.update(np.ascontiguousarray(content, dtype=np.float64).tobytes())
    return digest.hexdigest()


@dataclass
class CacheStats:
    """Counts of unique requested items: ``hits`` were on disk, ``misses`` were computed now."""

    hits: int = 0
    misses: int = 0

    @property
    def requested(self) -> int:
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        return self.hits / self.requested if self.requested else 0.0

    def __iadd__(self, other: CacheStats) -> CacheStats:
        self.hits += other.hits
        self.misses += other.misses
        return self


class EmbeddingCache:
    """Encoder outputs on disk, computed once per (encoder fingerprint, content hash).

    ``get_or_compute(hashes, items)`` returns the vectors of ``items`` (N, D) in order, running the
    encoder only on the items whose hash is not on disk yet, in chunks of ``chunk_size``.
    ``last_stats`` describes the latest call; ``stats`` accumulates over this object's life.
    """

    def __init__(self, root: str | Path, encoder: Encoder, *, chunk_size: int = 4096) -> None:
        self._check_frozen(encoder)
        self.encoder = encoder
        self.dim = encoder.dim
        self.chunk_size = chunk_size
        self.directory = Path(root) / encoder.fingerprint
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.directory / ".lock"
        self._lock_path.touch(exist_ok=True)
        meta = self.directory / "encoder.json"
        if not meta.exists():
            self._atomic_write_bytes(meta, json.dumps(self._encoder_meta(), indent=2).encode())
        self._shards: list[np.ndarray] = []  # memory-mapped (n_s, D) float32
        self._shard_names: set[str] = set()
        self._index: dict[str, tuple[int, int]] = {}  # content hash -> (shard, row)
        self.stats = CacheStats()
        self.last_stats = CacheStats()
        self._refresh()

    @staticmethod
    def _check_frozen(encoder: Encoder) -> None:
        if encoder.trainable:
            raise TrainableEncoderError(
                f"Encoder {encoder.name!r} has trainable parameters; its outputs change while it trains, "
                "so they must not be cached. Freeze it (requires_grad_(False)) or do not use the cache."
            )

    def _encoder_meta(self) -> dict[str, Any]:
        config = self.encoder.get_config_dict()
        config.pop("mean", None)
        config.pop("std", None)
        return {"fingerprint": self.encoder.fingerprint, "dim": self.dim, "encoder": config}

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock_path.open("a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _refresh(self) -> None:
        """Map shards published (by any process) since the last refresh."""
        for keys_path in sorted(self.directory.glob("*.keys.npy")):
            shard = keys_path.name[: -len(".keys.npy")]
            # pathlib's glob also matches dot-files: never read another writer's temporary file.
            if shard.startswith(".") or shard in self._shard_names:
                continue
            keys = np.load(keys_path)
            vectors = np.load(self.directory / f"{shard}.vec.npy", mmap_mode="r")  # (n, D)
            if vectors.shape != (len(keys), self.dim):
                raise ValueError(f"Corrupt cache shard {shard}: {vectors.shape} for {len(keys)} keys")
            shard_id = len(self._shards)
            self._shards.append(vectors)
            self._shard_names.add(shard)
            for row, key in enumerate(keys.tolist()):
                # setdefault: the first published copy wins, so answers never change under a reader.
                self._index.setdefault(key.decode("ascii"), (shard_id, row))

    def _atomic_write_bytes(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}.part")
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def _atomic_save(self, path: Path, array: np.ndarray) -> None:
        tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}.part")
        with tmp.open("wb") as fh:
            np.save(fh, array)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def _publish(self, keys: list[str], vectors: np.ndarray) -> None:
        shard = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Vectors first, keys last: a shard is visible only once its keys file exists.
        self._atomic_save(self.directory / f"{shard}.vec.npy", vectors)
        self._atomic_save(self.directory / f"{shard}.keys.npy", np.asarray(keys, dtype=_HASH_DTYPE))

    def get_or_compute(
        self, hashes: Sequence[str], items: Sequence[Any], *, batch_size: int | None = None
    ) -> np.ndarray:
        """Vectors of ``items`` (N, D) float32, in order; encodes only those whose hash is not cached.

        ``hashes[i]`` must be ``content_hash(items[i])`` (or another content-derived key). Duplicate
        hashes are computed once. Raises :class:`TrainableEncoderError` for a trainable encoder.
        """
        if len(hashes) != len(items):
            raise ValueError(f"{len(hashes)} hashes for {len(items)} items")
        self._check_frozen(self.encoder)
        self._refresh()
        first_index: dict[str, int] = {}
        for i, key in enumerate(hashes):
            first_index.setdefault(key, i)
        missing = [key for key in first_index if key not in self._index]
        computed = 0
        for start in range(0, len(missing), self.chunk_size):
            chunk = missing[start : start + self.chunk_size]
            with self._locked():
                # Another process may have filled some of these while we waited for the lock.
                self._refresh()
                todo = [key for key in chunk if key not in self._index]
                if todo:
                    vectors = self.encoder.encode(
                        [items[first_index[k]] for k in todo], batch_size=batch_size
                    )
                    if vectors.shape != (len(todo), self.dim):
                        raise ValueError(
                            f"Encoder returned {vectors.shape}, expected ({len(todo)}, {self.dim})"
                        )
                    self._publish(todo, np.ascontiguousarray(vectors, dtype=np.float32))
                    computed += len(todo)
                    self._refresh()
        self.last_stats = CacheStats(hits=len(first_index) - computed, misses=computed)
        self.stats += self.last_stats
        return self.get(hashes)

    def get(self, hashes: Sequence[str]) -> np.ndarray:
        """Cached vectors (N, D) for ``hashes``; raises ``KeyError`` naming the first missing hash."""
        out = np.empty((len(hashes), self.dim), dtype=np.float32)
        locations = np.empty((len(hashes), 2), dtype=np.int64)  # (N, 2): shard, row
        for i, key in enumerate(hashes):
            try:
                locations[i] = self._index[key]
            except KeyError:
                raise KeyError(f"{key} is not in the embedding cache") from None
        # Gather shard by shard with fancy indexing: one vectorised read per shard.
        for shard_id in np.unique(locations[:, 0]).tolist():
            sel = np.nonzero(locations[:, 0] == shard_id)[0]
            out[sel] = self._shards[shard_id][locations[sel, 1]]
        return out
