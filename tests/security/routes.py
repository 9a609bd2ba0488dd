"""Every URL pattern the project routes, walked from Django's resolver, each with a concrete path."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.exceptions import Resolver404
from django.utils.regex_helper import normalize

from apps.datasets.models import Dataset
from apps.training.models import ModelVersion, TrainingRun
from tests.factories import DatasetFactory, ItemFactory, PairFactory

# HTML pages under /api/: they redirect to the login page like every other page.
API_PAGES = {"api/docs/", "api/redoc/"}
SAMPLE_PK = 4242  # the primary key of every sample object, so any <pk> in a URL names a real one


@dataclass(frozen=True)
class Route:
    """One URL pattern, and a concrete path that the resolver sends to it."""

    template: str  # the pattern with its parameters as %(name)s, e.g. "datasets/%(slug)s/"
    path: str  # "/datasets/d/"

    @property
    def kind(self) -> str:
        if self.template.startswith("admin/"):
            return "admin"
        if self.template.startswith("api/") and self.template not in API_PAGES:
            return "api"
        return "page"


def _patterns(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
    for pattern in patterns:
        regex = prefix + pattern.pattern.regex.pattern.removeprefix("^")
        if isinstance(pattern, URLResolver):
            yield from _patterns(pattern.url_patterns, regex)
        else:
            yield regex, pattern


def routes(samples: dict[str, list[str]]) -> list[Route]:
    """Every URL pattern of the project, each with a path made from ``samples`` (candidate values per
    parameter name) that resolves to that very pattern.

    A pattern that an earlier one shadows (its paths all resolve elsewhere) is unreachable, so it is left
    out; the pattern that answers instead is walked in its own right.
    """
    found = []
    for regex, pattern in _patterns(get_resolver().url_patterns):
        ((template, params),) = normalize(regex)
        missing = [name for name in params if name not in samples]
        assert not missing, f"no sample value for {missing} of the URL pattern {regex!r}: add one to samples"
        shadowed = False
        for values in itertools.product(*(samples[name] for name in params)):
            path = "/" + template % dict(zip(params, values, strict=True))
            try:
                match = resolve(path)
            except Resolver404:
                continue
            if match.func is pattern.callback:
                found.append(Route(template, path))
                break
            shadowed = True
        else:
            assert shadowed, f"no sample path resolves to the URL pattern {regex!r}: add sample values"
    return found


def sample_values(staff_user: Any) -> dict[str, list[str]]:
    """Candidate values of every URL parameter, with real objects behind them: a view that forgot its
    permission check answers as it would in use (200), not 404."""
    dataset = DatasetFactory(slug="d", pk=SAMPLE_PK)
    item = ItemFactory(dataset=dataset, label="a", pk=SAMPLE_PK)
    other = ItemFactory(dataset=dataset, label="a")
    PairFactory(dataset=dataset, item_a=item, item_b=other, annotator=staff_user, pk=SAMPLE_PK)
    run = TrainingRun.objects.create(dataset=dataset, status=TrainingRun.Status.SUCCEEDED, pk=SAMPLE_PK)
    ModelVersion.objects.create(dataset=dataset, run=run, number=1, collection="d.index_v1", pk=SAMPLE_PK)
    return {
        "slug": ["d"],
        "pk": [str(SAMPLE_PK)],
        "object_id": [str(SAMPLE_PK)],
        "id": [str(staff_user.pk)],
        "content_type_id": [str(ContentType.objects.get_for_model(Dataset).pk)],
        "app_label": ["datasets"],
        "fmt": ["csv", "jsonl"],
        "format": ["json", ".json"],
        "url": ["no-such-page/"],
    }
