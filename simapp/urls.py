from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from apps.common.views import healthz
from apps.datasets import api as datasets_api
from apps.discovery import api as discovery_api
from apps.labelling import api as labelling_api
from apps.training import api as training_api

admin.site.site_header = "simapp administration"
admin.site.site_title = "simapp admin"
admin.site.index_title = "Datasets, labels and users"

router = DefaultRouter()
router.register("datasets", datasets_api.DatasetViewSet, basename="dataset")

api_patterns = [
    path("", include(router.urls)),
    path("datasets/<slug:slug>/items/", datasets_api.ItemListCreateApi.as_view(), name="item-list"),
    path("datasets/<slug:slug>/items/bulk/", datasets_api.ItemBulkCreateApi.as_view(), name="item-bulk"),
    path("datasets/<slug:slug>/items/<int:pk>/", datasets_api.ItemDetailApi.as_view(), name="item-detail"),
    path("datasets/<slug:slug>/import/", datasets_api.DatasetImportApi.as_view(), name="dataset-import"),
    path(
        "datasets/<slug:slug>/export/<str:fmt>/",
        datasets_api.DatasetExportApi.as_view(),
        name="dataset-export",
    ),
    path("datasets/<slug:slug>/stats/", datasets_api.DatasetStatsApi.as_view(), name="dataset-stats"),
    path(
        "datasets/<slug:slug>/archive/",
        datasets_api.DatasetArchiveExportApi.as_view(),
        name="dataset-archive",
    ),
    path("archives/", datasets_api.DatasetArchiveImportApi.as_view(), name="archive-import"),
    path("datasets/<slug:slug>/pairs/", labelling_api.PairListCreateApi.as_view(), name="pair-list"),
    path("datasets/<slug:slug>/pairs/bulk/", labelling_api.PairBulkCreateApi.as_view(), name="pair-bulk"),
    path("datasets/<slug:slug>/runs/", training_api.TrainingRunListStartApi.as_view(), name="run-list"),
    path("datasets/<slug:slug>/versions/", training_api.ModelVersionListApi.as_view(), name="version-list"),
    path(
        "datasets/<slug:slug>/rollback/",
        training_api.ModelVersionRollbackApi.as_view(),
        name="version-rollback",
    ),
    path(
        "datasets/<slug:slug>/items/<int:pk>/neighbours/",
        discovery_api.ItemNeighboursApi.as_view(),
        name="item-neighbours",
    ),
    path("datasets/<slug:slug>/recommend/", discovery_api.RecommendApi.as_view(), name="recommend"),
    path("datasets/<slug:slug>/classify/", discovery_api.ClassifyApi.as_view(), name="classify"),
    path("datasets/<slug:slug>/anomalies/", discovery_api.AnomalyListApi.as_view(), name="anomaly-list"),
    path(
        "datasets/<slug:slug>/anomalies/histogram/",
        discovery_api.AnomalyHistogramApi.as_view(),
        name="anomaly-histogram",
    ),
    path(
        "datasets/<slug:slug>/anomalies/rescore/",
        discovery_api.AnomalyRescoreApi.as_view(),
        name="anomaly-rescore",
    ),
    path(
        "datasets/<slug:slug>/anomalies/<int:pk>/",
        discovery_api.AnomalyItemApi.as_view(),
        name="anomaly-item",
    ),
    path(
        "datasets/<slug:slug>/anomalies/<int:pk>/feedback/",
        discovery_api.AnomalyFeedbackApi.as_view(),
        name="anomaly-feedback",
    ),
    path("runs/<int:pk>/", training_api.TrainingRunDetailApi.as_view(), name="run-detail"),
    path("runs/<int:pk>/cancel/", training_api.TrainingRunCancelApi.as_view(), name="run-cancel"),
    path(
        "versions/<int:pk>/activate/", training_api.ModelVersionActivateApi.as_view(), name="version-activate"
    ),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's set-up script as a file (docs/?script): no inline script, for the CSP.
    path("docs/", login_required(SpectacularSwaggerSplitView.as_view(url_name="schema")), name="api-docs"),
    path("redoc/", login_required(SpectacularRedocView.as_view(url_name="schema")), name="api-redoc"),
]

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    # Not django.contrib.auth.urls: its password-reset pages answer anonymous visitors and send mail, and
    # simapp has no mail set up; staff reset passwords in the admin. Only the login page is public.
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password_change/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path(
        "accounts/password_change/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    path("api/", include(api_patterns)),
    path("", include("apps.datasets.urls")),
    path("", include("apps.discovery.urls")),
    path("", include("apps.training.urls")),
    path("", include("apps.labelling.urls")),
]
