"""Train a head on cached encoder outputs.

``train(config, data, val=None, on_progress=..., should_cancel=...)`` is what the web app calls. It
builds the head and loss by name, batches the data (class-balanced for groups, shuffled for pairs),
optimises with AdamW under a one-cycle schedule and checks a validation metric after every epoch (kNN
accuracy for groups, Spearman for pairs). It stops early once the metric has been clearly (more than
noise) below its best for ``patience`` epochs, and chooses the latest epoch within noise of the best.
Without a ``val`` set, a stratified part of the training data is held out for that choice, and a
fresh head is then trained on all the data for the chosen number of epochs (``refit``)."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from simapp.learning.data import GroupData, PairData
from simapp.learning.device import amp_dtype, resolve_device
from simapp.learning.heads import Head, create_head
from simapp.learning.losses import LOSSES, SimilarityLoss, create_loss
from simapp.learning.metrics import knn_accuracy, nearest_neighbors, spearman
from simapp.learning.samplers import MPerClassSampler, ShuffleSampler
from simapp.learning.similarity import check_distance, paired_distance

Data = GroupData | PairData


class TrainingCancelled(Exception):
    """Raised between batches when ``should_cancel()`` returns true; no head is produced."""

    def __init__(self, epoch: int, step: int) -> None:
        super().__init__(f"Training cancelled at epoch {epoch}, step {step}")
        self.epoch = epoch
        self.step = step


@dataclass
class TrainConfig:
    """Everything that decides a training run. ``None`` fields take data-dependent defaults.

    Defaults were chosen on the benchmarks (see BENCHMARKS.md): a widening MLP head, supervised
    contrastive loss for groups, CoSENT for graded pairs, one-cycle learning rate.
    """

    head: str = "mlp"
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    loss: str | None = None  # None: default_loss_name(data, distance)
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    distance: str = "cosine"  # the encoder's distance: validation kNN and distance-aware losses use it
    epochs: int | None = None  # maximum; None: 10 for groups, 6 for pairs
    learning_rate: float | None = None  # peak of the one-cycle schedule; None: 1e-3 groups, 3e-4 pairs
    weight_decay: float = 0.01
    batch_size: int | None = None  # None: 256 for groups, 64 for pairs
    samples_per_class: int = 4  # m in m-per-class batches
    # Weight of the identity anchor: the mean squared distance between head(x) and x is added to the
    # loss, so fine-tuning adjusts the encoder's space instead of replacing it. On CLINC150 (4 seeds,
    # all of train) 1.0 raised val kNN accuracy from 0.959 to 0.963 and OOS AUROC from 0.986 to 0.990
    # (see BENCHMARKS.md); 0 disables it.
    anchor_weight: float = 1.0
    schedule: str = "onecycle"  # or "constant"
    warmup_fraction: float = 0.1
    val_fraction: float = 0.1  # held out from the training data when no validation set is given
    # After choosing the epoch count on the held-out part, train a fresh head on all the data for that
    # many epochs, so the held-out labels are not lost to the final model.
    refit: bool = True
    patience: int = 2  # epochs clearly worse than the best before stopping
    # Differences in the validation metric smaller than this are noise. None: one standard error of the
    # metric on the validation set (binomial for accuracy, Fisher-z based for Spearman).
    min_delta: float | None = None
    knn_k: int = 10
    seed: int = 0
    device: str | None = None  # None: SIMAPP_DEVICE or auto
    # Mixed precision for the head: float16 on CUDA, bfloat16 on CPUs with native support (see
    # device.amp_dtype). Losses and the anchor always compute in float32.
    amp: bool = True
    progress_every: int = 20  # call on_progress about this many times per epoch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Progress:
    """Handed to ``on_progress``: where training is, for a progress bar or a DB row.

    ``stage`` is ``"train"`` (with validation, may stop early) then, when refitting, ``"refit"`` (all
    the data, for the chosen number of epochs); ``fraction`` is the progress within the stage.
    """

    stage: str
    epoch: int  # 1-based
    epochs: int
    step: int  # 1-based within the epoch
    steps_per_epoch: int
    loss: float
    val_metric: float | None = None
    best_metric: float | None = None

    @property
    def fraction(self) -> float:
        return ((self.epoch - 1) * self.steps_per_epoch + self.step) / (self.epochs * self.steps_per_epoch)


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_metric: float | None
    train_seconds: float  # optimisation only, without validation
    seconds: float


@dataclass
class TrainResult:
    head: Head  # the final head (refit, or the chosen epoch's), on the CPU, in eval mode
    loss_name: str
    loss_config: dict[str, Any]
    metric_name: str  # "knn_accuracy" (groups) or "spearman" (pairs)
    best_metric: float | None  # validation metric of the chosen epoch
    initial_metric: float | None  # the metric of the identity head, before training
    best_epoch: int  # chosen epoch count (0: the identity head stayed best)
    epochs_run: int
    stopped_early: bool
    history: list[EpochRecord]  # the run with validation (epoch selection)
    refit_history: list[EpochRecord]  # the final run on all the data; empty without refit
    device: str
    seconds: float
    n_train: int  # items (groups) or pairs the returned head was trained on
    n_val: int
    config: dict[str, Any]
    # Groups with a holdout: each held-out item's mean distance to its ``knn_k`` nearest training items
    # under the chosen epoch's head. Out-of-sample scores of in-scope items, to calibrate "unknown" on
    # (scores of items the head was trained on are lower than new in-scope inputs will get).
    holdout_scores: np.ndarray | None = None

    @property
    def loss_history(self) -> list[float]:
        return [record.train_loss for record in self.history + self.refit_history]

    @property
    def train_seconds(self) -> float:
        """Optimisation time of both runs, without validation."""
        return sum(record.train_seconds for record in self.history + self.refit_history)


def default_loss_name(data: Data, distance: str = "cosine") -> str:
    """Default loss for the data: groups -> ``supcon`` (best on CLINC150/Banking77), graded pairs ->
    ``cosent``; with a Euclidean encoder, the distance-aware ``triplet`` / ``contrastive`` instead."""
    euclidean = check_distance(distance) == "euclidean"
    if isinstance(data, GroupData):
        return "triplet" if euclidean else "supcon"
    return "contrastive" if euclidean else "cosent"


@dataclass
class EarlyStopping:
    """Model selection and stopping on a noisy validation metric (higher is better).

    An epoch whose metric is within ``tolerance`` of the best seen so far becomes the chosen one: the
    later, further-annealed epoch generalises better under the one-cycle schedule than an earlier
    peak that only noise put ahead (on CLINC150 the last epoch beat the holdout's peak epoch on the
    real validation split). An epoch clearly below the best (by more than ``tolerance``) counts
    towards ``patience``; ``should_stop`` turns true after ``patience`` such epochs in a row.
    """

    patience: int
    top_metric: float | None = None
    best_metric: float | None = None
    best_epoch: int = 0
    stale: int = 0

    def update(self, epoch: int, metric: float, tolerance: float) -> bool:
        """Record ``metric`` for ``epoch``; return True if this epoch is now the chosen one."""
        self.top_metric = metric if self.top_metric is None else max(self.top_metric, metric)
        if metric >= self.top_metric - tolerance:
            self.best_metric, self.best_epoch, self.stale = metric, epoch, 0
            return True
        self.stale += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.stale >= self.patience


def _tolerance(config: TrainConfig, metric: float, val: Data | None) -> float:
    if config.min_delta is not None or val is None:
        return config.min_delta or 0.0
    return _standard_error(metric, val)


def _standard_error(metric: float, val: Data) -> float:
    """One standard error of a validation metric: binomial for kNN accuracy, and for Spearman the
    Fisher-z approximation ``(1 - rho^2) / sqrt(n - 3)``."""
    n = len(val)
    if isinstance(val, GroupData):
        return math.sqrt(max(metric * (1 - metric), 0.0) / n)
    return (1 - metric**2) / math.sqrt(max(n - 3, 1))


def _split_holdout(data: Data, fraction: float, rng: np.random.Generator) -> tuple[Data, Data | None]:
    """Hold out ``fraction`` of the data for validation: per class for groups (stratified)."""
    if fraction <= 0:
        return data, None
    if isinstance(data, GroupData):
        val_idx = []
        for c in range(len(data.classes)):
            members = rng.permutation(np.nonzero(data.codes == c)[0])
            n_val = round(len(members) * fraction)
            # Keep at least two items per class in training so every class still has positives.
            n_val = min(n_val, len(members) - 2)
            if n_val > 0:
                val_idx.append(members[:n_val])
        if not val_idx:
            return data, None
        held = np.sort(np.concatenate(val_idx))
        keep = np.setdiff1d(np.arange(len(data)), held)
        return data.subset(keep), data.subset(held)
    n_val = round(len(data) * fraction)
    if n_val < 3:
        return data, None
    order = rng.permutation(len(data))
    return data.subset(np.sort(order[n_val:])), data.subset(np.sort(order[:n_val]))


@torch.no_grad()
def _embed(head: Head, x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    head.eval()
    return torch.cat([head(x[i : i + chunk]).float() for i in range(0, len(x), chunk)])  # (N, D_out)


def _validate(head: Head, train: Data, val: Data, config: TrainConfig, device: torch.device) -> float:
    if isinstance(val, GroupData):
        assert isinstance(train, GroupData)
        index = _embed(head, torch.from_numpy(train.embeddings).to(device)).cpu()
        queries = _embed(head, torch.from_numpy(val.embeddings).to(device)).cpu()
        return knn_accuracy(
            queries, val.labels, index, train.labels, k=config.knn_k, distance=config.distance
        )
    items = _embed(head, torch.from_numpy(val.embeddings).to(device)).cpu()
    a, b = items[val.pairs[:, 0]], items[val.pairs[:, 1]]
    # Spearman over negated distances: for cosine it is the cosine order, for Euclidean the nearness.
    return spearman(-paired_distance(a, b, config.distance).numpy(), val.scores)


def _holdout_distances(
    head: Head, train: GroupData, val: GroupData, config: TrainConfig, device: torch.device
) -> np.ndarray:
    index = _embed(head, torch.from_numpy(train.embeddings).to(device)).cpu()
    queries = _embed(head, torch.from_numpy(val.embeddings).to(device)).cpu()
    dists, _ = nearest_neighbors(queries, index, config.knn_k, distance=config.distance)
    return dists.mean(axis=1).astype(np.float64)


def _build_loss(name: str, config: TrainConfig, data: Data, dim: int) -> SimilarityLoss:
    if name not in LOSSES:
        return create_loss(name)  # raises the ValueError that lists valid names
    kwargs = dict(config.loss_kwargs)
    fields = LOSSES[name].config_class.__dataclass_fields__
    if "distance" in fields:
        kwargs.setdefault("distance", config.distance)
    if name == "triplet" and config.distance == "euclidean":
        # Standardised features are ~sqrt(D) apart; a cosine-sized margin of 0.2 would be meaningless.
        kwargs.setdefault("margin", 1.0)
    if name == "arcface":
        if not isinstance(data, GroupData):
            raise ValueError("arcface needs group labels")
        kwargs.setdefault("num_classes", len(data.classes))
        kwargs.setdefault("embedding_dim", dim)
    loss = create_loss(name, **kwargs)
    if loss.input_kind == "groups" and not isinstance(data, GroupData):
        raise ValueError(f"Loss {name!r} needs group labels; pairs data takes a pair loss (cosent, ...)")
    return loss


def _anchor_penalty(inputs: list[torch.Tensor], outputs: list[torch.Tensor]) -> torch.Tensor:
    """Mean squared distance between each head output (B, D_out) and its input (B, D_in), the input
    zero-padded to D_out: what the head changes, measured in the encoder's own space."""
    total = 0.0
    for x, y in zip(inputs, outputs, strict=True):
        padded = torch.nn.functional.pad(x, (0, y.shape[1] - x.shape[1]))  # (B, D_out)
        total = total + (y.float() - padded.float()).pow(2).sum(1).mean()
    return total / len(inputs)


