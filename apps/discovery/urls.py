"""Server-rendered pages of apps.discovery (the REST API is in api.py, routed in simapp/urls.py)."""

from __future__ import annotations

from django.urls import path

from apps.discovery import views

urlpatterns = [
    path("datasets/<slug:slug>/items/", views.item_browse, name="item-browse"),
    path("datasets/<slug:slug>/items/<int:pk>/", views.item_page, name="item-page"),
    path("datasets/<slug:slug>/anomalies/", views.anomaly_dashboard, name="dataset-anomalies"),
    path(
        "datasets/<slug:slug>/anomalies/threshold/",
        views.anomaly_threshold_save,
        name="anomaly-threshold-save",
    ),
    path(
        "datasets/<slug:slug>/anomalies/<int:pk>/neighbours/",
        views.anomaly_neighbours,
        name="anomaly-neighbours",
    ),
    path(
        "datasets/<slug:slug>/anomalies/<int:pk>/feedback/",
        views.anomaly_feedback,
        name="anomaly-feedback-page",
    ),
    path("datasets/<slug:slug>/classify/", views.classify_page, name="dataset-classify"),
]
