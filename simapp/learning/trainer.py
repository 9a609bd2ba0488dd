"""Train a head on cached encoder outputs.

``train(config, data, val=None, on_progress=..., should_cancel=...)`` is what the web app calls. It
builds the head and loss by name, batches the data (class-balanced for groups, shuffled for pairs),
optimises with AdamW under a one-cycle schedule and checks a validation metric after every epoch (kNN
accuracy for groups, Spearman for pairs). It stops early once the metric has been clearly (more than
noise) below its best for ``patience`` epochs, and chooses the latest epoch within noise of the best.
Without a ``val`` set, a stratified part of the training data is held out for that choice; on small
data a fresh head is then trained on all of it for the chosen number of epochs (``refit``), while on
large data the chosen epoch's head is kept (see ``TrainConfig.refit``)."""

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
from simapp.learning.metrics import knn_predict, nearest_neighbors, spearman
from simapp.learning.optim import FusedAdamW, OneCycle
from simapp.learning.samplers import MPerClassSampler, ShuffleSampler
from simapp.learning.similarity import check_distance, paired_distance

Data = GroupData | PairData
Sampler = MPerClassSampler | ShuffleSampler
# Group training defaults (pairs: 64 pairs per batch, lr 3e-4): m-per-class batches of 512 items, one-cycle
# peak 1.5e-3 (1e-3 at 256, scaled by about the square root of the batch). See TrainConfig.
DEFAULT_GROUP_BATCH = 512
DEFAULT_GROUP_LR = 1.5e-3
DEFAULT_PAIR_BATCH = 64
DEFAULT_PAIR_LR = 3e-4
# TrainConfig.refit None: refit on all the data only up to this many items (groups) or pairs.
REFIT_MAX_ITEMS = 2000


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
    learning_rate: float | None = None  # one-cycle peak; None: DEFAULT_GROUP_LR / DEFAULT_PAIR_LR
    weight_decay: float = 0.01
    batch_size: int | None = None  # None: DEFAULT_GROUP_BATCH items for groups, DEFAULT_PAIR_BATCH pairs
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
    # many epochs, so the held-out labels are not lost to the final model. None: only for data of at
    # most REFIT_MAX_ITEMS items (groups) or pairs, where a tenth of the labels is a real loss and a
    # second run is cheap. On large data it doubles the training time for little: CLINC150 val kNN
    # accuracy 0.9619 with it, 0.9610 without (5 seeds), Banking77 0.9374 / 0.9360 (3 seeds), STS-B
    # 0.8733 / 0.8732; and without it the "unknown" threshold is calibrated on the head that is served.
    refit: bool | None = None
    patience: int = 2  # epochs clearly worse than the best before stopping
    # Differences in the validation metric smaller than this are noise. None: one standard error of the
    # metric on the validation set (binomial for accuracy, Fisher-z based for Spearman).
    min_delta: float | None = None
    knn_k: int = 10
    seed: int = 0
    device: str | None = None  # None: SIMAPP_DEVICE or auto
    # Mixed precision for the head: bfloat16 on GPUs and CPUs that compute it natively, float16 on older
    # GPUs (see device.amp_dtype). Losses and the anchor always compute in float32.
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


