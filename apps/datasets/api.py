"""REST API for datasets and items: CRUD, filtered item lists, bulk create, file import and export."""

from __future__ import annotations

from typing import Any

from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, inline_serializer
from rest_framework import generics, serializers, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.common.api import (
    IsStaffOrReadOnly,
    StrictFloatField,
    check_query_string,
    check_request_size,
    upload_too_large,
)
from apps.datasets import selectors, services
from apps.datasets.formats import (
    FORMATS,
    MAX_KEY_LENGTH,
    MAX_LABEL_LENGTH,
    ColumnNames,
    ItemRecord,
    derived_key,
)
from apps.datasets.models import Dataset, Item
from apps.datasets.options import DatasetOptions
from apps.labelling.models import Pair
from apps.labelling.options import LabellingOptions


class DatasetSerializer(serializers.ModelSerializer):
    item_count = serializers.IntegerField(read_only=True)
    pair_count = serializers.IntegerField(read_only=True)
    label_count = serializers.IntegerField(read_only=True)
    encoder = serializers.CharField(max_length=255, required=False, allow_blank=True)

    class Meta:
        model = Dataset
        fields = [
            "slug",
            "name",
            "description",
            "modality",
            "encoder",
            "vector_dim",
            "settings",
            "item_count",
            "pair_count",
            "label_count",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["vector_dim", "created_at", "updated_at"]

    def validate_slug(self, value: str) -> str:
        if self.instance is not None and value != self.instance.slug:
            raise ValidationError(
                "a dataset's slug cannot change: its URLs, index and model files are named after it"
            )
        return value

    def validate_settings(self, value: Any) -> dict[str, Any]:
        # Read as a mapping (k, contamination, …) wherever the dataset is used.
        if not isinstance(value, dict):
            raise ValidationError('must be a JSON object, e.g. {"k": 10}')
        problem = services.json_value_problem(value)
        if problem:
            raise ValidationError(problem)
        try:
            DatasetOptions.parse(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        # The labelling page reads its own options leniently (a bad stored value falls back to its
        # default); a new value must be usable.
        problems = LabellingOptions.parse(value).problems
        if problems:
            raise ValidationError(problems[0])
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        changes_modality = (
            self.instance is not None and "modality" in attrs and attrs["modality"] != self.instance.modality
        )
        if changes_modality and Item.objects.filter(dataset=self.instance).exists():
            raise ValidationError({"modality": "cannot change the modality of a dataset that has items"})
        return attrs

    def create(self, validated_data: dict[str, Any]) -> Dataset:
        return services.dataset_create(**validated_data)

    def update(self, instance: Dataset, validated_data: dict[str, Any]) -> Dataset:
        return services.dataset_update(dataset=instance, **validated_data)


class DatasetViewSet(viewsets.ModelViewSet):
    """Datasets. Anyone logged in reads; staff create, change and delete."""

    serializer_class = DatasetSerializer
    permission_classes = [IsStaffOrReadOnly]
    lookup_field = "slug"

    def get_queryset(self) -> Any:
        return selectors.dataset_list()

    def perform_create(self, serializer: DatasetSerializer) -> None:
        dataset = serializer.save()
        # Re-read with the annotated counts for the response.
        serializer.instance = selectors.dataset_get(slug=dataset.slug)


class ItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = Item
        fields = [
            "id",
            "key",
            "text",
            "vector",
            "label",
            "metadata",
            "content_hash",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class ItemInputSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=MAX_KEY_LENGTH, required=False, allow_blank=True, default="")
    text = serializers.CharField(required=False, allow_blank=False, trim_whitespace=False)
    vector = serializers.ListField(child=StrictFloatField(), required=False, allow_empty=False)
    label = serializers.CharField(max_length=MAX_LABEL_LENGTH, required=False, allow_blank=True, default="")
    metadata = serializers.DictField(required=False, default=dict)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("text" in attrs) == ("vector" in attrs):
            raise ValidationError("give exactly one of 'text' or 'vector'")
        return attrs


def _item_records(rows: list[dict[str, Any]]) -> list[ItemRecord]:
    """API rows → the importer's records (numbered from 1), so both paths share one validation."""
    records = []
    for number, row in enumerate(rows, start=1):
        text, vector = row.get("text", ""), row.get("vector")
        key = row["key"].strip() or derived_key(text=text, vector=vector)
        records.append(
            ItemRecord(
                key=key,
                text=text,
                vector=vector,
                label=row["label"].strip(),
                metadata=row["metadata"],
                line=number,
            )
        )
    return records


class DatasetMixin:
    kwargs: dict[str, Any]

    def get_dataset(self) -> Dataset:
        return get_object_or_404(Dataset, slug=self.kwargs["slug"])


@extend_schema(
    parameters=[
        OpenApiParameter("label", str, description="Exact label."),
        OpenApiParameter("q", str, description="Text or key contains (case-insensitive)."),
        OpenApiParameter(
            "metadata.<field>", str, description="Metadata field equals value, e.g. `?metadata.colour=red`."
        ),
    ]
)
class ItemListCreateApi(DatasetMixin, generics.ListCreateAPIView):
    """Items of a dataset, filtered and paginated; staff add one item (POST)."""

    permission_classes = [IsStaffOrReadOnly]
    serializer_class = ItemSerializer

    def get_queryset(self) -> Any:
        check_query_string(self.request)
        params = self.request.query_params
        metadata = {
            name[len("metadata.") :]: value for name, value in params.items() if name.startswith("metadata.")
        }
        try:
            return selectors.item_list(
                dataset=self.get_dataset(),
                label=params.get("label"),
                metadata=metadata,
                search=params.get("q", ""),
            )
        except selectors.InvalidFilter as exc:
            raise ValidationError({"metadata": [str(exc)]}) from None

    @extend_schema(request=ItemInputSerializer, responses={201: ItemSerializer})
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        dataset = self.get_dataset()
        data = ItemInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        records = _item_records([data.validated_data])
        services.dataset_records_save(
            slug=dataset.slug,
            records=records,
            source_name="items",
            pair_source=Pair.Source.MANUAL,
            unit="entry",
        )
        item = Item.objects.get(dataset=dataset, key=records[0].key)
        return Response(ItemSerializer(item).data, status=status.HTTP_201_CREATED)


class ImportResultSerializer(serializers.Serializer):
    dataset = serializers.CharField()
    dataset_created = serializers.BooleanField()
    items_created = serializers.IntegerField()
    items_updated = serializers.IntegerField()
    items_unchanged = serializers.IntegerField()
    pairs_created = serializers.IntegerField()
    pairs_updated = serializers.IntegerField()
    pairs_unchanged = serializers.IntegerField()
    notices = serializers.ListField(child=serializers.CharField())


class ItemBulkInputSerializer(serializers.Serializer):
    items = ItemInputSerializer(many=True, allow_empty=False)


class ItemBulkCreateApi(DatasetMixin, APIView):
    """Add or update many items at once (by key), all or nothing. Staff only."""

    permission_classes = [IsStaffOrReadOnly]

    @extend_schema(
        request=ItemBulkInputSerializer,
        responses={201: ImportResultSerializer},
        examples=[
            OpenApiExample(
                "Two labelled texts",
                value={
                    "items": [
                        {"key": "q1", "text": "how do I reset my pin", "label": "pin_change"},
                        {"key": "q2", "text": "what is my balance", "label": "balance"},
                    ]
                },
                request_only=True,
            )
        ],
    )
    def post(self, request: Request, slug: str) -> Response:
        dataset = self.get_dataset()
        data = ItemBulkInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        result = services.dataset_records_save(
            slug=dataset.slug,
            records=_item_records(data.validated_data["items"]),
            source_name="items",
            pair_source=Pair.Source.MANUAL,
            unit="entry",
        )
        return Response(result.as_dict(), status=status.HTTP_201_CREATED)


class ItemDetailApi(DatasetMixin, generics.RetrieveDestroyAPIView):
    """One item by id; staff delete it (its pairs go with it)."""

    permission_classes = [IsStaffOrReadOnly]
    serializer_class = ItemSerializer

    def get_queryset(self) -> Any:
        return Item.objects.filter(dataset=self.get_dataset())

    def perform_destroy(self, instance: Item) -> None:
        services.items_delete(dataset=instance.dataset, item_ids=[instance.pk])


class DatasetImportInputSerializer(serializers.Serializer):
    file = serializers.FileField()
    format = serializers.ChoiceField(choices=FORMATS)
    split = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="clinc150: the split to read"
    )
    key_column = serializers.CharField(required=False, default="key")
    text_column = serializers.CharField(required=False, default="text")
    label_column = serializers.CharField(required=False, default="label")


class DatasetImportApi(DatasetMixin, APIView):
    """Import a file into the dataset (all or nothing; re-importing adds nothing). Staff only."""

    permission_classes = [IsStaffOrReadOnly]
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request=DatasetImportInputSerializer, responses={201: ImportResultSerializer})
    def post(self, request: Request, slug: str) -> Response:
        dataset = self.get_dataset()
        check_request_size(request)
        data = DatasetImportInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        reason = upload_too_large(upload.size)
        if reason:
            raise ValidationError({"file": [reason]})
        values = data.validated_data
        with upload.open("rb") as fp:
            result = services.dataset_import(
                slug=dataset.slug,
                fp=fp,
                source_name=upload.name,
                fmt=values["format"],
                split=values["split"] or None,
                columns=ColumnNames(
                    key=values["key_column"], text=values["text_column"], label=values["label_column"]
                ),
                create_missing=False,
            )
        return Response(result.as_dict(), status=status.HTTP_201_CREATED)


