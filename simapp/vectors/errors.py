"""The exceptions every backend raises, so callers never catch a backend's own types.

The API maps ``VectorStoreUnavailable`` to 503 and ``CollectionNotFound`` to 404/409; anything else is a
bug or bad input (``ValueError`` for input that the caller could have checked).
"""

from __future__ import annotations


class VectorStoreError(Exception):
    """Base class of everything ``simapp.vectors`` raises on purpose."""


class VectorStoreUnavailable(VectorStoreError):
    """The store cannot be reached or used right now (server down, refused key, store held elsewhere)."""


class StoreLocked(VectorStoreUnavailable):
    """Another process holds the embedded store's directory; only one process may open it."""


class CollectionNotFound(VectorStoreError):
    """No collection (or alias) of that name exists."""


class ActivationError(VectorStoreError):
    """A freshly built collection failed its checks, so the alias was not switched."""
