"""The retrain form of the training console: the options of ``POST /api/datasets/<slug>/runs/``, as a form."""

from __future__ import annotations

from typing import Any

from django import forms

from simapp.learning import HEAD_NAMES, LOSS_NAMES
from simapp.learning.trainer import DEFAULT_GROUP_BATCH, DEFAULT_GROUP_LR, DEFAULT_PAIR_BATCH, DEFAULT_PAIR_LR

_HEAD_HELP = {
    "identity": "identity: no training, index with the frozen encoder",
    "skip": "skip: encoder plus a learned correction",
    "linear": "linear",
    "mlp": "mlp (default)",
}


class RetrainForm(forms.Form):
    """Bounds as in ``apps.training.api.TrainInputSerializer``; names are checked again by
    ``train_config_from``. A blank field takes the data-dependent default of the trainer."""

    head = forms.ChoiceField(
        choices=[(name, _HEAD_HELP.get(name, name)) for name in HEAD_NAMES], initial="mlp"
    )
    loss = forms.ChoiceField(
        choices=[("", "default (follows the data)")] + [(name, name) for name in LOSS_NAMES], required=False
    )
    epochs = forms.IntegerField(
        required=False, min_value=1, max_value=1000, help_text="Maximum; blank: 10 for labels, 6 for pairs."
    )
    lr = forms.FloatField(
        label="Learning rate",
        required=False,
        min_value=1e-7,
        max_value=1.0,
        help_text=(
            f"Peak of the one-cycle schedule; blank: {DEFAULT_GROUP_LR:g} for labels, "
            f"{DEFAULT_PAIR_LR:g} for pairs."
        ),
    )
    batch_size = forms.IntegerField(
        label="Batch size",
        required=False,
        min_value=2,
        max_value=65536,
        help_text=f"Blank: {DEFAULT_GROUP_BATCH} for labels, {DEFAULT_PAIR_BATCH} for pairs.",
    )
    seed = forms.IntegerField(required=False, min_value=0, max_value=2**32 - 1, initial=0)

    def options(self) -> dict[str, Any]:
        """The options given (blank ones left out), for ``train_config_from``."""
        return {name: value for name, value in self.cleaned_data.items() if value not in (None, "")}
