"""Pieces shared by the REST API of every app."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from rest_framework import permissions, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from apps.datasets.formats import DataFormatError


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus: a rejected input file or record set is a 400 with its one-line reason."""
    if isinstance(exc, DataFormatError):
        return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
    return drf_exception_handler(exc, context)


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
