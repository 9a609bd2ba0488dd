"""``VectorStore`` over a Qdrant server through ``qdrant-client`` (REST; errors are mapped for REST only).

Tests run the same code against ``QdrantClient(":memory:")``, the client's local mode: brute force, no
payload indexes, but the same API and scores, so the contract suite covers this backend without a
server. Collections are created with indexing disabled (``indexing_threshold=0``, Qdrant's advice for
bulk loads) and ``optimize`` turns it on and waits until the collection is green.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np
from numpy.typing import NDArray
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from simapp.vectors._common import (
    as_matrix,
    check_id,
    check_indexed_fields,
    check_limit,
    check_name,
    merge_excluded,
    prepare_batches,
    prepare_recommend,
    read_payload,
)
from simapp.vectors.errors import CollectionNotFound, VectorStoreError, VectorStoreUnavailable
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

_DISTANCE_TO_QDRANT: dict[Distance, models.Distance] = {
    "cosine": models.Distance.COSINE,
    "euclid": models.Distance.EUCLID,
}
_DISTANCE_FROM_QDRANT = {v: k for k, v in _DISTANCE_TO_QDRANT.items()}

_FIELD_SCHEMA: dict[FieldType, models.PayloadSchemaType] = {
    "keyword": models.PayloadSchemaType.KEYWORD,
    "integer": models.PayloadSchemaType.INTEGER,
    "float": models.PayloadSchemaType.FLOAT,
    "bool": models.PayloadSchemaType.BOOL,
}


def to_qdrant_filter(flt: Filter | None, exclude_ids: Sequence[int] = ()) -> models.Filter | None:
    must: list[models.Condition] = []
    must_not: list[models.Condition] = (
        [models.HasIdCondition(has_id=list(exclude_ids))] if exclude_ids else []
    )
    if flt is not None:
        if flt.label is not None:
            must.append(models.FieldCondition(key="label", match=models.MatchValue(value=flt.label)))
        if flt.labelled is not None:  # no label is stored as null
            no_label = models.IsNullCondition(is_null=models.PayloadField(key="label"))
            (must_not if flt.labelled else must).append(no_label)
        for name, value in flt.metadata.items():
            must.append(models.FieldCondition(key=f"metadata.{name}", match=models.MatchValue(value=value)))
        for name, r in flt.ranges.items():
            must.append(
                models.FieldCondition(
                    key=f"metadata.{name}", range=models.Range(gte=r.gte, gt=r.gt, lte=r.lte, lt=r.lt)
                )
            )
    if not must and not must_not:
        return None
    return models.Filter(must=must or None, must_not=must_not or None)


class QdrantServerStore:
    """Qdrant server backend. Pass ``url``/``api_key``, or an existing ``client`` (tests: ``:memory:``)."""

    def __init__(
        self,
        *,
        url: str | None = None,
        api_key: str | None = None,
        client: QdrantClient | None = None,
        index: IndexParams | None = None,
        timeout_s: int = 30,
        optimize_timeout_s: float = 3600.0,
    ) -> None:
        if (client is None) == (url is None):
            raise ValueError("pass exactly one of url or client")
        if client is None:
            # No compatibility check: it is a request at construction time, and a server that is down
            # must show up as VectorStoreUnavailable on first use (a 503), not as a start-up crash.
            client = QdrantClient(url=url, api_key=api_key, timeout=timeout_s, check_compatibility=False)
        self._client = client
        self._where = url or "the injected client"
        self._index = index or IndexParams()
        self._optimize_timeout_s = optimize_timeout_s

    # -- errors ------------------------------------------------------------------------------------------

    @contextmanager
    def _errors(self, doing: str, name: str | None = None) -> Iterator[None]:
        """Translate client exceptions into ours, so callers only ever catch ``simapp.vectors.errors``."""
        try:
            yield
        except (VectorStoreError, ValueError) as exc:
            # Local mode reports a missing collection as ValueError("Collection x not found").
            if isinstance(exc, ValueError) and name is not None and "not found" in str(exc):
                raise CollectionNotFound(f"no collection or alias {name!r}") from exc
            raise
        except ResponseHandlingException as exc:
            raise VectorStoreUnavailable(
                f"Qdrant at {self._where} is unreachable ({doing}): {exc.source!r}; check QDRANT_URL and "
                "that the server is running"
            ) from exc
        except UnexpectedResponse as exc:
            status = exc.status_code
            detail = exc.content.decode("utf-8", "replace")[:500]
            if status == 404:
                raise CollectionNotFound(f"no collection or alias {name!r} ({doing}): {detail}") from exc
            if status in (401, 403):
                raise VectorStoreUnavailable(
                    f"Qdrant at {self._where} refused the request ({status}); check QDRANT_API_KEY"
                ) from exc
            if status is None or status >= 500 or status == 429:
                raise VectorStoreUnavailable(
                    f"Qdrant at {self._where} failed ({status}, {doing}): {detail}"
                ) from exc
            if status in (400, 409, 422):
                raise ValueError(f"Qdrant rejected the request ({doing}): {detail}") from exc
            raise VectorStoreError(f"Qdrant answered {status} ({doing}): {detail}") from exc
        except RuntimeError as exc:
            # Local mode after close(); a closed store is unusable like an unreachable one.
            raise VectorStoreUnavailable(f"vector store is closed ({doing}): {exc}") from exc

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
        if name in self.list_collections() or self._aliases().get(name) is not None:
            raise ValueError(f"collection or alias {name!r} already exists")
        p = self._index
        with self._errors("creating a collection", name):
            self._client.create_collection(
                collection_name=name,
                vectors_config=models.VectorParams(size=dim, distance=_DISTANCE_TO_QDRANT[distance]),
                hnsw_config=models.HnswConfigDiff(
                    m=p.m,
                    ef_construct=p.ef_construct,
                    full_scan_threshold=p.full_scan_threshold_kb,
                    payload_m=p.payload_m,
                ),
                quantization_config=(
                    models.ScalarQuantization(
                        scalar=models.ScalarQuantizationConfig(
                            type=models.ScalarType.INT8, quantile=0.99, always_ram=True
                        )
                    )
                    if p.quantization
                    else None
                ),
                # Bulk-load mode: no HNSW building while points stream in; optimize() switches it on.
                optimizers_config=models.OptimizersConfigDiff(indexing_threshold=0),
            )
        try:
            with self._errors("creating payload indexes", name):
                self._client.create_payload_index(name, "label", models.PayloadSchemaType.KEYWORD, wait=True)
                for field_name, kind in fields.items():
                    self._client.create_payload_index(
                        name, f"metadata.{field_name}", _FIELD_SCHEMA[kind], wait=True
                    )
        except BaseException:
            # A collection without its indexes would silently make filtered search slow: all or nothing.
            # If the server went away meanwhile the drop fails too; the original error is the one to see.
            with suppress(Exception):
                self.drop(name)
            raise

    def _shape(self, name_or_alias: str) -> tuple[int, Distance]:
        """(dim, distance) in one request; fixed for a collection's life."""
        with self._errors("reading collection info", name_or_alias):
            described = self._client.get_collection(name_or_alias)
        params = described.config.params.vectors
        if not isinstance(params, models.VectorParams) or params.distance not in _DISTANCE_FROM_QDRANT:
            raise VectorStoreError(
                f"collection {name_or_alias!r} was not created by simapp (vectors: {params})"
            )
        return params.size, _DISTANCE_FROM_QDRANT[params.distance]

    def info(self, name_or_alias: str) -> CollectionInfo:
        dim, distance = self._shape(name_or_alias)
        return CollectionInfo(
            name=self._resolve(name_or_alias), dim=dim, distance=distance, points=self.count(name_or_alias)
        )

    def list_collections(self) -> list[str]:
        with self._errors("listing collections"):
            return sorted(c.name for c in self._client.get_collections().collections)

    def drop(self, name: str) -> None:
        check_name(name)
        if name in self._aliases():
            raise ValueError(f"{name!r} is an alias; drop the collection it points at by its own name")
        with self._errors("dropping a collection", name):
            # The server also removes aliases that point at the dropped collection.
            self._client.delete_collection(name)

    def optimize(self, name_or_alias: str) -> None:
        with self._errors("optimizing", name_or_alias):
            self._client.update_collection(
                name_or_alias,
                optimizers_config=models.OptimizersConfigDiff(
                    indexing_threshold=self._index.indexing_threshold_kb
                ),
            )
            deadline = time.monotonic() + self._optimize_timeout_s
            nudged = False
            while True:
                status = self._client.get_collection(name_or_alias).status
                if status == models.CollectionStatus.GREEN:
                    return
                if status == models.CollectionStatus.RED:
                    raise VectorStoreError(f"Qdrant reports collection {name_or_alias!r} as failed (red)")
                if status == models.CollectionStatus.GREY and not nudged:
                    # Grey: optimisations are pending but not triggered; an empty update triggers them.
                    self._client.update_collection(
                        name_or_alias, optimizers_config=models.OptimizersConfigDiff()
                    )
                    nudged = True
                if time.monotonic() > deadline:
                    raise VectorStoreError(
                        f"collection {name_or_alias!r} still {status} after {self._optimize_timeout_s:.0f} s"
                    )
                time.sleep(0.5)

    # -- aliases -----------------------------------------------------------------------------------------

    def _aliases(self) -> dict[str, str]:
        with self._errors("reading aliases"):
            return {a.alias_name: a.collection_name for a in self._client.get_aliases().aliases}

    def _resolve(self, name_or_alias: str) -> str:
        return self._aliases().get(name_or_alias, name_or_alias)

    def get_alias(self, alias: str) -> str | None:
        return self._aliases().get(alias)

    def set_alias(self, alias: str, collection: str) -> None:
        check_name(alias, "alias")
        check_name(collection)
        if collection not in self.list_collections():
            raise CollectionNotFound(f"cannot point alias {alias!r} at missing collection {collection!r}")
        operations: list[models.AliasOperations] = []
        if alias in self._aliases():
            operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        operations.append(
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=collection, alias_name=alias)
            )
        )
        with self._errors("switching an alias", collection):
            # One request: the server applies delete + create together, so readers never see no alias.
            self._client.update_collection_aliases(change_aliases_operations=operations)

    # -- points ------------------------------------------------------------------------------------------

    def upsert(
        self, name_or_alias: str, points: Sequence[Point], *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> None:
        dim, _ = self._shape(name_or_alias)
        for batch in prepare_batches(points, dim, batch_size):
            with self._errors("upserting points", name_or_alias):
                self._client.upsert(
                    name_or_alias,
                    points=models.Batch(
                        ids=batch.ids,
                        vectors=batch.vectors.tolist(),
                        payloads=[dict(p) for p in batch.payloads],
                    ),
                    wait=True,
                )

    def delete(self, name_or_alias: str, ids: Sequence[int]) -> None:
        point_ids = [check_id(i) for i in ids]
        if not point_ids:
            return
        with self._errors("deleting points", name_or_alias):
            self._client.delete(
                name_or_alias, points_selector=models.PointIdsList(points=point_ids), wait=True
            )

    def count(self, name_or_alias: str) -> int:
        with self._errors("counting points", name_or_alias):
            return int(self._client.count(name_or_alias, exact=True).count)

    def get_vectors(self, name_or_alias: str, ids: Sequence[int]) -> dict[int, NDArray[np.float32]]:
        point_ids = [check_id(i) for i in ids]
        if not point_ids:
            return {}
        with self._errors("retrieving vectors", name_or_alias):
            records = self._client.retrieve(name_or_alias, point_ids, with_payload=False, with_vectors=True)
        return {int(r.id): np.asarray(r.vector, dtype=np.float32) for r in records}

    # -- search ------------------------------------------------------------------------------------------

    def _search_params(self, filtered: bool) -> models.SearchParams:
        p = self._index
        return models.SearchParams(
            hnsw_ef=p.hnsw_ef,
            quantization=models.QuantizationSearchParams(rescore=True, oversampling=p.oversampling),
            acorn=models.AcornSearchParams(enable=True) if filtered and p.acorn else None,
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
        return self.nearest_batch(
            name_or_alias, [vector], limit=limit, filter=filter, exclude_ids=exclude_ids
        )[0]

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
        # The dimension is checked by the engine; asking for it first would cost a round trip per query.
        matrix = _as_rows(vectors)
        if len(matrix) == 0:
            return []
        query_filter = to_qdrant_filter(filter, merge_excluded(exclude_ids))
        requests = [
            models.QueryRequest(
                query=row.tolist(),
                filter=query_filter,
                params=self._search_params(query_filter is not None),
                limit=limit,
                with_payload=True,
            )
            for row in matrix
        ]
        with self._errors("searching", name_or_alias):
            responses = self._client.query_batch_points(name_or_alias, requests=requests)
        return [[_hit(p) for p in response.points] for response in responses]

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
        info = self.info(name_or_alias)
        prepared = prepare_recommend(
            positive,
            negative,
            strategy,
            dim=info.dim,
            distance=info.distance,
            lookup=lambda ids: self.get_vectors(info.name, ids),
        )
        excluded = merge_excluded(exclude_ids, prepared.example_ids)
        # Query the resolved collection: the examples were looked up there, so an alias switch in between
        # must not mix two model versions.
        if strategy == "average_vector":
            return self.nearest(
                info.name, prepared.average_vector(), limit=limit, filter=filter, exclude_ids=excluded
            )
        query = models.RecommendQuery(
            recommend=models.RecommendInput(
                positive=prepared.positive.tolist(),
                negative=prepared.negative.tolist(),
                strategy=models.RecommendStrategy.BEST_SCORE,
            )
        )
        query_filter = to_qdrant_filter(filter, excluded)
        with self._errors("recommending", name_or_alias):
            response = self._client.query_points(
                info.name,
                query=query,
                query_filter=query_filter,
                search_params=self._search_params(query_filter is not None),
                limit=limit,
                with_payload=True,
            )
        return [_hit(p) for p in response.points]

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> QdrantServerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_rows(vectors: Sequence[Vector] | NDArray[np.floating]) -> NDArray[np.float32]:
    """(Q, D) without knowing D: the rows only have to agree with each other."""
    if isinstance(vectors, np.ndarray):
        dim = vectors.shape[-1] if vectors.ndim == 2 else -1
    else:
        dim = len(vectors[0]) if len(vectors) else 0
    if dim < 1:
        raise ValueError("vectors must be a non-empty (Q, D) array or a sequence of equal-length vectors")
    return as_matrix(vectors, dim)


def _hit(point: Any) -> Hit:
    return Hit(id=int(point.id), score=float(point.score), payload=read_payload(point.payload))
