"""The import limits of this server (settings ``SIMAPP_MAX_UPLOAD_MB``, ``SIMAPP_MAX_IMPORT_ROWS``), in
words for the user. Free of DRF, so management commands can use them without importing the API."""

from __future__ import annotations

from django.conf import settings


def upload_limit_bytes() -> int:
    return int(settings.SIMAPP_MAX_UPLOAD_BYTES)


def upload_too_large(size: int, *, what: str = "the upload") -> str | None:
    """The user-facing reason an upload (``what``) of ``size`` bytes is refused, or None when it is allowed."""
    limit = upload_limit_bytes()
    if size <= limit:
        return None
    return f"{what} is {size / 1048576:.1f} MB; the limit is {limit / 1048576:.1f} MB (SIMAPP_MAX_UPLOAD_MB)"


def import_row_limit() -> int:
    """The most items and pairs one import may hold (``SIMAPP_MAX_IMPORT_ROWS``)."""
    return int(settings.SIMAPP_MAX_IMPORT_ROWS)


def too_many_import_rows(*, limit: int, rows: int | None = None) -> str:
    """The user-facing reason an import over ``limit`` items and pairs is refused: it holds ``rows`` when
    they were counted up front (an archive's manifest), else it was read only until it passed the limit."""
    if rows is None:
        return (
            f"holds more than {limit} items and pairs, the limit of this server (SIMAPP_MAX_IMPORT_ROWS); "
            "split it into smaller imports"
        )
    return f"holds {rows} items and pairs, over the limit of this server of {limit} (SIMAPP_MAX_IMPORT_ROWS)"
