"""The process's vector store and each dataset's index names, over ``simapp.vectors``.

A dataset's index is the alias ``<slug>.index``; model version N builds the collection
``<slug>.index_vN``. Slugs cannot contain ".", so no alias of one dataset can collide with a collection
of another.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from apps.datasets.models import Dataset, Item
from apps.training.encoding import encode_items, text_encoder
from apps.training.models import ModelVersion
from simapp.learning import Encoder, SimilarityModel
from simapp.learning.model import MODEL_FILE
from simapp.vectors import (
    IndexParams,
    Point,
    VectorStore,
    activate,
    collection_name,
    collection_versions,
    make_payload,
    open_store,
    point_id,
)

_lock = threading.Lock()
_store: VectorStore | None = None


def vector_store() -> VectorStore:
    """The store of this process, opened on first use (the embedded engine allows one per process)."""
    global _store
    with _lock:
        if _store is None:
            _store = open_store(
                url=settings.QDRANT_URL or None,
                api_key=settings.QDRANT_API_KEY or None,
                data_dir=settings.DATA_DIR,
                # Search breadth: on CLINC150 embeddings ef 128 found 99.2% of the exact 10 nearest,
                # which cost 0.007 of served kNN accuracy; ef 512 finds 99.98%.
                index=IndexParams(hnsw_ef=settings.SIMAPP_HNSW_EF),
            )
        return _store


def vector_store_close() -> None:
    """Close the store (and forget loaded models); the next use opens it again from the settings."""
    global _store
    with _lock:
        if _store is not None:
            _store.close()
            _store = None
    with _models_lock:
        _models.clear()


def index_alias(dataset: Dataset) -> str:
    return f"{dataset.slug}.index"


def index_collection(dataset: Dataset, number: int) -> str:
    return collection_name(index_alias(dataset), number)


def model_dir(slug: str, number: int | None = None) -> Path:
    """Where a dataset's model files go, relative to ``DATA_DIR`` (so the directory can move):
    ``models/<slug>`` holds every version's, version N's are in ``models/<slug>/v<N>``."""
    own = Path("models") / slug
    return own if number is None else own / f"v{number}"


def index_collections(*, dataset: Dataset) -> set[str]:
    return set(collection_versions(vector_store(), index_alias(dataset)).values())


def index_activate(*, dataset: Dataset, collection: str) -> str | None:
    """Point the dataset's alias at ``collection`` after checking it; returns the previous target."""
    return activate(vector_store(), alias=index_alias(dataset), collection=collection)


_models_lock = threading.Lock()
_models: dict[str, SimilarityModel] = {}


def active_model(dataset: Dataset) -> tuple[ModelVersion, SimilarityModel] | None:
    """The dataset's active version and its loaded model (loaded once per process and version)."""
    version = ModelVersion.objects.filter(dataset=dataset, is_active=True).first()
    if version is None:
        return None
    path = Path(settings.DATA_DIR) / version.artifact_path  # relative paths resolve under DATA_DIR
    # Keyed by the files' time too: a restore (or a retrain of a dataset deleted and created again under
    # its slug) puts other model files at the same path.
    key = f"{path}@{(path / MODEL_FILE).stat().st_mtime_ns}"
    with _models_lock:
        model = _models.get(key)
        if model is None:
            model = _models[key] = SimilarityModel.load(path)
    return version, model


class NoActiveModel(LookupError):
    """The dataset has no active model version yet, so there is no index to serve from."""

    def __init__(self, dataset: Dataset) -> None:
        super().__init__(
            f"dataset '{dataset.slug}' has no active model yet: train it first (the admin's Retrain action, "
            f"POST /api/datasets/{dataset.slug}/runs/, or manage.py train {dataset.slug})"
        )


def require_active_model(dataset: Dataset) -> tuple[ModelVersion, SimilarityModel]:
    active = active_model(dataset)
    if active is None:
        raise NoActiveModel(dataset)
    return active


def model_encoder(dataset: Dataset, model: SimilarityModel) -> Encoder:
    """The frozen encoder a model was trained on; text encoders are shared with the rest of the process."""
    if dataset.modality == Dataset.Modality.TEXT:
        encoder = text_encoder(dataset.encoder)
        if encoder.fingerprint == model.encoder_fingerprint:
            return encoder
    return model.create_encoder()


def index_items_upsert(*, dataset: Dataset, item_ids: Sequence[int]) -> int:
    """Embed items with the active model and (re)index them under the dataset's alias; returns how many.

    Point ids are item ids, so this overwrites an item's old point. Nothing to do without an active model.
    """
    active = active_model(dataset)
    if active is None or not item_ids:
        return 0
    _, model = active
    rows = list(
        Item.objects.filter(dataset=dataset, pk__in=list(item_ids))
        .order_by("id")
        .values_list("id", "key", "text", "vector", "label", "metadata", "content_hash")
    )
    if not rows:
        return 0
    batch = _Rows(texts=[r[2] for r in rows], vectors=[r[3] for r in rows], hashes=[r[6] for r in rows])
    vectors, _ = encode_items(model_encoder(dataset, model), batch)
    final = model.embed(vectors)
    points = [
        Point(id=point_id(r[0]), vector=final[i], payload=make_payload(r[1], r[4] or None, r[5]))
        for i, r in enumerate(rows)
    ]
    vector_store().upsert(index_alias(dataset), points)
    return len(points)


def index_items_delete(*, dataset: Dataset, item_ids: Sequence[int]) -> None:
    if vector_store().get_alias(index_alias(dataset)) is None:
        return
    vector_store().delete(index_alias(dataset), [point_id(i) for i in item_ids])


def index_items_sync(*, dataset_id: int, item_ids: Sequence[int], delete: bool) -> None:
    """The job behind ``jobs.enqueue_index``: upsert or delete the items' points in the active index."""
    dataset = Dataset.objects.filter(pk=dataset_id).first()
    if dataset is None:
        return
    if delete:
        index_items_delete(dataset=dataset, item_ids=item_ids)
    else:
        index_items_upsert(dataset=dataset, item_ids=item_ids)


@dataclass
class _Rows:
    texts: list[str]
    vectors: list[list[float] | None]
    hashes: list[str]
