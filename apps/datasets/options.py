"""The per-dataset options kept in ``Dataset.settings`` (JSON), with their defaults and their checks.

The API refuses a settings object whose known keys have unusable values, so serving never meets one.
Unknown keys are kept as they are (other tools may store their own options there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MAX_K = 200

DEFAULTS: dict[str, Any] = {
    "knn_k": 10,  # neighbours that vote in classification
    "unknown_rate": 0.05,  # share of in-scope items the "unknown" threshold may reject (calibration)
    "anomaly_k": 10,  # neighbours whose mean distance is an item's anomaly score
    "contamination": 0.05,  # expected share of anomalies: trims the normal reference set, sets the threshold
    "anomaly_threshold": None,  # an absolute anomaly-score threshold instead of the contamination quantile
}


@dataclass(frozen=True)
class DatasetOptions:
    knn_k: int
    unknown_rate: float
    anomaly_k: int
    contamination: float
    anomaly_threshold: float | None

    @classmethod
    def parse(cls, settings: dict[str, Any] | None) -> DatasetOptions:
        """The options in ``settings`` over the defaults; ``ValueError`` names the first bad one."""
        raw = {**DEFAULTS, **{k: v for k, v in (settings or {}).items() if k in DEFAULTS}}
        threshold = raw["anomaly_threshold"]
        if threshold is not None and not _number(threshold):
            raise ValueError(f"'anomaly_threshold' must be a number or null, not {threshold!r}")
        return cls(
            knn_k=_k(raw, "knn_k"),
            unknown_rate=_share(raw, "unknown_rate"),
            anomaly_k=_k(raw, "anomaly_k"),
            contamination=_share(raw, "contamination"),
            anomaly_threshold=None if threshold is None else float(threshold),
        )


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _k(raw: dict[str, Any], name: str) -> int:
    value = raw[name]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_K:
        raise ValueError(f"'{name}' must be an integer from 1 to {MAX_K}, not {value!r}")
    return value


def _share(raw: dict[str, Any], name: str) -> float:
    value = raw[name]
    if not _number(value) or not 0.0 <= value < 0.5:
        raise ValueError(f"'{name}' must be a number from 0 up to (not including) 0.5, not {value!r}")
    return float(value)
