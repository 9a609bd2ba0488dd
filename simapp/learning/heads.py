"""Trainable heads over frozen encoder outputs. Every head starts as the identity.

Starting at the identity means fine-tuning begins from the encoder's own geometry and adjusts it,
instead of starting from a random projection that first has to re-learn what the encoder already
knows. Heads: ``identity``, ``skip`` (gated residual, exactly the identity at initialisation),
``linear`` (identity matrix, or its rectangular extension), ``mlp`` (widening MLP, exactly the identity
at initialisation through ``relu(x) - relu(-x) = x``). Each saves as ``head_config.json`` +
``head.safetensors`` and loads back with :func:`load_head`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from simapp.learning.serialization import save_module

CONFIG_FILE = "head_config.json"
WEIGHTS_FILE = "head.safetensors"


@dataclass
class IdentityConfig:
    input_dim: int


@dataclass
class SkipConnectionConfig:
    input_dim: int
    hidden_dim: int | None = None  # None: the residual branch is one Linear(D, D)
    dropout: float = 0.0


@dataclass
class LinearConfig:
    input_dim: int
    output_dim: int | None = None  # None: same as input_dim


# Hidden width of the widening MLP, in input dimensions. A training step costs about in proportion to it
# (on 2 CPU cores an epoch over CLINC150 is 0.34 s at 3, against 0.57 s at 8 before the other speed-ups
# of the trainer). CLINC150 val kNN accuracy, trained with the refit on all items: 3 -> 0.9619 (5 seeds,
# batch 512, lr 1.5e-3), 4 -> 0.9616 (3 seeds, lr 1e-3), 8 with batch 256 (the earlier default) ->
# 0.9624 (3 seeds), 2 -> 0.9567 (1 seed). See BENCHMARKS.md.
DEFAULT_HIDDEN_FACTOR = 3


@dataclass
class WideningMLPConfig:
    input_dim: int
    # None: DEFAULT_HIDDEN_FACTOR * input_dim (see there).
    hidden_dim: int | None = None
    output_dim: int | None = None  # None: same as input_dim
    dropout: float = 0.0


class Head(nn.Module):
    """Maps encoder outputs (B, D_in) to embeddings (B, D_out)."""

    name: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    @property
    def input_dim(self) -> int:
        return self.config.input_dim

    @property
    def output_dim(self) -> int:
        return self.config.input_dim

    def get_config_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self.config)}

    def save(self, directory: str | Path) -> None:
        """Write ``head_config.json`` and ``head.safetensors`` into ``directory`` (created if needed)."""
        save_module(
            self, self.get_config_dict(), directory, config_file=CONFIG_FILE, weights_file=WEIGHTS_FILE
        )

    @classmethod
    def load(cls, directory: str | Path) -> Head:
        return load_head(directory)


class IdentityHead(Head):
    """No parameters: the frozen encoder's embeddings as they are."""

    name = "identity"
    config_class = IdentityConfig

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, D)
        return x


class SkipConnectionHead(Head):
    """``y = x + g * f(x)`` with a per-dimension gate ``g`` initialised to zero.

    At initialisation ``y == x`` exactly (``0 * f(x)`` is exactly zero for finite ``f(x)``). The gate
    gets gradient ``f(x)``, so it opens as training needs (ReZero-style). ``f`` is ``Linear(D, D)``,
    or ``Linear(D, H) -> ReLU -> Linear(H, D)`` when ``hidden_dim`` is set.
    """

    name = "skip"
    config_class = SkipConnectionConfig

    def __init__(self, config: SkipConnectionConfig) -> None:
        super().__init__(config)
        d, h = config.input_dim, config.hidden_dim
        if h is None:
            self.branch: nn.Module = nn.Linear(d, d)
        else:
            self.branch = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, d))
        self.dropout = nn.Dropout(config.dropout)
        self.gate = nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, D)
        return x + self.gate * self.branch(self.dropout(x))


