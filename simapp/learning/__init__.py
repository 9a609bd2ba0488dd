"""Django-free similarity-learning core: frozen encoders, embedding cache, heads, losses, trainer, metrics.

The idea: run a frozen pretrained encoder once per item, keep its output in a persistent on-disk cache,
and train only a small head (which starts as the identity) on the cached vectors. A retrain costs one
encoder pass over new or changed items plus seconds of head training.

Conventions used everywhere in this package (and by its callers):

* **Cosine similarity** is always the plain cosine, in ``[-1, 1]``. Where a score in ``[0, 1]`` is needed
  (pair labels, UI), it is ``score = (cos + 1) / 2`` and back ``cos = 2 * score - 1``
  (:func:`cosine_to_score`, :func:`score_to_cosine`). No other mapping exists in this package.
* **Distance** follows the data: ``encoder.distance`` is ``"cosine"`` for text encoders (distance
  ``1 - cos``, in ``[0, 2]``) and ``"euclidean"`` for the ``vector`` encoder, whose features are
  standardised. Heads never normalise; cosine users normalise at comparison time.
* **Pair scores** are in ``[0, 1]``: 1 = same, 0 = unrelated; binary labels are 0/1.
* **Shapes**: ``N`` items, ``B`` batch, ``D`` embedding size, ``C`` classes, ``K`` neighbours.

Nothing here imports Django: the web app calls :func:`create_encoder`, :class:`EmbeddingCache`,
:func:`train`, :class:`SimilarityModel` and the metric functions.
"""

from __future__ import annotations

from simapp.learning.cache import CacheStats, EmbeddingCache, TrainableEncoderError, content_hash
from simapp.learning.data import GroupData, PairData
from simapp.learning.device import resolve_device
from simapp.learning.encoders import (
    ENCODER_NAMES,
    Encoder,
    SentenceTransformerEncoder,
    VectorEncoder,
    create_encoder,
)
from simapp.learning.heads import (
    HEAD_NAMES,
    Head,
    IdentityHead,
    LinearHead,
    SkipConnectionHead,
    WideningMLPHead,
    create_head,
    load_head,
)
from simapp.learning.losses import (
    LOSS_NAMES,
    ArcFaceLoss,
    ContrastiveLoss,
    CoSENTLoss,
    MultipleNegativesRankingLoss,
    SimilarityLoss,
    SupervisedContrastiveLoss,
    TripletLoss,
    create_loss,
)
from simapp.learning.metrics import (
    auroc,
    knn_accuracy,
    knn_predict,
    mean_reciprocal_rank,
    nearest_neighbors,
    oos_scores,
    precision_at_k,
    r_precision,
    retrieval_metrics,
    spearman,
)
from simapp.learning.model import SimilarityModel
from simapp.learning.similarity import (
    cosine_to_score,
    pairwise_distance,
    pairwise_similarity,
    score_to_cosine,
)
from simapp.learning.trainer import (
    Progress,
    TrainConfig,
    TrainingCancelled,
    TrainResult,
    TrainStep,
    default_loss_name,
    refits,
    train,
)

__all__ = [
    "ENCODER_NAMES",
    "HEAD_NAMES",
    "LOSS_NAMES",
    "ArcFaceLoss",
    "CacheStats",
    "CoSENTLoss",
    "ContrastiveLoss",
    "EmbeddingCache",
    "Encoder",
    "GroupData",
    "Head",
    "IdentityHead",
    "LinearHead",
    "MultipleNegativesRankingLoss",
    "PairData",
    "Progress",
    "SentenceTransformerEncoder",
    "SimilarityLoss",
    "SimilarityModel",
    "SkipConnectionHead",
    "SupervisedContrastiveLoss",
    "TrainConfig",
    "TrainResult",
    "TrainStep",
    "TrainableEncoderError",
    "TrainingCancelled",
    "TripletLoss",
    "VectorEncoder",
    "WideningMLPHead",
    "auroc",
    "content_hash",
    "cosine_to_score",
    "create_encoder",
    "create_head",
    "create_loss",
    "default_loss_name",
    "knn_accuracy",
    "knn_predict",
    "load_head",
    "mean_reciprocal_rank",
    "nearest_neighbors",
    "oos_scores",
    "pairwise_distance",
    "pairwise_similarity",
    "precision_at_k",
    "r_precision",
    "refits",
    "resolve_device",
    "retrieval_metrics",
    "score_to_cosine",
    "spearman",
    "train",
]
