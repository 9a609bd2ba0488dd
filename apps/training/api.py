"""Staff-only REST API for retraining: start, cancel and list runs; list, activate and roll back versions."""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import generics, permissions, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.datasets.models import Dataset
from apps.training import selectors, services
from apps.training.config import TrainConfigError, train_config_from
from apps.training.models import ModelVersion, TrainingRun
from simapp.vectors import ActivationError, CollectionNotFound


class TrainingRunSerializer(serializers.ModelSerializer):
    dataset = serializers.CharField(source="dataset.slug", read_only=True)
    requested_by = serializers.CharField(
        source="requested_by.username", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "dataset",
            "status",
            "stage",
            "progress",
            "stage_done",
            "stage_total",
            "config",
            "loss_history",
            "metrics",
            "device",
            "error",
            "cancel_requested",
            "requested_by",
            "created_at",
            "started_at",
            "heartbeat_at",
            "finished_at",
        ]
        read_only_fields = fields


class TrainInputSerializer(serializers.Serializer):
    loss = serializers.CharField(required=False, help_text="Loss name; default follows the data.")
    head = serializers.CharField(required=False, help_text="Head name (identity, skip, linear, mlp).")
    epochs = serializers.IntegerField(required=False, min_value=1, max_value=1000)
    lr = serializers.FloatField(required=False, min_value=1e-7, max_value=1.0)
    batch_size = serializers.IntegerField(required=False, min_value=2, max_value=65536)
    # torch.manual_seed takes at most 64 bits; a larger seed would only fail the run later, in its job.
    seed = serializers.IntegerField(required=False, min_value=0, max_value=2**32 - 1)


class ModelVersionSerializer(serializers.ModelSerializer):
    dataset = serializers.CharField(source="dataset.slug", read_only=True)

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "dataset",
            "number",
            "run",
            "metrics",
            "collection",
            "is_active",
            "created_at",
            "activated_at",
        ]
        read_only_fields = fields


def _dataset(slug: str) -> Dataset:
    return get_object_or_404(Dataset, slug=slug)


class TrainingRunListStartApi(generics.ListAPIView):
    """Runs of a dataset (newest first); POST starts a retrain, or returns the one already running."""

    permission_classes = [permissions.IsAdminUser]
    serializer_class = TrainingRunSerializer

    def get_queryset(self) -> Any:
        services.training_runs_reap()
        return selectors.training_run_list(dataset=_dataset(self.kwargs["slug"]))

    @extend_schema(
        request=TrainInputSerializer,
        responses={
            201: TrainingRunSerializer,
            200: OpenApiResponse(TrainingRunSerializer, description="a run was already queued or running"),
            503: OpenApiResponse(description="the job queue is unreachable"),
        },
        examples=[OpenApiExample("Ten epochs of the default loss", value={"epochs": 10}, request_only=True)],
    )
    def post(self, request: Request, slug: str) -> Response:
        dataset = _dataset(slug)
        data = TrainInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            config = train_config_from(dataset=dataset, options=data.validated_data)
            services.training_runs_reap()
            result = services.training_run_start(dataset=dataset, config=config, requested_by=request.user)
        except (TrainConfigError, services.TrainingRefused) as exc:
            raise ValidationError({"detail": str(exc)}) from None
        code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        return Response(TrainingRunSerializer(result.run).data, status=code)


class TrainingRunDetailApi(generics.RetrieveAPIView):
    """One run, with its live progress."""

    permission_classes = [permissions.IsAdminUser]
    serializer_class = TrainingRunSerializer
    queryset = TrainingRun.objects.select_related("dataset", "requested_by")

    def get_object(self) -> TrainingRun:
        services.training_runs_reap()
        return super().get_object()


class TrainingRunCancelApi(APIView):
    """Cancel a run: a queued one at once, a running one at its next batch."""

    permission_classes = [permissions.IsAdminUser]

    @extend_schema(request=None, responses={200: TrainingRunSerializer})
    def post(self, request: Request, pk: int) -> Response:
        run = get_object_or_404(TrainingRun, pk=pk)
        return Response(TrainingRunSerializer(services.training_run_cancel(run=run)).data)


class ModelVersionListApi(generics.ListAPIView):
    """Model versions of a dataset with their held-out metrics, newest first."""

    permission_classes = [permissions.IsAdminUser]
    serializer_class = ModelVersionSerializer

    def get_queryset(self) -> Any:
        return selectors.model_version_list(dataset=_dataset(self.kwargs["slug"]))


class ModelVersionActivateApi(APIView):
    """Serve this version: its index replaces the active one without downtime."""

    permission_classes = [permissions.IsAdminUser]

    @extend_schema(request=None, responses={200: ModelVersionSerializer})
    def post(self, request: Request, pk: int) -> Response:
        version = get_object_or_404(ModelVersion, pk=pk)
        try:
            version = services.model_version_activate(version=version)
        except (ActivationError, CollectionNotFound) as exc:
            raise ValidationError({"detail": f"cannot activate v{version.number}: {exc}"}) from None
        return Response(ModelVersionSerializer(version).data)


class ModelVersionRollbackApi(APIView):
    """Go back to the previous model version of the dataset."""

    permission_classes = [permissions.IsAdminUser]

    @extend_schema(request=None, responses={200: ModelVersionSerializer})
    def post(self, request: Request, slug: str) -> Response:
        try:
            version = services.model_version_rollback(dataset=_dataset(slug))
        except services.TrainingRefused as exc:
            raise ValidationError({"detail": str(exc)}) from None
        return Response(ModelVersionSerializer(version).data)
