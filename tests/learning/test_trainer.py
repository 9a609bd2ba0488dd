from __future__ import annotations

import numpy as np
import pytest
import torch

from simapp.learning import (
    GroupData,
    PairData,
    Progress,
    TrainConfig,
    TrainingCancelled,
    VectorEncoder,
    default_loss_name,
    knn_accuracy,
    nearest_neighbors,
    train,
)
from simapp.learning.device import amp_dtype
from simapp.learning.trainer import REFIT_MAX_ITEMS, EarlyStopping, TrainStep, _split_holdout, refits


def _groups(seed: int = 0, n_classes: int = 6, per_class: int = 40, dim: int = 16) -> GroupData:
    """Classes that differ in 4 dimensions, drowned in noise on the other 12: cosine kNN on the raw
    vectors is poor, and a head that learns to ignore the noisy dimensions improves it a lot."""
    centres = np.zeros((n_classes, dim))
    centres[:, :4] = np.random.default_rng(0).normal(size=(n_classes, 4)) * 1.5  # same classes for every seed
    rng = np.random.default_rng(seed + 1)
    codes = np.repeat(np.arange(n_classes), per_class)
    x = centres[codes] + 0.3 * rng.normal(size=(len(codes), dim))
    x[:, 4:] += 2.0 * rng.normal(size=(len(codes), dim - 4))
    return GroupData(x, np.array([f"class-{c}" for c in codes]))


def _pairs(seed: int = 0, n: int = 200, dim: int = 16) -> PairData:
    rng = np.random.default_rng(seed)
    left = rng.normal(size=(n, dim))
    right = left + rng.normal(size=(n, dim)) * rng.uniform(0.1, 2.0, size=(n, 1))
    scores = 1 / (1 + np.linalg.norm(left - right, axis=1))
    return PairData.from_vectors(left, right, scores)


# 216 training items (10% of each class held out), 6 classes x 4 per batch -> 9 steps per epoch.
FAST = {"epochs": 3, "batch_size": 24, "learning_rate": 1e-2, "head_kwargs": {"hidden_dim": 64}}


def test_seeded_run_is_reproducible_on_cpu() -> None:
    data = _groups()
    config = TrainConfig(seed=7, device="cpu", **FAST)

    first = train(config, data)
    second = train(config, data)
    other_seed = train(TrainConfig(seed=8, device="cpu", **FAST), data)

    assert first.loss_history == second.loss_history
    for key, value in first.head.state_dict().items():
        assert torch.equal(value, second.head.state_dict()[key])
    assert first.loss_history != other_seed.loss_history


def test_group_training_improves_the_held_out_knn_accuracy() -> None:
    data = _groups()

    result = train(TrainConfig(device="cpu", **{**FAST, "epochs": 10}), data)

    assert result.loss_name == "supcon"
    assert result.metric_name == "knn_accuracy"
    assert result.n_val == 24  # 10% of each class of 40 held out to choose the epoch count ...
    assert result.n_train == 240  # ... then the head is trained again on all of it
    assert len(result.refit_history) == result.best_epoch > 0
    assert result.initial_metric < 0.6
    assert result.best_metric > result.initial_metric + 0.2
    assert result.device == "cpu"
    assert len(result.history) == result.epochs_run
    assert result.history[-1].train_loss < result.history[0].train_loss


def test_pair_training_defaults_to_cosent_and_reports_spearman() -> None:
    data = _pairs()

    result = train(TrainConfig(device="cpu", epochs=2, batch_size=32, head_kwargs={"hidden_dim": 64}), data)

    assert result.loss_name == "cosent"
    assert result.metric_name == "spearman"
    assert (result.n_train, result.n_val) == (200, 20)
    assert -1.0 <= result.best_metric <= 1.0


def test_default_loss_follows_the_data_and_its_distance() -> None:
    assert default_loss_name(_groups()) == "supcon"
    assert default_loss_name(_pairs()) == "cosent"
    assert default_loss_name(_groups(), "euclidean") == "triplet"
    assert default_loss_name(_pairs(), "euclidean") == "contrastive"


