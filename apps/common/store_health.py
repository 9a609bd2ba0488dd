"""Whether the vector store answers, asked at most once per few seconds, for pages and the labelling queue.

Pages that need the index (an item's neighbours, the anomaly dashboard, classification, the training
console, the labelling page) are marked with ``needs_index``; for them the context processor
``apps.common.context_processors.vector_store_banner`` offers ``vector_store_problem`` and ``base.html``
shows a banner when it is set. The check runs only when such a page of a dataset with an active model is
rendered: before the first model there is no index to reach, and an idle embedded store is not opened.

The probe lists the collections. Against a Qdrant server it uses its own client with a short timeout
(``PROBE_TIMEOUT_S``), not the 30 s of the process's client, so a server that hangs costs a page two
seconds, not thirty. The answer is kept ``TTL_S`` seconds per configured store (``QDRANT_URL`` or the
embedded store's directory), so under load one request per process and period pays for a probe; while a
probe runs, other requests take the previous answer rather than wait for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from simapp.vectors import VectorStoreError

TTL_S = 10.0  # how long an answer is reused
PROBE_TIMEOUT_S = 2  # seconds a Qdrant server has to answer the probe


@dataclass(frozen=True)
class _Answer:
    store: tuple[str, str]  # which store was asked: (QDRANT_URL, DATA_DIR)
    problem: str | None  # None: it answered
    at: float  # time.monotonic() of the answer


_lock = threading.Lock()  # held while probing: one probe at a time per process
_answer: _Answer | None = None


def forget() -> None:
    """Drop the remembered answer: the next question probes the store again (a store re-pointed at
    another server on the same address, as the fault tests do)."""
    global _answer
    _answer = None


def vector_store_problem() -> str | None:
    """Why the vector store cannot be used right now (its error), or None when it answered lately."""
    global _answer
    store = (settings.QDRANT_URL, str(settings.DATA_DIR))
    known = _answer
    if known is not None and known.store == store and time.monotonic() - known.at < TTL_S:
        return known.problem
    if not _lock.acquire(blocking=known is None or known.store != store):
        return known.problem if known is not None else None  # another thread is probing this store
    try:
        known = _answer  # a probe that finished while this thread waited for the lock is fresh enough
        if known is not None and known.store == store and time.monotonic() - known.at < TTL_S:
            return known.problem
        _answer = _Answer(store=store, problem=_probe(), at=time.monotonic())
        return _answer.problem
    finally:
        _lock.release()


def _probe() -> str | None:
    from apps.training.index import vector_store

    try:
        if settings.QDRANT_URL:
            from simapp.vectors.server import QdrantServerStore

            with QdrantServerStore(
                url=settings.QDRANT_URL, api_key=settings.QDRANT_API_KEY or None, timeout_s=PROBE_TIMEOUT_S
            ) as probe:
                probe.list_collections()
        else:
            vector_store().list_collections()
    except VectorStoreError as exc:
        return str(exc)
    return None


def needs_index(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Mark a page of one dataset (``slug`` in the URL) as needing the dataset's index: it shows the
    vector-store banner when the store does not answer."""

    @wraps(view)
    def marked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        request.index_dataset_slug = kwargs.get("slug")  # type: ignore[attr-defined]
        return view(request, *args, **kwargs)

    return marked
