"""Server-side drawing of the loss curve: the geometry of an SVG line chart, computed in Python.

Django-free and without JavaScript: the template only places the numbers this module gives it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Tick:
    at: float  # pixel position along the axis
    label: str


@dataclass(frozen=True)
class LossChart:
    width: int
    height: int
    left: float
    top: float
    right: float
    bottom: float
    lines: list[str]  # one SVG polyline "x,y x,y …" per phase (selection, refit): never joined across
    dots: list[tuple[float, float, str]]  # (x, y, "epoch N: loss") of each point, for markers and titles
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    summary: str  # the chart in words, for screen readers
    phase_x: float | None = None  # where the refit on all items begins (a dashed line), when there is one

    @property
    def y_label_x(self) -> float:
        return self.left - 6

    @property
    def x_label_y(self) -> float:
        return self.bottom + 16

    @property
    def axis_label_y(self) -> float:
        return self.height - 2


def _label(value: float) -> str:
    return f"{value:.4g}"


def loss_chart(
    values: Sequence[float], *, refit_from: int | None = None, width: int = 560, height: int = 220
) -> LossChart | None:
    """The chart of ``values`` (one loss per epoch, in order), or None when there is nothing finite to draw.

    ``refit_from``: the index of the first refit epoch. Training first chooses the epoch count on held-out
    items, then trains again on all of them, counting epochs from 1 again; the chart numbers each phase's
    epochs and draws a dashed line between them.
    """
    losses = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not losses:
        return None
    left, top, right, bottom = 56.0, 12.0, width - 12.0, height - 34.0
    low, high = min(losses), max(losses)
    if high - low < 1e-12:  # a flat curve: centre it in a band around its value
        low, high = low - 0.5 * (abs(low) or 1.0), high + 0.5 * (abs(high) or 1.0)
    margin = (high - low) * 0.05
    low, high = low - margin, high + margin
    n = len(losses)

    def x_of(index: int) -> float:
        return left + (right - left) * (index / (n - 1) if n > 1 else 0.5)

    def y_of(value: float) -> float:
        return bottom - (bottom - top) * (value - low) / (high - low)

    y_ticks = [Tick(round(y_of(v), 1), _label(v)) for v in (low + (high - low) * f for f in (0.0, 0.5, 1.0))]
    step = max(1, math.ceil(n / 8))  # at most about eight epoch labels
    split = refit_from if refit_from is not None and 0 < refit_from < n else None

    def epoch_of(index: int) -> str:
        return str(index + 1 if split is None or index < split else index - split + 1)

    dots = [
        (round(x_of(i), 1), round(y_of(v), 1), f"epoch {epoch_of(i)}: {_label(v)}")
        for i, v in enumerate(losses)
    ]
    ends = {0, n - 1} | ({split - 1, split} if split else set())
    # Every step-th epoch is labelled, except beside a phase's first or last, whose labels always show.
    shown = sorted(ends | {i for i in range(0, n, step) if all(abs(x_of(i) - x_of(j)) >= 24 for j in ends)})
    x_ticks = [Tick(round(x_of(i), 1), epoch_of(i)) for i in shown]
    summary = (
        f"Loss over {n} epoch{'s' if n != 1 else ''}: from {_label(losses[0])} to {_label(losses[-1])}"
        f" (lowest {_label(min(losses))})."
    )
    if split:
        summary += (
            f" Epochs 1 to {split} chose the epoch count on held-out items; the rest refit on all items."
        )
    return LossChart(
        width=width,
        height=height,
        left=left,
        top=top,
        right=right,
        bottom=bottom,
        lines=[
            " ".join(f"{x},{y}" for x, y, _ in part)
            for part in ((dots[:split], dots[split:]) if split else (dots,))
        ],
        dots=dots,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        summary=summary,
        phase_x=round((x_of(split - 1) + x_of(split)) / 2, 1) if split else None,
    )