@pytest.mark.parametrize("loss", ["mnrl", "contrastive", "triplet", "arcface"])
def test_every_group_compatible_loss_trains(loss: str) -> None:
    result = train(TrainConfig(device="cpu", loss=loss, **FAST), _groups())

    assert result.loss_name == loss
    assert result.epochs_run == 3
    assert all(np.isfinite(result.loss_history))


def test_pairs_with_a_group_loss_are_refused() -> None:
    with pytest.raises(ValueError, match="needs group labels"):
        train(TrainConfig(device="cpu", loss="supcon", **FAST), _pairs())


def test_unknown_loss_is_refused_with_the_valid_names() -> None:
    with pytest.raises(ValueError, match="valid: contrastive, cosent"):
        train(TrainConfig(device="cpu", loss="nope", **FAST), _groups())


def test_progress_is_reported_up_to_completion() -> None:
    seen: list[Progress] = []

    result = train(TrainConfig(device="cpu", progress_every=100, **FAST), _groups(), on_progress=seen.append)

    # Selection: every one of the 9 steps (216 items), then each epoch's end with its validation metric;
    # refit: 10 steps (240 items) per epoch for the chosen number of epochs, without validation.
    selection = [("train", e, s) for e in (1, 2, 3) for s in [*range(1, 10), 9]]
    refit = [("refit", e, s) for e in range(1, result.best_epoch + 1) for s in [*range(1, 11), 10]]
    assert [(p.stage, p.epoch, p.step) for p in seen] == selection + refit
    assert seen[len(selection) - 1].fraction == 1.0
    assert seen[len(selection) - 1].val_metric is not None
    assert seen[-1].fraction == 1.0
    assert all(p.val_metric is None for p in seen if p.step < p.steps_per_epoch or p.stage == "refit")


def test_without_refit_the_head_of_the_chosen_epoch_is_returned() -> None:
    result = train(TrainConfig(device="cpu", refit=False, **FAST), _groups())

    assert (result.n_train, result.n_val) == (216, 24)
    assert result.refit_history == []


def test_cancel_flag_stops_between_batches() -> None:
    calls = 0

    def should_cancel() -> bool:
        nonlocal calls
        calls += 1
        return calls == 12

    with pytest.raises(TrainingCancelled) as cancelled:
        train(TrainConfig(device="cpu", **FAST), _groups(), should_cancel=should_cancel)

    assert (cancelled.value.epoch, cancelled.value.step) == (2, 3)
    assert calls == 12


def test_explicit_validation_set_is_used_instead_of_a_holdout() -> None:
    result = train(TrainConfig(device="cpu", **FAST), _groups(seed=0), val=_groups(seed=0, per_class=5))

    assert (result.n_train, result.n_val) == (240, 30)


def test_early_stopping_keeps_the_latest_epoch_within_noise_and_stops_after_patience() -> None:
    stopper = EarlyStopping(patience=2)
    chosen = [
        stopper.update(epoch, metric, tolerance=0.02)
        for epoch, metric in enumerate([0.50, 0.70, 0.69, 0.60, 0.69, 0.60, 0.55], start=1)
    ]

    # 0.69 is within 0.02 of the best 0.70, so the later epoch wins; 0.60 twice in a row stops it.
    assert chosen == [True, True, True, False, True, False, False]
    assert (stopper.best_epoch, stopper.best_metric, stopper.top_metric) == (5, 0.69, 0.70)
    assert stopper.should_stop


