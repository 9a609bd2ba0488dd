"""``VectorStore`` on Qdrant Edge: the Qdrant engine in-process, no server (the default without QDRANT_URL).

Layout under ``root`` (``<SIMAPP_DATA_DIR>/qdrant``)::

    .lock                       flock held by the one process that owns the store
    aliases.json                {"aliases": {alias: collection}}, replaced atomically on each switch
    collections/<name>/shard/   one Edge shard per collection (model version)
    collections/<name>/collection.json   dim, distance, indexed fields; written last, so a directory
                                without it is a half-created collection and is removed on open
    trash/                      dropped collections are renamed here, then deleted

Aliases live in memory under the store's lock and every change is persisted atomically; no other
process can change the file behind our back because the flock makes this process the only writer.

Concurrency: any number of threads may read and write at once (the engine locks its segments). Every
call resolves the alias and pins the collection under one lock, so a query runs entirely on the old or
entirely on the new collection during a switch; ``drop`` waits for the calls pinned on that collection
to finish before closing its shard, so pruning never pulls a shard from under a running query.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import threading
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import qdrant_edge as qe
from numpy.typing import NDArray

from simapp.vectors._common import (
    as_matrix,
    as_vector,
    check_id,
    check_indexed_fields,
    check_limit,
    check_name,
    merge_excluded,
    prepare_batches,
    prepare_recommend,
    read_payload,
)
from simapp.vectors.errors import CollectionNotFound, StoreLocked, VectorStoreError, VectorStoreUnavailable
from simapp.vectors.protocol import DEFAULT_BATCH_SIZE
from simapp.vectors.types import (
    CollectionInfo,
    Distance,
    FieldType,
    Filter,
    Hit,
    IndexParams,
    Point,
    RecommendStrategy,
    Vector,
    check_distance,
)

_DISTANCE_TO_EDGE: dict[Distance, qe.Distance] = {"cosine": qe.Distance.Cosine, "euclid": qe.Distance.Euclid}

_FIELD_SCHEMA: dict[FieldType, qe.PayloadSchemaType] = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "integer": qe.PayloadSchemaType.Integer,
    "float": qe.PayloadSchemaType.Float,
    "bool": qe.PayloadSchemaType.Bool,
}

_META = "collection.json"
_ALIASES = "aliases.json"


def to_edge_filter(flt: Filter | None, exclude_ids: Sequence[int] = ()) -> qe.Filter | None:
    must: list[Any] = []
    must_not: list[Any] = [qe.HasIdCondition(set(exclude_ids))] if exclude_ids else []
    if flt is not None:
        if flt.label is not None:
            must.append(qe.FieldCondition("label", match=qe.MatchValue(flt.label)))
        if flt.labelled is not None:  # no label is stored as null
            (must_not if flt.labelled else must).append(qe.IsNullCondition("label"))
        for name, value in flt.metadata.items():
            must.append(qe.FieldCondition(f"metadata.{name}", match=qe.MatchValue(value)))
        for name, r in flt.ranges.items():
            must.append(
                qe.FieldCondition(
                    f"metadata.{name}", range=qe.RangeFloat(gte=r.gte, gt=r.gt, lte=r.lte, lt=r.lt)
                )
            )
    if not must and not must_not:
        return None
    return qe.Filter(must=must or None, must_not=must_not or None)


@dataclass(frozen=True, slots=True)
class _Meta:
    dim: int
    distance: Distance
    indexed_fields: dict[str, FieldType] = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class _Handle:
    name: str
    shard: qe.EdgeShard
    meta: _Meta
    users: int = 0  # calls currently pinned on this collection


@contextlib.contextmanager
def _engine(doing: str) -> Iterator[None]:
    """The engine raises bare ``Exception``; give it our type and say what we were doing."""
    try:
        yield
    except (VectorStoreError, ValueError):
        raise
    except Exception as exc:
        raise VectorStoreError(f"embedded Qdrant failed while {doing}: {exc}") from exc


def _write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temp file, fsync, rename over ``path``, fsync the directory: readers (and a crash)
    see either the old or the new content, never a torn file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _lock_root(root: Path) -> IO[str]:
    lock_file = open(root / ".lock", "a+", encoding="utf-8")  # noqa: SIM115 - held for the store's life
    try:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.seek(0)
        holder = lock_file.read().strip() or "unknown"
        lock_file.close()
        raise StoreLocked(
            f"the embedded vector store at {root} is already open (held by pid {holder}). Only one process "
            "may open it: index jobs run in the web process, or set QDRANT_URL to share a Qdrant server."
        ) from None
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(f"{os.getpid()}\n")
    lock_file.flush()
    return lock_file


class EdgeStore:
    """Embedded backend: one Edge shard per collection under ``root``; one process per ``root``."""

    def __init__(self, root: Path, *, index: IndexParams | None = None) -> None:
        self._root = Path(root)
        self._root.mkdir(parents=True, exist_ok=True)
        self._lock_file: IO[str] | None = _lock_root(self._root)
        self._index = index or IndexParams()
        self._collections_dir = self._root / "collections"
        self._trash_dir = self._root / "trash"
        self._collections_dir.mkdir(exist_ok=True)
        self._trash_dir.mkdir(exist_ok=True)
        # One condition guards the alias map, the open handles and their pin counts.
        self._cond = threading.Condition(threading.RLock())
        self._handles: dict[str, _Handle] = {}
        self._dropping: set[str] = set()
        self._aliases: dict[str, str] = self._read_aliases()
        self._remove_leftovers()

    # -- bookkeeping -------------------------------------------------------------------------------------

    def _read_aliases(self) -> dict[str, str]:
        path = self._root / _ALIASES
        if not path.exists():
            return {}
        return dict(json.loads(path.read_text(encoding="utf-8"))["aliases"])

    def _save_aliases(self, aliases: dict[str, str]) -> None:
        _write_json_atomic(self._root / _ALIASES, {"aliases": aliases})
        self._aliases = aliases

    def _remove_leftovers(self) -> None:
        """Finish drops and creations that a crash interrupted."""
        for entry in self._trash_dir.iterdir():
            shutil.rmtree(entry, ignore_errors=True)
        for entry in self._collections_dir.iterdir():
            if entry.is_dir() and not (entry / _META).exists():
                shutil.rmtree(entry, ignore_errors=True)

    def _check_open(self) -> None:
        if self._lock_file is None:
            raise VectorStoreUnavailable(f"the embedded vector store at {self._root} is closed")

    def _exists(self, name: str) -> bool:
        return name not in self._dropping and (self._collections_dir / name / _META).exists()

    def _load(self, name: str) -> _Handle:
        """Open a collection's shard on first use (caller holds the lock)."""
        handle = self._handles.get(name)
        if handle is not None:
            return handle
        if not self._exists(name):
            raise CollectionNotFound(f"no collection or alias {name!r}")
        path = self._collections_dir / name
        raw = json.loads((path / _META).read_text(encoding="utf-8"))
        meta = _Meta(dim=raw["dim"], distance=raw["distance"], indexed_fields=raw["indexed_fields"])
        with _engine(f"opening collection {name!r}"):
            shard = qe.EdgeShard.load(str(path / "shard"))
        handle = self._handles[name] = _Handle(name, shard, meta)
        return handle

    @contextlib.contextmanager
    def _pinned(self, name_or_alias: str) -> Iterator[_Handle]:
        with self._cond:
            self._check_open()
            handle = self._load(self._aliases.get(name_or_alias, name_or_alias))
            handle.users += 1
        try:
            yield handle
        finally:
            with self._cond:
                handle.users -= 1
                if handle.users == 0:
                    self._cond.notify_all()

    def _edge_config(self, dim: int, distance: Distance) -> qe.EdgeConfig:
        p = self._index
        return qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dim, distance=_DISTANCE_TO_EDGE[distance]),
            hnsw_config=qe.HnswIndexConfig(
                m=p.m,
                ef_construct=p.ef_construct,
                full_scan_threshold=p.full_scan_threshold_kb,
                payload_m=p.payload_m,
            ),
            quantization_config=(
                qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=0.99, memory=qe.Memory.Pinned)
                if p.quantization
                else None
            ),
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=p.indexing_threshold_kb),
        )

    def _search_params(self, filtered: bool) -> qe.SearchParams:
        p = self._index
        return qe.SearchParams(
            hnsw_ef=p.hnsw_ef,
            quantization=qe.QuantizationSearchParams(rescore=True, oversampling=p.oversampling),
            acorn=qe.AcornSearchParams(enable=True) if filtered and p.acorn else None,
        )

    # -- collections -------------------------------------------------------------------------------------

    def create_collection(
        self,
        name: str,
        *,
        dim: int,
        distance: Distance,
        indexed_fields: Mapping[str, FieldType] | None = None,
    ) -> None:
        check_name(name)
        check_distance(distance)
        fields = check_indexed_fields(indexed_fields)
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 65_536:
            raise ValueError(f"dim must be an integer in [1, 65536], got {dim!r}")
        with self._cond:
            self._check_open()
            if name in self._aliases or self._exists(name) or name in self._dropping:
                raise ValueError(f"collection or alias {name!r} already exists")
            path = self._collections_dir / name
            shutil.rmtree(path, ignore_errors=True)  # a half-created leftover of the same name
            shard: qe.EdgeShard | None = None
            try:
                with _engine(f"creating collection {name!r}"):
                    shard = qe.EdgeShard.create(str(path / "shard"), self._edge_config(dim, distance))
                    shard.update(qe.UpdateOperation.create_field_index("label", qe.PayloadSchemaType.Keyword))
                    for field_name, kind in fields.items():
                        shard.update(
                            qe.UpdateOperation.create_field_index(
                                f"metadata.{field_name}", _FIELD_SCHEMA[kind]
                            )
                        )
                    shard.flush()
                _write_json_atomic(
                    path / _META, {"format": 1, "dim": dim, "distance": distance, "indexed_fields": fields}
                )
            except BaseException:
                if shard is not None:
                    with contextlib.suppress(Exception):
                        shard.close()
                shutil.rmtree(path, ignore_errors=True)
                raise
            self._handles[name] = _Handle(name, shard, _Meta(dim, distance, fields))

    def info(self, name_or_alias: str) -> CollectionInfo:
        with self._pinned(name_or_alias) as h:
            with _engine("counting points"):
                points = h.shard.count(qe.CountRequest(exact=True))
            return CollectionInfo(name=h.name, dim=h.meta.dim, distance=h.meta.distance, points=points)

    def list_collections(self) -> list[str]:
        with self._cond:
            self._check_open()
            return sorted(p.name for p in self._collections_dir.iterdir() if self._exists(p.name))

    def drop(self, name: str) -> None:
        check_name(name)
        with self._cond:
            self._check_open()
            if name in self._aliases:
                raise ValueError(f"{name!r} is an alias; drop the collection it points at by its own name")
            path = self._collections_dir / name
            if not path.exists() or name in self._dropping:
                return
            self._dropping.add(name)
            try:
                # Like the server: aliases pointing at a dropped collection go with it.
                remaining = {a: c for a, c in self._aliases.items() if c != name}
                if remaining != self._aliases:
                    self._save_aliases(remaining)
                handle = self._handles.get(name)
                if handle is not None:
                    while handle.users:
                        self._cond.wait()
                    del self._handles[name]
                    with contextlib.suppress(Exception):
                        handle.shard.close()
                trash = self._trash_dir / f"{name}-{uuid.uuid4().hex}"
                os.replace(path, trash)
            finally:
                self._dropping.discard(name)
        shutil.rmtree(trash, ignore_errors=True)

    def optimize(self, name_or_alias: str) -> None:
        with self._pinned(name_or_alias) as h, _engine(f"optimizing {h.name!r}"):
            h.shard.optimize()
            h.shard.flush()

    # -- aliases -----------------------------------------------------------------------------------------

    def get_alias(self, alias: str) -> str | None:
        with self._cond:
            self._check_open()
            return self._aliases.get(alias)

    def set_alias(self, alias: str, collection: str) -> None:
        check_name(alias, "alias")
        check_name(collection)
        with self._cond:
            self._check_open()
            if not self._exists(collection):
                raise CollectionNotFound(f"cannot point alias {alias!r} at missing collection {collection!r}")
            if self._exists(alias):
                raise ValueError(f"{alias!r} is a collection name and cannot be used as an alias")
            # Readers resolve under this lock, so they see the old or the new target, never neither.
            self._save_aliases({**self._aliases, alias: collection})

    # -- points ------------------------------------------------------------------------------------------

    def upsert(
        self, name_or_alias: str, points: Sequence[Point], *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> None:
        with self._pinned(name_or_alias) as h:
            batches = prepare_batches(points, h.meta.dim, batch_size)
            for batch in batches:
                # One tolist() per batch: the engine converts Python floats about 3x faster than it
                # converts NumPy rows element by element (measured in bench/indexing.py).
                edge_points = [
                    qe.Point(pid, vector, dict(payload))
                    for pid, vector, payload in zip(
                        batch.ids, batch.vectors.tolist(), batch.payloads, strict=True
                    )
                ]
                with _engine(f"upserting into {h.name!r}"):
                    h.shard.update(qe.UpdateOperation.upsert_points(edge_points))

    def delete(self, name_or_alias: str, ids: Sequence[int]) -> None:
        point_ids = [check_id(i) for i in ids]
        if not point_ids:
            return
        with self._pinned(name_or_alias) as h, _engine(f"deleting from {h.name!r}"):
            h.shard.update(qe.UpdateOperation.delete_points(point_ids))

    def count(self, name_or_alias: str) -> int:
        with self._pinned(name_or_alias) as h, _engine(f"counting {h.name!r}"):
            return int(h.shard.count(qe.CountRequest(exact=True)))

    def get_vectors(self, name_or_alias: str, ids: Sequence[int]) -> dict[int, NDArray[np.float32]]:
        point_ids = [check_id(i) for i in ids]
        if not point_ids:
            return {}
        with self._pinned(name_or_alias) as h:
            return self._get_vectors(h, point_ids)

    @staticmethod
    def _get_vectors(h: _Handle, point_ids: Sequence[int]) -> dict[int, NDArray[np.float32]]:
        with _engine(f"retrieving from {h.name!r}"):
            records = h.shard.retrieve(list(point_ids), with_payload=False, with_vector=True)
        return {int(r.id): np.asarray(r.vector, dtype=np.float32) for r in records}

    # -- search ------------------------------------------------------------------------------------------

    def _request(self, query: Any, limit: int, flt: qe.Filter | None) -> qe.QueryRequest:
        return qe.QueryRequest(
            limit=limit,
            query=query,
            filter=flt,
            params=self._search_params(flt is not None),
            with_payload=True,
        )

    def nearest(
        self,
        name_or_alias: str,
        vector: Vector,
        *,
        limit: int = 10,
        filter: Filter | None = None,
        exclude_ids: Collection[int] = (),
    ) -> list[Hit]:
        check_limit(limit)
        flt = to_edge_filter(filter, merge_excluded(exclude_ids))
        with self._pinned(name_or_alias) as h:
            query = qe.Query.Nearest(as_vector(vector, h.meta.dim))
            with _engine(f"searching {h.name!r}"):
                return [_hit(p) for p in h.shard.query(self._request(query, limit, flt))]

    def nearest_batch(
        self,
        name_or_alias: str,
        vectors: Sequence[Vector] | NDArray[np.floating],
        *,
        limit: int = 10,
        filter: Filter | None = None,
        exclude_ids: Collection[int] = (),
    ) -> list[list[Hit]]:
        check_limit(limit)
        flt = to_edge_filter(filter, merge_excluded(exclude_ids))
        with self._pinned(name_or_alias) as h:
            matrix = as_matrix(vectors, h.meta.dim)
            if len(matrix) == 0:
                return []
            batch = qe.QueryBatchRequest([self._request(qe.Query.Nearest(row), limit, flt) for row in matrix])
            with _engine(f"searching {h.name!r}"):
                return [[_hit(p) for p in result] for result in h.shard.query_batch(batch)]

    def recommend(
        self,
        name_or_alias: str,
        *,
        positive: Sequence[int | Vector],
        negative: Sequence[int | Vector] = (),
        strategy: RecommendStrategy = "average_vector",
        limit: int = 10,
        filter: Filter | None = None,
        exclude_ids: Collection[int] = (),
    ) -> list[Hit]:
        check_limit(limit)
        # Examples and search run on one pinned collection, so an alias switch in between cannot mix
        # vectors of two model versions.
        with self._pinned(name_or_alias) as h:
            prepared = prepare_recommend(
                positive,
                negative,
                strategy,
                dim=h.meta.dim,
                distance=h.meta.distance,
                lookup=lambda ids: self._get_vectors(h, ids),
            )
            flt = to_edge_filter(filter, merge_excluded(exclude_ids, prepared.example_ids))
            if strategy == "average_vector":
                query = qe.Query.Nearest(prepared.average_vector())
            else:
                query = qe.Query.RecommendBestScore(
                    qe.RecommendQuery(list(prepared.positive), list(prepared.negative))
                )
            with _engine(f"recommending from {h.name!r}"):
                return [_hit(p) for p in h.shard.query(self._request(query, limit, flt))]

    def close(self) -> None:
        with self._cond:
            if self._lock_file is None:
                return
            while any(h.users for h in self._handles.values()):
                self._cond.wait()
            for handle in self._handles.values():
                with contextlib.suppress(Exception):
                    handle.shard.close()
            self._handles.clear()
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> EdgeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _hit(point: Any) -> Hit:
    return Hit(id=int(point.id), score=float(point.score), payload=read_payload(point.payload))