class DatasetExportApi(DatasetMixin, APIView):
    """Download the dataset's items and pairs as jsonl or csv; importing the file reproduces them."""

    @extend_schema(
        parameters=[OpenApiParameter("fmt", str, OpenApiParameter.PATH, enum=list(services.EXPORT_FORMATS))],
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
    )
    def get(self, request: Request, slug: str, fmt: str) -> StreamingHttpResponse:
        dataset = self.get_dataset()
        if fmt not in services.EXPORT_FORMATS:
            raise ValidationError(
                {"fmt": [f"unknown export format '{fmt}'; valid: {', '.join(services.EXPORT_FORMATS)}"]}
            )
        content_type = "text/csv" if fmt == "csv" else "application/x-ndjson"
        response = StreamingHttpResponse(
            services.dataset_export(dataset=dataset, fmt=fmt), content_type=content_type
        )
        response["Content-Disposition"] = f'attachment; filename="{dataset.slug}.{fmt}"'
        return response


class DatasetStatsApi(DatasetMixin, APIView):
    """Counts of a dataset, as `manage.py dataset_stats --json` prints them."""

    @extend_schema(
        responses=inline_serializer(
            "DatasetStats",
            {
                "items": serializers.IntegerField(),
                "pairs": serializers.IntegerField(),
                "labels": serializers.IntegerField(),
                "active_version": serializers.IntegerField(allow_null=True),
            },
        )
    )
    def get(self, request: Request, slug: str) -> Response:
        return Response(selectors.dataset_stats(dataset=self.get_dataset()))
