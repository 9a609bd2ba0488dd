from __future__ import annotations

from django.urls import path

from apps.datasets import views

urlpatterns = [
    path("", views.home, name="home"),
    path("datasets/", views.dataset_list, name="dataset-list"),
    path("datasets/<slug:slug>/", views.dataset_detail, name="dataset-detail"),
    path("datasets/<slug:slug>/import/", views.dataset_file_import, name="dataset-file-import"),
]
