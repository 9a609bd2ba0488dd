"""Template filters for training pages: a model version's headline metric, durations."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.filter
def headline_metric(metrics: Any) -> str:
    """ "knn_accuracy 0.912" from a version's metrics, "frozen encoder" for the identity head, else ""."""
    if not isinstance(metrics, dict):
        return ""
    value = metrics.get("value")
    if metrics.get("metric") and isinstance(value, int | float) and not isinstance(value, bool):
        return f"{metrics['metric']} {value:.3f}"
    if metrics.get("head") == "identity" or metrics.get("frozen") is True:
        return "frozen encoder"
    return ""


@register.filter
def duration(seconds: Any) -> str:
    """A duration for people: "<1 s", "42 s", "3 min 05 s", "1 h 02 min"."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return ""
    total = int(seconds)
    if seconds < 1:
        return "<1 s"
    if total < 60:
        return f"{total} s"
    if total < 3600:
        return f"{total // 60} min {total % 60:02d} s"
    return f"{total // 3600} h {total % 3600 // 60:02d} min"
