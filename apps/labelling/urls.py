"""The labellers' page (the REST API for pairs is in api.py, routed in simapp/urls.py)."""

from __future__ import annotations

from django.urls import path

from apps.labelling import views

urlpatterns = [
    path("datasets/<slug:slug>/label/", views.labelling_page, name="dataset-labelling"),
    path("datasets/<slug:slug>/label/answer/", views.labelling_answer, name="labelling-answer"),
    path("datasets/<slug:slug>/label/skip/", views.labelling_skip, name="labelling-skip"),
    path("datasets/<slug:slug>/label/undo/", views.labelling_undo, name="labelling-undo"),
]
