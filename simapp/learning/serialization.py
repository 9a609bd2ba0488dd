"""Saving a module as a JSON config plus safetensors weights, shared by heads and losses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch
from torch import nn


def save_module(
    module: nn.Module, config: dict[str, Any], directory: str | Path, *, config_file: str, weights_file: str
) -> None:
    """Write ``config`` as ``config_file`` and the module's weights as ``weights_file`` into ``directory``."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    (path / config_file).write_text(json.dumps(config, indent=2))
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    safetensors.torch.save_file(state, str(path / weights_file))