class LinearHead(Head):
    """``y = W x + b``, initialised to ``W = I`` (rectangular: ``[I; 0]``) and ``b = 0``.

    With ``output_dim >= input_dim`` this is exactly the identity (zero-padded) at initialisation; with
    a smaller ``output_dim`` it starts as the projection on the first coordinates.
    """

    name = "linear"
    config_class = LinearConfig

    def __init__(self, config: LinearConfig) -> None:
        # Resolve defaults into the stored config, so a saved head never depends on today's defaults.
        super().__init__(replace(config, output_dim=config.output_dim or config.input_dim))
        self.linear = nn.Linear(config.input_dim, self.output_dim)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(self.output_dim, config.input_dim))
            self.linear.bias.zero_()

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D_in) -> (B, D_out)
        return self.linear(x)


class WideningMLPHead(Head):
    """``y = W2 relu(W1 x + b1) + b2`` with a hidden layer wider than the input (default 3 D).

    Initialisation makes it exactly the identity: the first ``2 D`` hidden units are ``relu(x)`` and
    ``relu(-x)`` (``W1 = [I; -I]``, zero bias) and ``W2`` reads them as ``relu(x) - relu(-x) = x``; the
    remaining hidden units start random with zero outgoing weights, so they contribute nothing until
    trained (their outgoing weights still get gradient, so they are not dead). Requires
    ``hidden_dim >= 2 * input_dim`` and ``output_dim >= input_dim``. Output dimensions beyond the
    input's start at zero and, under a cosine loss, get no gradient while every output is zero there
    (the gradient of a cosine lies in the span of the two vectors), so they stay zero: widen the
    hidden layer, not the output.
    """

    name = "mlp"
    config_class = WideningMLPConfig

    def __init__(self, config: WideningMLPConfig) -> None:
        # Resolve defaults into the stored config, so a saved head never depends on today's defaults.
        super().__init__(
            replace(
                config,
                hidden_dim=config.hidden_dim or DEFAULT_HIDDEN_FACTOR * config.input_dim,
                output_dim=config.output_dim or config.input_dim,
            )
        )
        d, h, o = config.input_dim, self.hidden_dim, self.output_dim
        if h < 2 * d:
            raise ValueError(f"mlp head needs hidden_dim >= 2 * input_dim ({2 * d}), got {h}")
        if o < d:
            raise ValueError(f"mlp head needs output_dim >= input_dim ({d}), got {o}")
        self.fc1 = nn.Linear(d, h)
        self.fc2 = nn.Linear(h, o)
        self.dropout = nn.Dropout(config.dropout)
        eye = torch.eye(d)
        with torch.no_grad():
            self.fc1.weight[: 2 * d] = torch.cat([eye, -eye])  # (2D, D)
            self.fc1.bias[: 2 * d] = 0.0
            self.fc2.weight.zero_()
            self.fc2.weight[:d, : 2 * d] = torch.cat([eye, -eye], dim=1)  # (D, 2D)
            self.fc2.bias.zero_()

    @property
    def hidden_dim(self) -> int:
        return self.config.hidden_dim

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D_in) -> (B, D_out)
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


HEADS: dict[str, type[Head]] = {
    cls.name: cls for cls in (IdentityHead, SkipConnectionHead, LinearHead, WideningMLPHead)
}
HEAD_NAMES: tuple[str, ...] = tuple(HEADS)


def create_head(name: str, input_dim: int, **kwargs: Any) -> Head:
    """Create a head by name (``identity``, ``skip``, ``linear``, ``mlp``) for ``input_dim`` inputs.

    Extra keyword arguments are fields of the head's config dataclass. Raises ``ValueError`` listing
    the valid names for an unknown one.
    """
    if name not in HEADS:
        raise ValueError(f"Unknown head {name!r}; valid: {', '.join(HEAD_NAMES)}")
    cls = HEADS[name]
    return cls(cls.config_class(input_dim=input_dim, **kwargs))


def head_from_config_dict(config: dict[str, Any]) -> Head:
    """Rebuild a (freshly initialised) head from :meth:`Head.get_config_dict` output."""
    config = dict(config)
    return create_head(config.pop("name"), **config)


def load_head(directory: str | Path) -> Head:
    """Load a head saved with :meth:`Head.save`; the result is in eval mode on the CPU."""
    path = Path(directory)
    head = head_from_config_dict(json.loads((path / CONFIG_FILE).read_text()))
    head.load_state_dict(safetensors.torch.load_file(str(path / WEIGHTS_FILE)), strict=True)
    return head.eval()