def test_early_stopping_stops_a_run_that_gets_worse_and_returns_the_chosen_epochs_head() -> None:
    data, val = _groups(), _groups(seed=1, per_class=10)
    # A constant learning rate this high makes the validation metric swing and then fall.
    config = TrainConfig(
        device="cpu", **{**FAST, "epochs": 10, "learning_rate": 20.0}, schedule="constant", anchor_weight=0.0
    )

    result = train(config, data, val=val)

    metrics = [record.val_metric for record in result.history]
    assert result.stopped_early
    assert result.epochs_run < 10
    assert result.best_epoch == result.epochs_run - config.patience
    assert result.best_metric == metrics[result.best_epoch - 1]
    # The head returned is the chosen epoch's, not the last one's.
    with torch.no_grad():
        index = result.head(torch.from_numpy(data.embeddings))
        queries = result.head(torch.from_numpy(val.embeddings))
    assert knn_accuracy(queries, val.labels, index, data.labels, k=10) == result.best_metric


def test_identity_anchor_keeps_the_head_near_the_encoder_space() -> None:
    data = _groups()
    x = torch.from_numpy(data.embeddings)

    def drift(anchor_weight: float) -> float:
        result = train(TrainConfig(device="cpu", anchor_weight=anchor_weight, **FAST), data)
        with torch.no_grad():
            return float((result.head(x) - x).pow(2).sum(1).mean())

    free, anchored = drift(0.0), drift(100.0)

    assert free > 1.0
    assert anchored < 0.05 * free


def test_euclidean_data_trains_with_a_euclidean_triplet_loss() -> None:
    raw = _groups()
    encoder = VectorEncoder.fit(raw.embeddings)
    data = GroupData(encoder.encode(raw.embeddings), raw.labels)

    result = train(TrainConfig(device="cpu", distance=encoder.distance, **{**FAST, "epochs": 6}), data)

    assert result.loss_name == "triplet"
    assert (result.loss_config["distance"], result.loss_config["margin"]) == ("euclidean", 1.0)
    assert result.best_metric > result.initial_metric


def test_identity_head_has_nothing_to_train_and_reports_the_frozen_metric() -> None:
    result = train(TrainConfig(device="cpu", head="identity", **{**FAST, "head_kwargs": {}}), _groups())

    assert (result.epochs_run, result.best_epoch, result.refit_history) == (0, 0, [])
    assert result.best_metric == result.initial_metric
    x = torch.ones(2, 16)
    assert torch.equal(result.head(x), x)


@pytest.mark.parametrize(("capability", "dtype"), [((7, 5), torch.float16), ((8, 0), torch.bfloat16)])
def test_mixed_precision_follows_the_gpu(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], dtype: torch.dtype
) -> None:
    # Stands in for GPUs this machine does not have (the real path runs in bench.learning on one).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert amp_dtype(torch.device("cuda")) == dtype


def test_mixed_precision_follows_the_cpu() -> None:
    native_bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert amp_dtype(torch.device("cpu")) == (torch.bfloat16 if native_bf16 else None)


def test_training_without_mixed_precision_learns_as_well() -> None:
    data = _groups()

    full = train(TrainConfig(device="cpu", amp=False, **{**FAST, "epochs": 10}), data)
    mixed = train(TrainConfig(device="cpu", **{**FAST, "epochs": 10}), data)

    assert full.best_metric > full.initial_metric + 0.2
    assert abs(full.best_metric - mixed.best_metric) <= 0.1
    assert all(p.dtype == torch.float32 for p in mixed.head.parameters())  # master weights stay float32


@pytest.mark.parametrize("epochs", [1, 2, 3, 5, 10, 20])
def test_the_one_cycle_schedule_works_for_any_number_of_steps(epochs: int) -> None:
    # One batch per epoch. OneCycleLR itself divides by zero when warm-up share x steps is exactly 1
    # (10 steps with the default 10% warm-up).
    data = _pairs(n=40)
    config = TrainConfig(device="cpu", epochs=epochs, batch_size=64, val_fraction=0.0, refit=False)

    result = train(config, data, val=data)

    assert 1 <= len(result.loss_history) <= epochs


