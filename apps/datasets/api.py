"""REST API for datasets and items: CRUD, filtered item lists, bulk create, file import and export."""

from __future__ import annotations

import tempfile
from typing import Any

from django.http import FileResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import generics, permissions, serializers, status, viewsets
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
from apps.datasets import archive, selectors, services
from apps.datasets.formats import (
    FORMATS,
    MAX_KEY_LENGTH,
    MAX_LABEL_LENGTH,
    ColumnNames,
    ItemRecord,
    derived_key,
    vector_numbers,
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


@extend_schema_view(
    destroy=extend_schema(
        description=(
            "Delete the dataset and everything of it: items, pairs, anomaly feedback and scores, training "
            "runs, model versions, its index (every version's collection and the alias) and its model "
            "files. The embedding cache is kept: it is keyed by content, which other datasets may share. "
            "Afterwards the slug is free, and a new dataset of that slug starts again at version 1."
        ),
        responses={
            204: None,
            409: OpenApiResponse(
                description="a training run of the dataset is queued or running: cancel it first; "
                "nothing was deleted"
            ),
            503: OpenApiResponse(
                description="the vector store that holds the dataset's index is unreachable; nothing was "
                "deleted"
            ),
        },
    )
)
class DatasetViewSet(viewsets.ModelViewSet):
    """Datasets. Anyone logged in reads; staff create, change and delete (a deletion removes everything of
    the dataset, its index and model files included)."""

    serializer_class = DatasetSerializer
    permission_classes = [IsStaffOrReadOnly]
    lookup_field = "slug"

    def get_queryset(self) -> Any:
        return selectors.dataset_list()

    def perform_create(self, serializer: DatasetSerializer) -> None:
        dataset = serializer.save()
        # Re-read with the annotated counts for the response.
        serializer.instance = selectors.dataset_get(slug=dataset.slug)

    def perform_destroy(self, instance: Dataset) -> None:
        # Through the exception handler, DatasetDeleteRefused (a run trains on it) is a 409 and
        # DatasetDeleteUnavailable (the vector store is down) a 503.
        services.dataset_delete(dataset=instance)


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
        if vector is not None:
            vector = vector_numbers(vector, source="items", line=number, unit="entry")
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


def _upload_input(request: Request, serializer_class: type[serializers.Serializer]) -> dict[str, Any]:
    """The validated input of an upload request whose serializer has a ``file``; 400 when the request or
    the file is over the upload limit (the request refused from its Content-Length, before it is read)."""
    check_request_size(request)
    data = serializer_class(data=request.data)
    data.is_valid(raise_exception=True)
    reason = upload_too_large(data.validated_data["file"].size)
    if reason:
        raise ValidationError({"file": [reason]})
    return data.validated_data


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
        values = _upload_input(request, DatasetImportInputSerializer)
        upload = values["file"]
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


class DatasetArchiveQuerySerializer(serializers.Serializer):
    artifacts = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Include the model versions' files (model.json, head weights).",
    )


class DatasetArchiveExportApi(DatasetMixin, APIView):
    """Download everything of the dataset as one archive: a zip of its items, pairs, users, anomaly feedback
    and scores, training runs and model versions (with ``artifacts=true``, their model files too), as
    `manage.py export_dataset SLUG PATH --format archive` writes it. Staff only."""

    permission_classes = [permissions.IsAdminUser]

    @extend_schema(
        parameters=[DatasetArchiveQuerySerializer],
        responses={(200, "application/zip"): OpenApiTypes.BINARY},
    )
    def get(self, request: Request, slug: str) -> FileResponse:
        check_query_string(request)
        query = DatasetArchiveQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        dataset = self.get_dataset()
        # Written to a temporary file first: an error is a proper response, never a cut-off download.
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - FileResponse closes it once sent
        try:
            archive.dataset_archive_export(
                dataset=dataset, fp=spool, artifacts=query.validated_data["artifacts"]
            )
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return FileResponse(
            spool, as_attachment=True, filename=f"{dataset.slug}.zip", content_type="application/zip"
        )


class DatasetArchiveImportInputSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="An archive from GET /api/datasets/{slug}/archive/.")
    slug = serializers.SlugField(
        max_length=Dataset._meta.get_field("slug").max_length,
        required=False,
        allow_blank=True,
        default="",
        help_text="Restore as this dataset instead of the slug in the archive.",
    )


class DatasetArchiveImportResultSerializer(serializers.Serializer):
    dataset = serializers.CharField(help_text="The slug the dataset was restored as.")
    archived_as = serializers.CharField(help_text="Its slug in the archive.")
    tables = serializers.DictField(child=serializers.IntegerField(), help_text="Rows restored per table.")
    users_created = serializers.ListField(
        child=serializers.CharField(),
        help_text="Users this database lacked, created inactive without a password.",
    )
    runs_interrupted = serializers.IntegerField(
        help_text="Runs queued or running in the archive, restored as failed."
    )
    artifacts = serializers.ListField(
        child=serializers.IntegerField(), help_text="Versions whose model files came back."
    )
    active_version = serializers.IntegerField(allow_null=True)
    index = serializers.CharField(
        help_text='"queued" (the active version\'s index is being rebuilt), or why not.'
    )


class DatasetArchiveImportApi(APIView):
    """Restore a dataset from an archive as a new dataset, all or nothing, then rebuild the index of its
    active version in the background when its model files are here. A slug that exists is refused. Staff
    only."""

    permission_classes = [permissions.IsAdminUser]
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        request=DatasetArchiveImportInputSerializer, responses={201: DatasetArchiveImportResultSerializer}
    )
    def post(self, request: Request) -> Response:
        from apps.training.restore import enqueue_index_restore

        values = _upload_input(request, DatasetArchiveImportInputSerializer)
        upload = values["file"]
        with upload.open("rb") as fp:
            result = archive.dataset_archive_import(
                fp=fp, source_name=upload.name, slug=values["slug"] or None
            )
        if result.active_version is None:
            index = "none: the dataset has no active model version"
        else:
            index = enqueue_index_restore(dataset=Dataset.objects.get(slug=result.dataset))
        return Response(result.as_dict() | {"index": index}, status=status.HTTP_201_CREATED)
