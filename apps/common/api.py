"""Pieces shared by the REST API of every app."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest
from rest_framework import parsers, permissions, serializers, status
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from apps.datasets.formats import DataFormatError
from apps.discovery.services import DiscoveryError
from apps.training.index import NoActiveModel
from apps.training.jobs import JobsUnavailable
from simapp.vectors import VectorStoreUnavailable


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus: a rejected input is a 400 with its one-line reason, and a backing service
    that is down (vector store, job queue) is a 503 that says which, instead of a 500."""
    if isinstance(exc, DataFormatError | DiscoveryError):
        return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, RequestDataTooBig):
        # Django would answer with its HTML "Bad Request" page, which does not say why.
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(
            {
                "detail": f"the request body is over the limit of {limit} bytes (DATA_UPLOAD_MAX_MEMORY_SIZE); "
                "send fewer entries per request, or import a file"
            },
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, VectorStoreUnavailable):
        return Response(
            {"detail": f"the vector store is unavailable: {exc}"}, status=status.HTTP_503_SERVICE_UNAVAILABLE
        )
    if isinstance(exc, NoActiveModel):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, JobsUnavailable):
        return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
    return drf_exception_handler(exc, context)


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, except that a body nested deeper than ``json`` can recurse is a 400, not a 500."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None


class StrictFloatField(serializers.FloatField):
    """A number. Unlike DRF's FloatField it refuses JSON booleans (float(True) is 1.0), as the importers do."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


def check_query_string(request: Any) -> None:
    """Refuse a query string with a NUL character: PostgreSQL cannot compare text with one (a 500)."""
    for name, values in request.query_params.lists():
        if "\x00" in name or any("\x00" in value for value in values):
            raise ParseError("the query string contains a NUL character")


class IsStaffOrReadOnly(permissions.BasePermission):
    """Anyone logged in reads; only staff change (datasets, items, imports)."""

    def has_permission(self, request: Any, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        return request.method in permissions.SAFE_METHODS or request.user.is_staff


def upload_limit_bytes() -> int:
    return int(settings.SIMAPP_MAX_UPLOAD_BYTES)


def upload_too_large(size: int) -> str | None:
    """The user-facing reason an upload of ``size`` bytes is refused, or None when it is allowed."""
    limit = upload_limit_bytes()
    if size <= limit:
        return None
    return (
        f"the upload is {size / 1048576:.1f} MB; the limit is {limit / 1048576:.1f} MB (SIMAPP_MAX_UPLOAD_MB)"
    )


def check_request_size(request: HttpRequest) -> None:
    """Refuse an over-limit upload from its Content-Length, before the body is read and stored."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    reason = upload_too_large(declared - 64 * 1024)  # leave room for the multipart envelope
    if reason:
        raise ValidationError({"file": [reason]})
