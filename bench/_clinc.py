"""Setup shared by the benchmarks that need a served CLINC150 dataset of 100,000 items.

Call after ``django.setup()``, in a fresh data directory: ``trained_clinc150`` imports the train split
(15,000 real items) and retrains it with the product's pipeline; ``grow_with_variants`` then adds variants
of the real items until the dataset has ``n_items``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Trained:
    dataset: Any  # apps.datasets.models.Dataset
    version: Any  # apps.training.models.ModelVersion
    model: Any  # simapp.learning.SimilarityModel
    rows: Any  # apps.training.pipeline.ItemRows of the real items
    vectors: np.ndarray  # (15000, D) their final embeddings, unit length for cosine
    train_seconds: float


def trained_clinc150(slug: str, clinc: Path) -> Trained:
    """Import CLINC150 train into ``slug`` and retrain it (real MiniLM, trained head, index, scores)."""
    from apps.datasets.models import Dataset
    from apps.datasets.services import dataset_import
    from apps.training import services as training
    from apps.training.encoding import encode_items
    from apps.training.index import model_encoder, require_active_model
    from apps.training.pipeline import ItemRows, training_run_execute

    started = time.perf_counter()
    with clinc.open("rb") as fp:
        dataset_import(slug=slug, fp=fp, source_name=clinc.name, fmt="clinc150", split="train")
    dataset = Dataset.objects.get(slug=slug)
    run = training.training_run_start(dataset=dataset, enqueue=False).run
    finished = training_run_execute(run_id=run.pk)
    assert finished is not None and finished.status == "succeeded", finished and finished.error
    train_seconds = time.perf_counter() - started
    version, model = require_active_model(dataset)
    rows = ItemRows.of(dataset)
    encoded, _ = encode_items(model_encoder(dataset, model), rows)
    return Trained(dataset, version, model, rows, model.embed(encoded), train_seconds)


def grow_with_variants(
    trained: Trained, n_items: int, seed: int, *, prefix: str, metadata: dict[str, Any] | None = None
) -> tuple[list[int], np.ndarray, float]:
    """Add ``n_items - 15000`` variants: each copies a random real item's label, its text with a number
    appended, and its final embedding plus Gaussian noise (cosine ~0.9 to the original), written as item
    rows and upserted into the active index, which is then optimised. Returns the new ids, their vectors
    and the seconds it took.

    Rows are written directly, not through the import service, because their embeddings are made here,
    not by the encoder: the service would send them to live indexing, which would encode the made-up texts.
    """
    from apps.datasets.formats import text_hash
    from apps.datasets.models import Item
    from apps.training.index import index_alias, vector_store
    from simapp.vectors import Point, make_payload

    started = time.perf_counter()
    rows, real = trained.rows, trained.vectors
    rng = np.random.default_rng(seed)
    extra = n_items - len(rows.ids)
    source = rng.integers(0, len(rows.ids), size=extra).tolist()
    noisy = real[source] + rng.normal(scale=0.02, size=(extra, real.shape[1])).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    keys = [f"{prefix}-{n:06d}" for n in range(extra)]
    texts = [f"{rows.texts[s]} ({n})" for n, s in enumerate(source)]
    Item.objects.bulk_create(
        (
            Item(
                dataset=trained.dataset,
                key=keys[n],
                text=texts[n],
                label=rows.labels[s],
                metadata=dict(metadata or {}),
                content_hash=text_hash(texts[n]),
            )
            for n, s in enumerate(source)
        ),
        batch_size=5000,
    )
    # Ids by key, in the order made (not every database backend returns ids from bulk inserts).
    made = Item.objects.filter(dataset=trained.dataset, key__startswith=f"{prefix}-")
    id_of = dict(made.values_list("key", "id"))
    ids = [id_of[key] for key in keys]
    store, alias = vector_store(), index_alias(trained.dataset)
    store.upsert(
        alias,
        [
            Point(id=item_id, vector=noisy[n], payload=make_payload(keys[n], rows.labels[s], metadata))
            for n, (item_id, s) in enumerate(zip(ids, source, strict=True))
        ],
    )
    store.optimize(alias)
    return ids, noisy, time.perf_counter() - started
