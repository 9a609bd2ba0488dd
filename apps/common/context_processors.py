"""Template context shared by every page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest


def vector_store_banner(request: HttpRequest) -> dict[str, Callable[[], str | None]]:
    """``vector_store_problem`` for pages marked with ``store_health.needs_index``: the store's error
    while it does not answer, else None. A callable, so the check runs only if the page renders it, and
    only for a dataset with an active model (before one there is no index to reach)."""
    slug: Any = getattr(request, "index_dataset_slug", None)
    if not slug:
        return {}

    def problem() -> str | None:
        from apps.common.store_health import vector_store_problem
        from apps.training.models import ModelVersion

        if not ModelVersion.objects.filter(dataset__slug=slug, is_active=True).exists():
            return None
        return vector_store_problem()

    return {"vector_store_problem": problem}
