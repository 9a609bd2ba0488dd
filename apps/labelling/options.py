"""The labelling options a dataset keeps in ``Dataset.settings`` (JSON), read with safe defaults.

=======================  ===========  ==================================================================
key                      default      meaning
=======================  ===========  ==================================================================
``label_mode``           ``"binary"`` ``"binary"``: similar (1) / dissimilar (0). ``"graded"``: 1 to 5,
                                      stored as ``(n - 1) / 4`` (0, 0.25, 0.5, 0.75, 1).
``annotators_per_pair``  ``1``        How many people should label each pair (1 to 10). From 2 up, the
                                      ``review`` strategy offers pairs that have fewer annotators than
                                      that, and agreement between annotators becomes meaningful.
``label_target``         ``100``      The pairs each labeller aims for (1 to 1,000,000): the progress bar.
``uncertain_threshold``  ``null``     The decision threshold of the ``uncertain`` strategy. ``null``: set
                                      from the data at each request (see ``apps.labelling.queue``). A
                                      number in (0, 1): a fixed [0, 1] score, ``(cos + 1) / 2`` (the
                                      package's convention, ``simapp.learning.similarity``): 0.5 is
                                      cosine 0. Cosine indexes only; Euclidean ones always use the data.
=======================  ===========  ==================================================================

The dataset API refuses a settings object with an unusable value for these keys (as for the serving
keys of ``apps.datasets.options``). A value stored some other way (the admin, the database) that cannot
be used falls back to its default here, and ``problems`` says so for the labelling page to show: a bad
setting never stops labelling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from apps.datasets.models import Dataset

LABEL_MODES = ("binary", "graded")
MAX_ANNOTATORS_PER_PAIR = 10
MAX_LABEL_TARGET = 1_000_000
GRADES = 5  # graded mode: 1..5


@dataclass(frozen=True)
class LabellingOptions:
    label_mode: str = "binary"
    annotators_per_pair: int = 1
    label_target: int = 100
    uncertain_threshold: float | None = None
    problems: tuple[str, ...] = ()

    @property
    def graded(self) -> bool:
        return self.label_mode == "graded"

    @classmethod
    def of(cls, dataset: Dataset) -> LabellingOptions:
        return cls.parse(dataset.settings)

    @classmethod
    def parse(cls, settings: dict[str, Any] | None) -> LabellingOptions:
        """The options in ``settings`` over the defaults; unusable values take the default, noted."""
        settings = settings if isinstance(settings, dict) else {}
        defaults = cls()
        problems: list[str] = []

        def take(name: str, ok: bool, default: Any, expected: str) -> Any:
            if name not in settings:
                return default
            if ok:
                return settings[name]
            problems.append(f"The setting {name} = {settings[name]!r} is not {expected}; using {default!r}.")
            return default

        mode = settings.get("label_mode")
        per_pair = settings.get("annotators_per_pair")
        target = settings.get("label_target")
        threshold = settings.get("uncertain_threshold")
        return cls(
            label_mode=take("label_mode", mode in LABEL_MODES, defaults.label_mode, '"binary" or "graded"'),
            annotators_per_pair=take(
                "annotators_per_pair",
                _integer(per_pair, 1, MAX_ANNOTATORS_PER_PAIR),
                defaults.annotators_per_pair,
                f"an integer from 1 to {MAX_ANNOTATORS_PER_PAIR}",
            ),
            label_target=take(
                "label_target",
                _integer(target, 1, MAX_LABEL_TARGET),
                defaults.label_target,
                f"an integer from 1 to {MAX_LABEL_TARGET:,}",
            ),
            uncertain_threshold=take(
                "uncertain_threshold",
                threshold is None or (_number(threshold) and 0.0 < threshold < 1.0),
                defaults.uncertain_threshold,
                "null or a number between 0 and 1",
            ),
            problems=tuple(problems),
        )

    def score_of(self, answer: str) -> float:
        """The [0, 1] score an answer button stands for; ``ValueError`` for anything else."""
        if self.graded:
            if answer in {str(n) for n in range(1, GRADES + 1)}:
                return (int(answer) - 1) / (GRADES - 1)
            raise ValueError(f"'{answer}' is not a grade from 1 to {GRADES}")
        if answer in ("0", "1"):
            return float(answer)
        raise ValueError(f"'{answer}' is not 1 (similar) or 0 (dissimilar)")


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _integer(value: Any, low: int, high: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and low <= value <= high
