"""Server-rendered pages of apps.training (the REST API is in api.py, routed in simapp/urls.py)."""

from __future__ import annotations

from django.urls import path

from apps.training import views

urlpatterns = [
    path("datasets/<slug:slug>/training/", views.training_console, name="dataset-training"),
    path("datasets/<slug:slug>/training/live/", views.training_live, name="dataset-training-live"),
    path(
        "datasets/<slug:slug>/training/runs/<int:pk>/cancel/",
        views.training_run_cancel,
        name="dataset-training-cancel",
    ),
    path(
        "datasets/<slug:slug>/training/versions/<int:pk>/activate/",
        views.model_version_activate,
        name="dataset-training-activate",
    ),
    path(
        "datasets/<slug:slug>/training/rollback/",
        views.model_version_rollback,
        name="dataset-training-rollback",
    ),
]