def refits(config: TrainConfig, data: Data) -> bool:
    """Whether training ``data`` (without a separate validation set) ends with a refit on all of it."""
    if config.refit is None:
        return len(data) <= REFIT_MAX_ITEMS
    return config.refit


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
def _embed(
    head: Head, x: torch.Tensor, chunk: int = 8192, autocast_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """The head's outputs (N, D_out) as float32; with ``autocast_dtype``, computed in that precision."""
    head.eval()
    with torch.autocast(
        x.device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None
    ):
        return torch.cat([head(x[i : i + chunk]).float() for i in range(0, len(x), chunk)])


@dataclass
class _Validation:
    metric: float
    # Groups: each validation item's mean distance to its ``knn_k`` nearest training items (Q,).
    distances: np.ndarray | None = None


def _validate(
    head: Head,
    train: Data,
    val: Data,
    config: TrainConfig,
    device: torch.device,
    *,
    exact: bool = True,
) -> _Validation:
    """The validation metric of ``head``: kNN accuracy of ``val`` against ``train`` (groups) or the
    Spearman correlation of the pairs' similarities (pairs).

    ``exact=False`` (groups only) embeds in the training precision: re-embedding every training item
    after every epoch in float32 cost on 2 CPU cores about as much as the epoch's optimisation, and the
    per-epoch figures only choose the epoch; the trainer computes the chosen epoch's again exactly.
    """
    if isinstance(val, GroupData):
        assert isinstance(train, GroupData)
        low = None if exact or not config.amp else amp_dtype(device)
        index = _embed(head, torch.from_numpy(train.embeddings).to(device), autocast_dtype=low).cpu()
        queries = _embed(head, torch.from_numpy(val.embeddings).to(device), autocast_dtype=low).cpu()
        dists, idx = nearest_neighbors(queries, index, config.knn_k, distance=config.distance)
        predicted = knn_predict(np.asarray(train.labels)[idx], dists)
        accuracy = float(np.mean(predicted == np.asarray(val.labels)))
        return _Validation(accuracy, dists.mean(axis=1).astype(np.float64))
    items = _embed(head, torch.from_numpy(val.embeddings).to(device)).cpu()
    a, b = items[val.pairs[:, 0]], items[val.pairs[:, 1]]
    # Spearman over negated distances: for cosine it is the cosine order, for Euclidean the nearness.
    return _Validation(spearman(-paired_distance(a, b, config.distance).numpy(), val.scores))


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
        if y.shape[1] != x.shape[1]:
            x = torch.nn.functional.pad(x, (0, y.shape[1] - x.shape[1]))  # (B, D_out)
        total = total + (y.float() - x.float()).pow(2).sum(1).mean()
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
    # The chosen head's validation in full precision (groups: with the held-out items' distances).
    validation: _Validation | None = None


class TrainStep:
    """One optimisation step of the trainer, built once per run: the head, the loss, AdamW and the
    learning-rate schedule, applied to one batch of row indices of ``train_data``.

    ``rows`` maps row indices (n,) to the encoder outputs of those rows (n, D); by default they are
    gathered from ``train_data.embeddings`` (the cached vectors). ``bench.learning`` times the same
    step with ``rows`` running the encoder, which is what "training without the cache" costs.
    """

    def __init__(
        self,
        config: TrainConfig,
        train_data: Data,
        *,
        loss_name: str,
        device: torch.device,
        rows: Callable[[np.ndarray], torch.Tensor] | None = None,
    ) -> None:
        self.is_groups = isinstance(train_data, GroupData)
        self.autocast_dtype = amp_dtype(device) if config.amp else None
        self.anchor_weight = config.anchor_weight
        self.device = device
        lr = config.learning_rate or (DEFAULT_GROUP_LR if self.is_groups else DEFAULT_PAIR_LR)
        self.head = create_head(config.head, train_data.dim, **config.head_kwargs).to(device)
        self.loss_fn = _build_loss(loss_name, config, train_data, self.head.output_dim).to(device)
        self.params = list(self.head.parameters()) + list(self.loss_fn.parameters())
        x_all = torch.from_numpy(train_data.embeddings).to(device)  # (N, D)
        self.rows = rows or (lambda idx: torch.index_select(x_all, 0, torch.from_numpy(idx).to(device)))
        if isinstance(train_data, GroupData):
            self.codes = train_data.codes
            self.codes_t = torch.from_numpy(self.codes).to(device)
        else:
            self.pairs = train_data.pairs
            self.scores_t = torch.from_numpy(train_data.scores).to(device)
        if config.schedule not in ("onecycle", "constant"):
            raise ValueError(f"Unknown schedule {config.schedule!r}; valid: onecycle, constant")
        self.lr, self.schedule_name, self.warmup_fraction = lr, config.schedule, config.warmup_fraction
        self.optimizer: FusedAdamW | torch.optim.Optimizer | None = None
        self.scheduler: OneCycle | torch.optim.lr_scheduler.LRScheduler | None = None
        # Only float16 needs loss scaling: bfloat16 has the exponent range of float32.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.autocast_dtype == torch.float16)
        if self.params:
            # The fused kernel updates all parameters in one pass: on 2 CPU cores the optimizer step of
            # the default head fell from 5.4 to 1.1 ms (of a 14 ms step). Without a gradient scaler it is
            # called without torch.optim, which costs a second of start-up (see simapp.learning.optim).
            if self.scaler.is_enabled():
                self.optimizer = torch.optim.AdamW(
                    self.params, lr=lr, weight_decay=config.weight_decay, fused=True
                )
            else:
                self.optimizer = FusedAdamW(self.params, lr=lr, weight_decay=config.weight_decay)

    def schedule(self, total_steps: int) -> None:
        """Set the learning-rate schedule for a run of ``total_steps`` steps (one-cycle or constant)."""
        if self.optimizer is None or self.schedule_name != "onecycle" or total_steps < 4:
            self.scheduler = None  # below four steps in all there is no schedule to speak of
            return
        # OneCycleLR divides by zero when its warm-up ends on step 0 (warm-up share x steps == 1), so the
        # warm-up takes at least two steps.
        warmup = min(0.5, max(self.warmup_fraction, 2.0 / total_steps))
        if isinstance(self.optimizer, FusedAdamW):
            self.scheduler = OneCycle(
                self.optimizer, max_lr=self.lr, total_steps=total_steps, pct_start=warmup
            )
        else:
            self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
                self.optimizer, max_lr=self.lr, total_steps=total_steps, pct_start=warmup
            )

    def sampler(self, batch_size: int, samples_per_class: int, rng: np.random.Generator) -> Sampler:
        """Batches for this step: m-per-class for groups (m = 2 when a pair loss learns from groups),
        shuffled otherwise."""
        if self.is_groups:
            m = 2 if self.loss_fn.input_kind == "pairs" else samples_per_class
            return MPerClassSampler(self.codes, m=m, batch_size=batch_size, rng=rng)
        return ShuffleSampler(len(self.pairs), batch_size=batch_size, rng=rng)

    def __call__(self, batch: np.ndarray) -> torch.Tensor:
        """Forward, backward and update on ``batch`` (row indices for groups, pair indices for pairs);
        returns the loss (detached, on the device: reading it is the caller's choice)."""
        assert self.optimizer is not None, "nothing to train"
        # The inputs are gathered (or computed, for the benchmark) before autocast: an encoder behind
        # ``rows`` runs as it does when it fills the cache.
        group_loss = self.is_groups and self.loss_fn.input_kind == "groups"
        if group_loss:
            inputs = [self.rows(batch)]  # (B, D)
        else:
            if self.is_groups:
                left, right, pair_scores = _group_pair_batch(
                    batch, self.codes, with_negatives=self.loss_fn.name != "mnrl"
                )
                target = torch.from_numpy(pair_scores).to(self.device)
            else:
                left, right = self.pairs[batch, 0], self.pairs[batch, 1]
                target = self.scores_t[torch.from_numpy(batch).to(self.device)]
            inputs = [self.rows(left), self.rows(right)]  # 2 x (B, D)
        with torch.autocast(
            device_type=self.device.type,
            dtype=self.autocast_dtype or torch.bfloat16,  # the dtype is unused when disabled
            enabled=self.autocast_dtype is not None,
        ):
            outputs = [self.head(x) for x in inputs]
            if group_loss:
                loss = self.loss_fn(outputs[0], self.codes_t[torch.from_numpy(batch).to(self.device)])
            else:
                loss = self.loss_fn(outputs[0], outputs[1], target)
            if self.anchor_weight:
                loss = loss + self.anchor_weight * _anchor_penalty(inputs, outputs)
        self.optimizer.zero_grad()
        if isinstance(self.optimizer, FusedAdamW):
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach()


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
    batch_size = config.batch_size or (
        DEFAULT_GROUP_BATCH if isinstance(train_data, GroupData) else DEFAULT_PAIR_BATCH
    )
    # Same seed for every stage: the refit starts from the same head and batch order as selection.
    rng = np.random.default_rng(config.seed + 1)
    torch.manual_seed(config.seed)
    step = TrainStep(config, train_data, loss_name=loss_name, device=device)
    head, loss_fn = step.head, step.loss_fn
    sampler = step.sampler(batch_size, config.samples_per_class, rng)
    steps = len(sampler)
    step.schedule(epochs * steps)

    stopper = EarlyStopping(patience=config.patience)
    initial_metric = None
    if val_data is not None:
        initial = _validate(head, train_data, val_data, config, device)  # the identity: exact anyway
        initial_metric = initial.metric
        stopper.update(0, initial_metric, _tolerance(config, initial_metric, val_data))
    if not step.params or epochs == 0:  # the identity head has nothing to train
        return _Fit(
            head, loss_fn, [], stopper, initial_metric, False, initial if val_data is not None else None
        )
    report_every = max(1, steps // max(1, config.progress_every))

    history: list[EpochRecord] = []
    best_state = copy.deepcopy(head.state_dict())
    stopped_early = False
    for epoch in range(1, epochs + 1):
        epoch_start = time.perf_counter()
        head.train()
        loss_fn.train()
        total, count = 0.0, 0
        for batch_number, batch in enumerate(sampler, start=1):
            if should_cancel is not None and should_cancel():
                raise TrainingCancelled(epoch, batch_number)
            value = float(step(batch))
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"Loss became {value} at epoch {epoch}, step {batch_number}; lower the learning rate"
                )
            total += value
            count += 1
            if on_progress is not None and (batch_number % report_every == 0 or batch_number == steps):
                on_progress(
                    Progress(
                        stage, epoch, epochs, batch_number, steps, total / count, None, stopper.best_metric
                    )
                )
        train_seconds = time.perf_counter() - epoch_start

        metric = None
        if val_data is not None:
            metric = _validate(head, train_data, val_data, config, device, exact=False).metric
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
    validation = None
    if isinstance(val_data, GroupData):
        # The chosen epoch's figure again in full precision: what the returned head really scores.
        if stopper.best_epoch == 0:
            validation = initial
        else:
            validation = _validate(head, train_data, val_data, config, device)
            history[stopper.best_epoch - 1].val_metric = validation.metric
            stopper.best_metric = validation.metric
    return _Fit(head, loss_fn, history, stopper, initial_metric, stopped_early, validation)


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
    training data is held out to choose the number of epochs, and then (``config.refit``, by default on
    small data) a fresh head is trained on all of ``data`` for that many epochs, so no labelled item is
    wasted on validation.
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
    refit = refits(config, data) and val is None and val_data is not None and best_epoch > 0
    final = selection
    if refit:
        final = _fit(config, data, None, epochs=best_epoch, stage="refit", **common)

    holdout_scores = None
    if isinstance(val_data, GroupData) and val is None and selection.validation is not None:
        holdout_scores = selection.validation.distances
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
