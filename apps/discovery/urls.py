"""Server-rendered pages of apps.discovery (the REST API is in api.py, routed in simapp/urls.py)."""

from __future__ import annotations

from django.urls import path  # noqa: F401

urlpatterns: list = []
