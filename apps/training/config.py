"""What a retrain is asked to do: options from a person or program, checked against the learning core."""

from __future__ import annotations

from typing import Any

from apps.datasets.models import Dataset
from simapp.learning import HEAD_NAMES, LOSS_NAMES


class TrainConfigError(ValueError):
    """An option names something that does not exist; the message lists what does."""


_OPTIONS = ("loss", "head", "epochs", "lr", "batch_size", "seed")


def train_config_from(*, dataset: Dataset, options: dict[str, Any]) -> dict[str, Any]:
    """The run's stored config: the dataset's encoder plus the options given (others take defaults).

    Unknown loss or head names are refused here, before a run exists, with the list of valid names.
    """
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise TrainConfigError(f"unknown option '{unknown[0]}'; valid: {', '.join(_OPTIONS)}")
    config: dict[str, Any] = {"encoder": dataset.encoder}
    for name in _OPTIONS:
        value = options.get(name)
        if value is not None:
            config[name] = value
    if "loss" in config and config["loss"] not in LOSS_NAMES:
        raise TrainConfigError(f"unknown loss '{config['loss']}'; valid: {', '.join(LOSS_NAMES)}")
    if "head" in config and config["head"] not in HEAD_NAMES:
        raise TrainConfigError(f"unknown head '{config['head']}'; valid: {', '.join(HEAD_NAMES)}")
    return config
