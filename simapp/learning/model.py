"""A trained similarity model: which encoder, the head on top, and metadata; saved without Django.

Directory layout (what a model-version artifact holds)::

    model.json            {"format": 1, "encoder": {...create_encoder kwargs}, "encoder_fingerprint": ...,
                           "distance": "cosine", "metadata": {...}}
    head_config.json      the head's config (name + dataclass fields)
    head.safetensors      the head's weights
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simapp.learning.cache import EmbeddingCache, content_hash
from simapp.learning.encoders import Encoder, create_encoder
from simapp.learning.heads import Head, load_head
from simapp.learning.similarity import check_distance

MODEL_FILE = "model.json"
FORMAT_VERSION = 1


class SimilarityModel:
    """Frozen encoder (by config) + trained head. ``embed`` maps encoder outputs to final vectors."""

    def __init__(
        self,
        *,
        encoder_config: dict[str, Any],
        head: Head,
        distance: str = "cosine",
        encoder_fingerprint: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.encoder_config = dict(encoder_config)
        self.head = head.eval()
        self.distance = check_distance(distance)
        self.encoder_fingerprint = encoder_fingerprint
        self.metadata = dict(metadata or {})

    @classmethod
    def from_encoder(
        cls, encoder: Encoder, head: Head, metadata: dict[str, Any] | None = None
    ) -> SimilarityModel:
        return cls(
            encoder_config=encoder.get_config_dict(),
            head=head,
            distance=encoder.distance,
            encoder_fingerprint=encoder.fingerprint,
            metadata=metadata,
        )

    def save(self, directory: str | Path) -> Path:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self.head.save(path)
        document = {
            "format": FORMAT_VERSION,
            "encoder": self.encoder_config,
            "encoder_fingerprint": self.encoder_fingerprint,
            "distance": self.distance,
            "output_dim": self.head.output_dim,
            "metadata": self.metadata,
        }
        (path / MODEL_FILE).write_text(json.dumps(document, indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> SimilarityModel:
        path = Path(directory)
        document = json.loads((path / MODEL_FILE).read_text())
        if document.get("format") != FORMAT_VERSION:
            raise ValueError(f"Unsupported model format {document.get('format')!r} in {path}")
        return cls(
            encoder_config=document["encoder"],
            head=load_head(path),
            distance=document["distance"],
            encoder_fingerprint=document.get("encoder_fingerprint"),
            metadata=document.get("metadata", {}),
        )

    def create_encoder(self, **kwargs: Any) -> Encoder:
        """The encoder this model was trained on (kwargs such as ``device`` go to the encoder)."""
        config = dict(self.encoder_config)
        return create_encoder(config.pop("name_or_path"), **config, **kwargs)

    @torch.no_grad()
    def embed(self, vectors: np.ndarray, *, normalize: bool | None = None, chunk: int = 8192) -> np.ndarray:
        """Apply the head to encoder outputs (N, D_in) -> (N, D_out) float32.

        ``normalize`` (default: true for cosine models) L2-normalises the result, so dot products are
        cosines in [-1, 1].
        """
        x = torch.as_tensor(np.asarray(vectors, dtype=np.float32))
        out = torch.cat([self.head(x[i : i + chunk]) for i in range(0, len(x), chunk)]) if len(x) else x
        if normalize if normalize is not None else self.distance == "cosine":
            out = torch.nn.functional.normalize(out, dim=-1)
        return out.numpy().astype(np.float32, copy=False)

    def encode(
        self,
        items: Sequence[Any],
        *,
        encoder: Encoder | None = None,
        cache: EmbeddingCache | None = None,
        hashes: Sequence[str] | None = None,
        normalize: bool | None = None,
    ) -> np.ndarray:
        """Encode raw items end to end: encoder (through ``cache`` when given) then head -> (N, D_out)."""
        if cache is not None:
            keys = list(hashes) if hashes is not None else [content_hash(item) for item in items]
            vectors = cache.get_or_compute(keys, items)
        else:
            vectors = (encoder or self.create_encoder()).encode(items)
        return self.embed(vectors, normalize=normalize)
