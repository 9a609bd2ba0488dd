"""REST API for similarity-labelled pairs."""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.common.api import StrictFloatField, check_query_string
from apps.datasets.api import ImportResultSerializer
from apps.datasets.formats import MAX_KEY_LENGTH
from apps.datasets.models import Dataset
from apps.labelling import selectors, services
from apps.labelling.models import Pair


class PairSerializer(serializers.ModelSerializer):
    a = serializers.CharField(source="item_a.key", read_only=True)
    b = serializers.CharField(source="item_b.key", read_only=True)
    annotator = serializers.CharField(
        source="annotator.username", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = Pair
        fields = [
            "id",
            "a",
            "b",
            "item_a",
            "item_b",
            "score",
            "annotator",
            "source",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class PairInputSerializer(serializers.Serializer):
    a = serializers.CharField(max_length=MAX_KEY_LENGTH, help_text="Key of one item.")
    b = serializers.CharField(max_length=MAX_KEY_LENGTH, help_text="Key of the other item.")
    score = StrictFloatField(min_value=0.0, max_value=1.0, help_text="1 = same, 0 = unrelated.")


def _dataset(slug: str) -> Dataset:
    return get_object_or_404(Dataset, slug=slug)


@extend_schema(
    parameters=[
        OpenApiParameter("annotator", str, description="Username of the annotator."),
        OpenApiParameter("source", str, enum=Pair.Source.values),
        OpenApiParameter("key", str, description="Pairs with this item (key) at either end."),
    ]
)
class PairListCreateApi(generics.ListAPIView):
    """Pairs of a dataset (GET); label one pair as the current user (POST)."""

    serializer_class = PairSerializer

    def get_queryset(self) -> Any:
        check_query_string(self.request)
        params = self.request.query_params
        return selectors.pair_list(
            dataset=_dataset(self.kwargs["slug"]),
            annotator=params.get("annotator"),
            source=params.get("source"),
            key=params.get("key"),
        )

    @extend_schema(
        request=PairInputSerializer,
        responses={201: PairSerializer},
        examples=[OpenApiExample("Similar", value={"a": "train-00001", "b": "train-00002", "score": 1.0})],
    )
    def post(self, request: Request, slug: str) -> Response:
        dataset = _dataset(slug)
        data = PairInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        services.pairs_label(dataset=dataset, pairs=[data.validated_data], annotator=request.user)
        pair = selectors.pair_list(dataset=dataset, annotator=request.user.get_username()).get(
            item_a__key__in=[data.validated_data["a"], data.validated_data["b"]],
            item_b__key__in=[data.validated_data["a"], data.validated_data["b"]],
        )
        return Response(PairSerializer(pair).data, status=status.HTTP_201_CREATED)


class PairBulkInputSerializer(serializers.Serializer):
    pairs = PairInputSerializer(many=True, allow_empty=False)


class PairBulkCreateApi(APIView):
    """Label many pairs at once as the current user, all or nothing."""

    @extend_schema(request=PairBulkInputSerializer, responses={201: ImportResultSerializer})
    def post(self, request: Request, slug: str) -> Response:
        dataset = _dataset(slug)
        data = PairBulkInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = services.pairs_label(
            dataset=dataset, pairs=data.validated_data["pairs"], annotator=request.user
        )
        return Response(result.as_dict(), status=status.HTTP_201_CREATED)
