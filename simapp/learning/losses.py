"""Similarity losses, one ``nn.Module`` each, created by name with :func:`create_loss`.

Two kinds of input (``loss.input_kind``):

* ``"pairs"``: ``forward(a, b, scores)`` with embeddings ``a``, ``b`` (B, D) and pair scores (B,) in
  ``[0, 1]`` (1 = same). Losses: ``contrastive``, ``cosent``, ``mnrl``.
* ``"groups"``: ``forward(embeddings, labels)`` with embeddings (B, D) and integer labels (B,).
  Losses: ``triplet`` (all / hard / semi-hard mining, per anchor), ``supcon``, ``arcface``.

Cosine similarities are in ``[-1, 1]`` and cosine distance is ``1 - cos`` (package convention).
Losses compute in float32 even under autocast, because ``exp``/``logsumexp`` over scaled cosines
overflow in fp16.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from simapp.learning.serialization import save_module
from simapp.learning.similarity import check_distance, paired_distance, pairwise_distance, pairwise_similarity

InputKind = Literal["pairs", "groups"]
CONFIG_FILE = "loss_config.json"
WEIGHTS_FILE = "loss.safetensors"


class SimilarityLoss(nn.Module):
    name: ClassVar[str]
    input_kind: ClassVar[InputKind]
    config_class: ClassVar[type]

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    def get_config_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self.config)}

    def save(self, directory: str | Path) -> None:
        """Write ``loss_config.json`` and ``loss.safetensors`` (ArcFace class centres; else empty)."""
        save_module(
            self, self.get_config_dict(), directory, config_file=CONFIG_FILE, weights_file=WEIGHTS_FILE
        )

    @classmethod
    def load(cls, directory: str | Path) -> SimilarityLoss:
        path = Path(directory)
        config = json.loads((path / CONFIG_FILE).read_text())
        loss = create_loss(config.pop("name"), **config)
        loss.load_state_dict(safetensors.torch.load_file(str(path / WEIGHTS_FILE)), strict=True)
        return loss


# ---------------------------------------------------------------------------------------------- pairs


@dataclass
class ContrastiveConfig:
    margin: float = 0.5
    distance: str = "cosine"


class ContrastiveLoss(SimilarityLoss):
    """Hadsell et al. (2006): ``s d^2 + (1 - s) relu(margin - d)^2``, mean over pairs.

    ``s`` is the pair score in [0, 1] (binary labels are the usual case; graded scores interpolate).
    Zero exactly when positives coincide and negatives are at least ``margin`` apart.
    """

    name = "contrastive"
    input_kind = "pairs"
    config_class = ContrastiveConfig

    def __init__(self, config: ContrastiveConfig) -> None:
        check_distance(config.distance)
        super().__init__(config)

    def forward(self, a: torch.Tensor, b: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        d = paired_distance(a.float(), b.float(), self.config.distance)  # (B,)
        s = scores.float()
        return (s * d.pow(2) + (1 - s) * F.relu(self.config.margin - d).pow(2)).mean()


@dataclass
class CoSENTConfig:
    scale: float = 20.0


class CoSENTLoss(SimilarityLoss):
    """CoSENT (Su, 2022): ``log(1 + sum_{s_i > s_j} exp(scale (cos_j - cos_i)))``.

    Only the ranking of pair cosines is trained, which suits graded scores. Exactly zero when no two
    scores in the batch differ; otherwise positive, approaching zero as the order is respected by
    wider gaps.
    """

    name = "cosent"
    input_kind = "pairs"
    config_class = CoSENTConfig

    def forward(self, a: torch.Tensor, b: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        cos = F.cosine_similarity(a.float(), b.float(), dim=-1) * self.config.scale  # (B,)
        diff = cos[None, :] - cos[:, None]  # (B, B): diff[i, j] = cos_j - cos_i
        ordered = scores[:, None] > scores[None, :]  # (B, B): pairs i that should rank above j
        terms = torch.cat([diff.new_zeros(1), diff[ordered]])  # the 0 is the "1 +" inside the log
        return torch.logsumexp(terms, dim=0)


@dataclass
class MultipleNegativesRankingConfig:
    scale: float = 20.0
    symmetric: bool = True


class MultipleNegativesRankingLoss(SimilarityLoss):
    """Multiple-negatives ranking loss (symmetric InfoNCE) over in-batch negatives.

    Each positive pair (score >= 0.5) ``(a_i, b_i)`` must pick ``b_i`` among all ``b`` in the batch
    (and, when symmetric, ``a_i`` among all ``a``): cross-entropy over ``scale * cos``. Negative pairs
    are not anchors but their items still serve as negatives. Always positive; zero only in the limit.
    """

    name = "mnrl"
    input_kind = "pairs"
    config_class = MultipleNegativesRankingConfig

    def forward(self, a: torch.Tensor, b: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        positive = torch.nonzero(scores >= 0.5).squeeze(1)  # (P,)
        if positive.numel() == 0:
            return a.sum() * 0.0  # keeps the graph (and AMP's scaler) valid for a batch of negatives
        logits = pairwise_similarity(a.float(), b.float()) * self.config.scale  # (B, B)
        loss = F.cross_entropy(logits[positive], positive)
        if self.config.symmetric:
            loss = (loss + F.cross_entropy(logits.T[positive], positive)) / 2
        return loss


# --------------------------------------------------------------------------------------------- groups

Mining = Literal["all", "hard", "semi-hard"]
MININGS: tuple[str, ...] = ("all", "hard", "semi-hard")


@dataclass
class TripletConfig:
    margin: float = 0.2
    mining: str = "semi-hard"
    distance: str = "cosine"
    # Weight of the spread-out regulariser that prevents collapse; 0 disables it.
    spread_weight: float = 1.0


class TripletLoss(SimilarityLoss):
    """Triplet margin loss ``relu(d(a, p) - d(a, n) + margin)`` with online mining, per anchor.

    Mining (all distances are those of the anchor in question, never of another row):

    * ``all``: every valid (a, p, n); the mean over triplets with a positive loss (Hermans et al.).
    * ``hard``: per anchor, its farthest positive and its nearest negative.
    * ``semi-hard``: per (a, p), the nearest negative *farther from a than p is*
      (``d(a, n) > d(a, p)``, FaceNet); when there is none, the farthest negative of that anchor.

    Collapse prevention: hard negatives drive triplet training towards mapping everything to one point,
    where every triplet costs exactly ``margin`` and gradients vanish. We add the global orthogonal
    regulariser of Zhang et al. (2017, "Learning spread-out local feature descriptors") on the
    L2-normalised embeddings of negative pairs: ``mean(s)^2 + relu(mean(s^2) - 1/D)``, which is 0 for
    spread-out (near-orthogonal) negatives and about 2 for a collapsed batch, weighted by
    ``spread_weight``. :meth:`collapse_ratio` measures the state.
    """

    name = "triplet"
    input_kind = "groups"
    config_class = TripletConfig

    def __init__(self, config: TripletConfig) -> None:
        if config.mining not in MININGS:
            raise ValueError(f"Unknown triplet mining {config.mining!r}; valid: {', '.join(MININGS)}")
        check_distance(config.distance)
        super().__init__(config)

    @staticmethod
    def _masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        same = labels[:, None] == labels[None, :]  # (B, B)
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        return same & ~eye, ~same  # positives (B, B), negatives (B, B)

    @torch.no_grad()
    def mine(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Indices ``(anchor, positive, negative)``, each (T,), of the triplets the loss uses."""
        dist = pairwise_distance(embeddings.float(), embeddings.float(), self.config.distance)  # (B, B)
        return self._mine(dist, labels)

    def _mine(self, dist: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pos, neg = self._masks(labels)
        big = torch.finfo(dist.dtype).max
        mining = self.config.mining
        if mining == "all":
            valid = pos[:, :, None] & neg[:, None, :]  # (B_a, B_p, B_n)
            return tuple(torch.nonzero(valid, as_tuple=True))
        if mining == "hard":
            anchors = torch.nonzero(pos.any(1) & neg.any(1)).squeeze(1)  # (A,)
            hardest_pos = dist.masked_fill(~pos, -big).argmax(1)  # (B,)
            hardest_neg = dist.masked_fill(~neg, big).argmin(1)  # (B,)
            return anchors, hardest_pos[anchors], hardest_neg[anchors]
        # semi-hard: d_ap (B_a, B_p, 1) is compared with that same anchor's d_an (B_a, 1, B_n).
        a_idx, p_idx = torch.nonzero(pos & neg.any(1, keepdim=True), as_tuple=True)  # (T,)
        d_ap = dist[a_idx, p_idx][:, None]  # (T, 1)
        d_an = dist[a_idx]  # (T, B): row of the same anchor
        is_neg = neg[a_idx]  # (T, B)
        harder = is_neg & (d_an > d_ap)
        nearest_harder = d_an.masked_fill(~harder, big).argmin(1)  # (T,)
        farthest = d_an.masked_fill(~is_neg, -big).argmax(1)  # (T,)
        n_idx = torch.where(harder.any(1), nearest_harder, farthest)
        return a_idx, p_idx, n_idx

    def spread_regulariser(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Global orthogonal regularisation over negative pairs (0 when they are orthogonal on average)."""
        _, neg = self._masks(labels)
        if not neg.any():
            return embeddings.sum() * 0.0
        sim = pairwise_similarity(embeddings, embeddings)[neg]  # (P,) cosines of negative pairs
        dim = embeddings.shape[1]
        return sim.mean().pow(2) + F.relu(sim.pow(2).mean() - 1.0 / dim)

    @staticmethod
    @torch.no_grad()
    def collapse_ratio(embeddings: torch.Tensor) -> float:
        """Mean pairwise cosine similarity of a batch: 1.0 means every embedding points the same way."""
        sim = pairwise_similarity(embeddings.float(), embeddings.float())  # (B, B)
        n = len(embeddings)
        return float((sim.sum() - sim.diagonal().sum()) / max(n * (n - 1), 1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        e = embeddings.float()
        dist = pairwise_distance(e, e, self.config.distance)  # (B, B)
        a, p, n = self._mine(dist.detach(), labels)
        loss = e.sum() * 0.0
        if a.numel():
            per_triplet = F.relu(dist[a, p] - dist[a, n] + self.config.margin)  # (T,)
            if self.config.mining == "all":
                active = per_triplet > 0
                loss = per_triplet[active].mean() if active.any() else per_triplet.sum() * 0.0
            else:
                loss = per_triplet.mean()
        if self.config.spread_weight:
            loss = loss + self.config.spread_weight * self.spread_regulariser(e, labels)
        return loss


@dataclass
class SupervisedContrastiveConfig:
    # CLINC150: 0.05 kept the OOS AUROC highest at about the kNN accuracy of 0.1; 0.2 was worse on both.
    temperature: float = 0.05


class SupervisedContrastiveLoss(SimilarityLoss):
    """Supervised contrastive loss (Khosla et al., 2020, L_out) over normalised embeddings.

    For each anchor with at least one positive in the batch: the mean over its positives ``p`` of
    ``-log softmax_p(cos / T)`` over every other item in the batch. Lower bound ``log(#positives)``
    per anchor, so exactly-separated pairs (two per class) approach zero.
    """

    name = "supcon"
    input_kind = "groups"
    config_class = SupervisedContrastiveConfig

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        e = F.normalize(embeddings.to(torch.promote_types(embeddings.dtype, torch.float32)), dim=-1)  # (B, D)
        if len(labels) < 2:  # no candidates at all (and a logsumexp over nothing has no gradient)
            return e.sum() * 0.0
        return _SupConFunction.apply(e, labels, self.config.temperature)


class _SupConFunction(torch.autograd.Function):
    """SupCon from normalised embeddings ``e`` (B, D) and labels (B,), with a written-out backward:
    ``dL/de = (G + G^T) e / T`` with ``G_ij = [i has positives] (softmax_ij - P_ij / |P_i|) / #anchors``.

    That is one (B, B) x (B, D) product where autograd takes two, and the positives (a few per row in
    m-per-class batches) are handled as a list of pairs instead of (B, B) masks: about five element-wise
    passes over (B, B) where autograd's version took about twenty. On 2 CPU cores the loss went from a
    quarter of a training step of the default head (batch 512) to about an eighth.

    Under autocast the two products run in its reduced precision (as ``e @ e.T`` would); everything
    after them in float32 (float64 inputs stay float64, for gradcheck)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, e: torch.Tensor, labels: torch.Tensor, temperature: float
    ) -> torch.Tensor:
        device = e.device.type
        low = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        work = torch.promote_types(e.dtype, torch.float32)
        a = e.to(low) if low is not None else e  # (B, D), the operand of both products
        n = len(labels)
        with torch.autocast(device, enabled=False):
            same = labels[:, None] == labels[None, :]  # (B, B)
            same.fill_diagonal_(False)
            rows, cols = same.nonzero(as_tuple=True)  # (P,) each: the positive pairs (i, j), i != j
            counts = torch.bincount(rows, minlength=n)  # (B,) positives per anchor
            anchors = counts > 0
            n_anchors = anchors.sum().clamp_min(1)
            logits = (a @ a.T).to(work).mul_(1.0 / temperature)  # (B, B)
            logits.fill_diagonal_(float("-inf"))  # an item is not its own candidate
            positive_logits = logits[rows, cols]  # (P,)
            # softmax over each row's candidates, shifted by the row's largest logit
            top = logits.amax(1, keepdim=True)  # (B, 1)
            softmax = logits.sub_(top).exp_()  # (B, B), 0 on the diagonal
            total = softmax.sum(1, keepdim=True)  # (B, 1)
            softmax.div_(total)
            lse = (total.log_() + top).squeeze(1)  # (B,) logsumexp over candidates
            # -mean over positives of log softmax = logsumexp over candidates - mean positive logit
            positive_mean = torch.zeros(n, dtype=work, device=e.device).index_add_(0, rows, positive_logits)
            positive_mean /= counts.clamp_min(1)
            loss = torch.where(anchors, lse - positive_mean, 0.0).sum() / n_anchors
        ctx.save_for_backward(a, softmax, rows, cols, counts, anchors, n_anchors)
        ctx.temperature = temperature
        return loss

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        a, softmax, rows, cols, counts, anchors, n_anchors = ctx.saved_tensors
        with torch.autocast(a.device.type, enabled=False):
            scale = anchors * (grad / (n_anchors * ctx.temperature))  # (B,)
            g = softmax * scale[:, None]  # (B, B): dL/d(e e^T) from the softmax, one side
            g.index_put_((rows, cols), -(scale / counts.clamp_min(1))[rows], accumulate=True)
            both = torch.add(g, g.T, out=torch.empty_like(g, dtype=a.dtype))  # symmetric, in a's dtype
            grad_e = (both @ a).to(softmax.dtype)  # (B, D)
        return grad_e, None, None


@dataclass
class ArcFaceConfig:
    num_classes: int
    embedding_dim: int
    scale: float = 30.0
    margin: float = 0.3


class ArcFaceLoss(SimilarityLoss):
    """Additive angular margin (Deng et al., 2019): softmax over ``scale * cos(theta + m)`` for the
    true class and ``scale * cos(theta_j)`` for the others, against learned class centres (C, D).

    The class centres are parameters of the loss: the trainer optimises them with the head.
    """

    name = "arcface"
    input_kind = "groups"
    config_class = ArcFaceConfig

    def __init__(self, config: ArcFaceConfig) -> None:
        super().__init__(config)
        self.centres = nn.Parameter(torch.empty(config.num_classes, config.embedding_dim))
        nn.init.xavier_uniform_(self.centres)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        m = self.config.margin
        cos = pairwise_similarity(embeddings.float(), self.centres.float())  # (B, C)
        sin = (1.0 - cos.pow(2)).clamp_min(1e-9).sqrt()
        cos_margin = cos * math.cos(m) - sin * math.sin(m)  # cos(theta + m)
        # Past theta = pi - m, cos(theta + m) stops decreasing; use the linear fallback (InsightFace).
        cos_margin = torch.where(cos > math.cos(math.pi - m), cos_margin, cos - math.sin(math.pi - m) * m)
        target = F.one_hot(labels, self.config.num_classes).bool()  # (B, C)
        logits = torch.where(target, cos_margin, cos) * self.config.scale
        return F.cross_entropy(logits, labels)


LOSSES: dict[str, type[SimilarityLoss]] = {
    cls.name: cls
    for cls in (
        ContrastiveLoss,
        CoSENTLoss,
        MultipleNegativesRankingLoss,
        TripletLoss,
        SupervisedContrastiveLoss,
        ArcFaceLoss,
    )
}
LOSS_NAMES: tuple[str, ...] = tuple(LOSSES)


def create_loss(name: str, **kwargs: Any) -> SimilarityLoss:
    """Create a loss by name; keyword arguments are fields of its config dataclass.

    Names: ``contrastive``, ``cosent``, ``mnrl`` (pairs); ``triplet``, ``supcon``, ``arcface``
    (groups; ``arcface`` needs ``num_classes`` and ``embedding_dim``). Raises ``ValueError`` listing
    the valid names for an unknown one.
    """
    if name not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}; valid: {', '.join(LOSS_NAMES)}")
    cls = LOSSES[name]
    return cls(cls.config_class(**kwargs))