@pytest.mark.parametrize("loss", ["supcon", "cosent"])
def test_train_step_is_the_step_that_train_runs(loss: str) -> None:
    # bench.learning times TrainStep to measure what an epoch of training costs: it must be train()'s own.
    data = _groups()
    config = TrainConfig(device="cpu", loss=loss, val_fraction=0.0, **FAST)

    result = train(config, data)
    torch.manual_seed(config.seed)
    step = TrainStep(config, data, loss_name=loss, device=torch.device("cpu"))
    sampler = step.sampler(
        FAST["batch_size"], config.samples_per_class, np.random.default_rng(config.seed + 1)
    )
    step.schedule(FAST["epochs"] * len(sampler))
    losses = [float(step(batch)) for _ in range(FAST["epochs"]) for batch in sampler]

    assert len(losses) == FAST["epochs"] * len(sampler)
    assert [round(v, 6) for v in result.loss_history] == [
        round(float(np.mean(losses[i : i + len(sampler)])), 6) for i in range(0, len(losses), len(sampler))
    ]
    for key, value in result.head.state_dict().items():
        assert torch.equal(value, step.head.state_dict()[key])


def test_train_step_can_read_its_rows_from_elsewhere() -> None:
    # The benchmark's uncached epoch: rows come from a function (there, the encoder) instead of the cache.
    data = _groups()
    config = TrainConfig(device="cpu", **FAST)
    asked: list[list[int]] = []

    def rows(idx: np.ndarray) -> torch.Tensor:
        # An encoder here must run as it does when it fills the cache: not under the head's autocast.
        assert not torch.is_autocast_enabled("cpu")
        asked.append(idx.tolist())
        return torch.from_numpy(data.embeddings[idx])

    torch.manual_seed(0)
    cached = TrainStep(config, data, loss_name="supcon", device=torch.device("cpu"))
    torch.manual_seed(0)
    computed = TrainStep(config, data, loss_name="supcon", device=torch.device("cpu"), rows=rows)
    batch = next(iter(cached.sampler(24, 4, np.random.default_rng(0))))

    assert float(cached(batch)) == float(computed(batch))
    assert asked == [batch.tolist()]


def test_by_default_only_small_data_is_refit_on_all_items() -> None:
    small, large = _groups(per_class=40), _groups(per_class=350)  # 240 and 2,100 items
    assert REFIT_MAX_ITEMS == 2000
    assert refits(TrainConfig(), small) and not refits(TrainConfig(), large)
    assert refits(TrainConfig(refit=True), large) and not refits(TrainConfig(refit=False), small)

    kept = train(TrainConfig(device="cpu", **FAST), large)
    refit = train(TrainConfig(device="cpu", **FAST), small)

    # Large data: the chosen epoch's head, trained without the held-out items (which calibrate it).
    assert (kept.refit_history, kept.n_train, kept.n_val) == ([], 1890, 210)
    assert kept.holdout_scores is not None and len(kept.holdout_scores) == 210
    assert len(refit.refit_history) == refit.best_epoch and refit.n_train == 240


def test_the_chosen_epochs_figures_are_exact_for_the_returned_head() -> None:
    # Epochs are compared in the training precision; the chosen one's accuracy and the held-out items'
    # distances (which calibrate "unknown") are those of the returned head in full precision.
    data = _groups(per_class=350)  # large enough not to refit: the returned head is the chosen one
    result = train(TrainConfig(device="cpu", **FAST), data)
    train_part, held_out = _split_holdout(data, 0.1, np.random.default_rng(0))

    with torch.no_grad():
        index = result.head(torch.from_numpy(train_part.embeddings))
        queries = result.head(torch.from_numpy(held_out.embeddings))
    dists, _ = nearest_neighbors(queries, index, 10)

    assert result.refit_history == [] and result.best_epoch == FAST["epochs"]
    assert result.best_metric == knn_accuracy(queries, held_out.labels, index, train_part.labels, k=10)
    assert result.history[-1].val_metric == result.best_metric
    np.testing.assert_allclose(result.holdout_scores, dists.mean(axis=1), rtol=1e-6)
