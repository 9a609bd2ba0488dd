"""Pieces shared by the REST API of every app."""

from __future__ import annotations

import codecs
import io
import json
import re
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest
from rest_framework import parsers, permissions, serializers, status
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import get_encoding
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from apps.common.limits import upload_too_large
from apps.datasets.formats import DataFormatError
from apps.datasets.signals import DatasetDeleteRefused, DatasetDeleteUnavailable, ItemsChangeUnavailable
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
    if isinstance(exc, NoActiveModel | DatasetDeleteRefused):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, (JobsUnavailable, ItemsChangeUnavailable, DatasetDeleteUnavailable)):
        return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
    return drf_exception_handler(exc, context)


# The start of a JSON escape "\\uD800" to "\\uDFFF" (a UTF-16 surrogate); after an escaped backslash it is
# no escape, but a false hit only costs the full check.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, except that these are a 400, not a 500: a body nested deeper than ``json`` can
    recurse, and a string with half of a UTF-16 pair ("\\ud800"), which Python's ``json`` reads but which
    is no Unicode text: no database stores it, and a response that echoes it cannot be encoded."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        raw = stream.read()  # json.load reads the whole body too
        try:
            data = super().parse(io.BytesIO(raw), media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None
        # UTF-8 cannot carry a lone surrogate, so in a UTF-8 body only an escape can spell one: most bodies
        # skip the full check.
        utf8 = codecs.lookup(get_encoding(parser_context or {})).name == "utf-8"
        if utf8 and not _SURROGATE_ESCAPE.search(raw):
            return data
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")  # one pass in C over every key and string
        except UnicodeEncodeError as exc:
            raise ParseError(
                f"JSON parse error - a string holds a lone surrogate (U+{ord(exc.object[exc.start]):04X}), "
                "which is not valid Unicode text"
            ) from None
        return data


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


def check_request_size(request: HttpRequest) -> None:
    """Refuse an over-limit upload from its Content-Length, before the body is read and stored."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    reason = upload_too_large(declared - 64 * 1024)  # leave room for the multipart envelope
    if reason:
        raise ValidationError({"file": [reason]})
