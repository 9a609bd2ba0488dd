"""Device selection: CUDA when present, unless ``SIMAPP_DEVICE`` says otherwise."""

from __future__ import annotations

import os

import torch

DEVICE_ENV = "SIMAPP_DEVICE"


def resolve_device(requested: str | None = None) -> torch.device:
    """Return the torch device to run on.

    ``requested`` (or env ``SIMAPP_DEVICE`` when ``requested`` is None) may be ``"auto"`` (default),
    ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. Asking for CUDA on a machine without it raises
    ``ValueError`` instead of silently falling back, so a misconfigured GPU worker fails loudly.
    """
    name = (requested or os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{DEVICE_ENV}={name!r} but CUDA is not available on this machine")
    if device.type not in {"cpu", "cuda"}:
        raise ValueError(f"Unsupported device {name!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return device
