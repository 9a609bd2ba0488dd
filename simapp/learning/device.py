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


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced precision that mixed-precision training uses on ``device``, or None for none.

    On CUDA, bfloat16 where the GPU computes it natively (compute capability 8.0 on: A100, H100, RTX 30
    and later), else float16 with a gradient scaler. bfloat16 needs no scaler, so the optimizer step stays
    off ``torch.optim``, whose first use imports ``torch._dynamo``: 5.6 s of an 8.4 s head training in a
    warm retrain on an H100 (see ``simapp.learning.optim``).

    On CPUs, bfloat16 where they compute it natively (AVX-512 BF16 or AMX, as oneDNN reports): there it
    runs the head's matrix products several times faster than float32 (29 ms -> 8 ms for one step of the
    default head on 2 Xeon cores) and needs no scaler. Other CPUs would emulate it, slower than float32,
    so they get None.
    """
    if device.type == "cuda":
        native_bf16 = torch.cuda.is_available() and torch.cuda.get_device_capability(device) >= (8, 0)
        return torch.bfloat16 if native_bf16 else torch.float16
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        try:
            supported = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # private probe: absent from some builds
            supported = False
        return torch.bfloat16 if supported else None
    return None