def _group_pair_batch(
    batch: np.ndarray, codes: np.ndarray, with_negatives: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs from an m-per-class batch (m = 2): one positive pair per class, optionally plus one
    negative pair per class (its first item with the next class's second item)."""
    first, second = batch[0::2], batch[1::2]  # (B/2,) each, same class pairwise
    left, right, scores = [first], [second], [np.ones(len(first), dtype=np.float32)]
    if with_negatives and len(first) > 1:
        shifted = np.roll(second, 1)
        left.append(first)
        right.append(shifted)
        scores.append((codes[first] == codes[shifted]).astype(np.float32))
    return np.concatenate(left), np.concatenate(right), np.concatenate(scores)


@dataclass
class _Fit:
    head: Head
    loss_fn: SimilarityLoss
    history: list[EpochRecord]
    stopper: EarlyStopping
    initial_metric: float | None
    stopped_early: bool


def _fit(
    config: TrainConfig,
    train_data: Data,
    val_data: Data | None,
    *,
    loss_name: str,
    epochs: int,
    stage: str,
    device: torch.device,
    on_progress: Callable[[Progress], None] | None,
    should_cancel: Callable[[], bool] | None,
) -> _Fit:
    """One optimisation run over ``train_data``; validates on ``val_data`` after every epoch if given."""
    is_groups = isinstance(train_data, GroupData)
    autocast_dtype = amp_dtype(device) if config.amp else None
    lr = config.learning_rate or (1e-3 if is_groups else 3e-4)
    batch_size = config.batch_size or (256 if is_groups else 64)
    # Same seed for every stage: the refit starts from the same head and batch order as selection.
    rng = np.random.default_rng(config.seed + 1)
    torch.manual_seed(config.seed)

    head = create_head(config.head, train_data.dim, **config.head_kwargs).to(device)
    loss_fn = _build_loss(loss_name, config, train_data, head.output_dim).to(device)
    params = list(head.parameters()) + list(loss_fn.parameters())
    x_all = torch.from_numpy(train_data.embeddings).to(device)  # (N, D)
    if is_groups:
        assert isinstance(train_data, GroupData)
        codes = train_data.codes
        codes_t = torch.from_numpy(codes).to(device)
        m = 2 if loss_fn.input_kind == "pairs" else config.samples_per_class
        sampler: MPerClassSampler | ShuffleSampler = MPerClassSampler(
            codes, m=m, batch_size=batch_size, rng=rng
        )
    else:
        assert isinstance(train_data, PairData)
        pairs_t = torch.from_numpy(train_data.pairs).to(device)
        scores_t = torch.from_numpy(train_data.scores).to(device)
        sampler = ShuffleSampler(len(train_data), batch_size=batch_size, rng=rng)
    steps = len(sampler)

    stopper = EarlyStopping(patience=config.patience)
    initial_metric = None
    if val_data is not None:
        initial_metric = _validate(head, train_data, val_data, config, device)
        stopper.update(0, initial_metric, _tolerance(config, initial_metric, val_data))
    if not params or epochs == 0:  # the identity head has nothing to train
        return _Fit(head, loss_fn, [], stopper, initial_metric, False)

    # The fused kernel updates all parameters in one pass: on 2 CPU cores the optimizer step of the
    # default head fell from 5.4 to 1.1 ms (of a 14 ms step); results match the per-tensor version.
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay, fused=True)
    total_steps = epochs * steps
    if config.schedule == "onecycle" and total_steps >= 4:
        # OneCycleLR divides by zero when its warm-up ends on step 0 (warm-up share x steps == 1), so
        # the warm-up takes at least two steps; below four steps in all there is no schedule to speak of.
        warmup = min(0.5, max(config.warmup_fraction, 2.0 / total_steps))
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=total_steps, pct_start=warmup
        )
    elif config.schedule in ("onecycle", "constant"):  # one-cycle over fewer than four steps: constant
        scheduler = None
    else:
        raise ValueError(f"Unknown schedule {config.schedule!r}; valid: onecycle, constant")
    # Only float16 needs loss scaling: bfloat16 has the exponent range of float32.
    scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype == torch.float16)
    report_every = max(1, steps // max(1, config.progress_every))

    history: list[EpochRecord] = []
    best_state = copy.deepcopy(head.state_dict())
    stopped_early = False
    for epoch in range(1, epochs + 1):
        epoch_start = time.perf_counter()
        head.train()
        loss_fn.train()
        total, count = 0.0, 0
        for step, batch in enumerate(sampler, start=1):
            if should_cancel is not None and should_cancel():
                raise TrainingCancelled(epoch, step)
            with torch.autocast(
                device_type=device.type,
                dtype=autocast_dtype or torch.bfloat16,  # the dtype is unused when disabled
                enabled=autocast_dtype is not None,
            ):
                if is_groups and loss_fn.input_kind == "groups":
                    idx = torch.from_numpy(batch).to(device)
                    inputs = [x_all[idx]]  # (B, D)
                    outputs = [head(inputs[0])]
                    loss = loss_fn(outputs[0], codes_t[idx])
                else:
                    if is_groups:
                        left, right, pair_scores = _group_pair_batch(
                            batch, codes, with_negatives=loss_fn.name != "mnrl"
                        )
                        a_idx, b_idx = torch.from_numpy(left).to(device), torch.from_numpy(right).to(device)
                        target = torch.from_numpy(pair_scores).to(device)
                    else:
                        pair = pairs_t[torch.from_numpy(batch).to(device)]  # (B, 2)
                        a_idx, b_idx = pair[:, 0], pair[:, 1]
                        target = scores_t[torch.from_numpy(batch).to(device)]
                    inputs = [x_all[a_idx], x_all[b_idx]]  # 2 x (B, D)
                    outputs = [head(x) for x in inputs]
                    loss = loss_fn(outputs[0], outputs[1], target)
                if config.anchor_weight:
                    loss = loss + config.anchor_weight * _anchor_penalty(inputs, outputs)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"Loss became {value} at epoch {epoch}, step {step}; lower the learning rate"
                )
            total += value
            count += 1
            if on_progress is not None and (step % report_every == 0 or step == steps):
                on_progress(
                    Progress(stage, epoch, epochs, step, steps, total / count, None, stopper.best_metric)
                )
        train_seconds = time.perf_counter() - epoch_start

        metric = _validate(head, train_data, val_data, config, device) if val_data is not None else None
        history.append(
            EpochRecord(epoch, total / count, metric, train_seconds, time.perf_counter() - epoch_start)
        )
        if metric is None or stopper.update(epoch, metric, _tolerance(config, metric, val_data)):
            best_state = copy.deepcopy(head.state_dict())
        if on_progress is not None:
            on_progress(
                Progress(stage, epoch, epochs, steps, steps, total / count, metric, stopper.best_metric)
            )
        if stopper.should_stop and epoch < epochs:
            stopped_early = True
            break

    head.load_state_dict(best_state)
    return _Fit(head, loss_fn, history, stopper, initial_metric, stopped_early)


def train(
    config: TrainConfig,
    data: Data,
    val: Data | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train a head on ``data`` (cached encoder outputs) and return the chosen one.

    ``val`` (same kind as ``data``) drives early stopping. Without it, ``config.val_fraction`` of the
    training data is held out to choose the number of epochs, and then (``config.refit``) a fresh head
    is trained on all of ``data`` for that many epochs, so no labelled item is wasted on validation.
    ``should_cancel`` is polled before every batch and raises :class:`TrainingCancelled`. Seeded: on
    the CPU the same config and data give the same head.
    """
    started = time.perf_counter()
    is_groups = isinstance(data, GroupData)
    device = resolve_device(config.device)
    max_epochs = config.epochs or (10 if is_groups else 6)
    loss_name = config.loss or default_loss_name(data, config.distance)
    if val is None:
        train_data, val_data = _split_holdout(data, config.val_fraction, np.random.default_rng(config.seed))
    else:
        if type(val) is not type(data):
            raise ValueError("val must be the same kind of data as data (GroupData or PairData)")
        train_data, val_data = data, val

    common = {
        "loss_name": loss_name,
        "device": device,
        "on_progress": on_progress,
        "should_cancel": should_cancel,
    }
    selection = _fit(config, train_data, val_data, epochs=max_epochs, stage="train", **common)
    best_epoch = selection.stopper.best_epoch if val_data is not None else len(selection.history)
    refit = config.refit and val is None and val_data is not None and best_epoch > 0
    final = selection
    if refit:
        final = _fit(config, data, None, epochs=best_epoch, stage="refit", **common)

    holdout_scores = None
    if isinstance(train_data, GroupData) and isinstance(val_data, GroupData) and val is None:
        holdout_scores = _holdout_distances(selection.head, train_data, val_data, config, device)
    return TrainResult(
        head=final.head.cpu().eval(),
        loss_name=loss_name,
        loss_config=final.loss_fn.get_config_dict(),
        metric_name="knn_accuracy" if is_groups else "spearman",
        best_metric=selection.stopper.best_metric,
        initial_metric=selection.initial_metric,
        best_epoch=best_epoch,
        epochs_run=len(selection.history),
        stopped_early=selection.stopped_early,
        history=selection.history,
        refit_history=final.history if refit else [],
        device=str(device),
        seconds=time.perf_counter() - started,
        n_train=len(data if refit else train_data),
        n_val=len(val_data) if val_data is not None else 0,
        config=config.to_dict(),
        holdout_scores=holdout_scores,
    )
