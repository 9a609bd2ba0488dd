"""REST API for discovery: neighbours and recommendations, classification, anomaly scores and feedback.

Everyone logged in reads and gives anomaly feedback; staff start a rescoring. Answers come from the
dataset's active model and index: 409 when there is none yet, 503 when the vector store is unreachable.
"""

from __future__ import annotations

import math
from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.common.api import StrictFloatField, check_query_string
from apps.datasets.models import Dataset, Item
from apps.discovery import jobs, selectors, services
from apps.discovery.models import AnomalyFeedback
from apps.training.index import require_active_model
from apps.training.models import ModelVersion
from simapp.vectors import Filter, Range

MAX_LIMIT = 200
MAX_BATCH = 256
MAX_TEXT = 10_000
MAX_ID = 2**63 - 1  # item ids are 64-bit: a larger one is no item, and the database cannot even compare it


def _dataset(slug: str) -> Dataset:
    return get_object_or_404(Dataset, slug=slug)


def _result(r: services.Result) -> dict[str, Any]:
    out: dict[str, Any] = {
        "item": {"id": r.item_id, "key": r.key, "label": r.label, "text": r.text, "metadata": r.metadata},
        "score": round(r.score, 6),
    }
    if r.distance is not None:
        out["distance"] = round(r.distance, 6)
    if r.explanation is not None:
        out["explanation"] = r.explanation
    return out


# -- input ----------------------------------------------------------------------------------------------------


class RangeSerializer(serializers.Serializer):
    gte = StrictFloatField(required=False)
    gt = StrictFloatField(required=False)
    lte = StrictFloatField(required=False)
    lt = StrictFloatField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs:
            raise ValidationError("give at least one of gte, gt, lte, lt")
        for name, value in attrs.items():
            if not math.isfinite(value):
                raise ValidationError({name: "must be a finite number"})
        return attrs


class FilterSerializer(serializers.Serializer):
    label = serializers.CharField(required=False, max_length=200, help_text="Only items with this label.")
    labelled = serializers.BooleanField(
        required=False, help_text="Only items with (true) or without a label."
    )
    metadata = serializers.DictField(
        required=False, help_text='Metadata fields that must equal these values, e.g. {"lang": "en"}.'
    )
    ranges = serializers.DictField(
        child=RangeSerializer(),
        required=False,
        help_text='Numeric metadata bounds, e.g. {"year": {"gte": 2000}}.',
    )

    def validate_metadata(self, value: dict[str, Any]) -> dict[str, Any]:
        for name, v in value.items():
            if not isinstance(v, str | int | bool):
                raise ValidationError(
                    f"'{name}': match strings, integers or booleans; use 'ranges' for other numbers"
                )
        return value

    def to_filter(self) -> Filter | None:
        data = self.validated_data
        if not data:
            return None
        try:
            return Filter(
                label=data.get("label"),
                labelled=data.get("labelled"),
                metadata=data.get("metadata", {}),
                ranges={name: Range(**bounds) for name, bounds in data.get("ranges", {}).items()},
            )
        except ValueError as exc:
            raise ValidationError({"filter": str(exc)}) from None


def _query_filter(request: Request) -> Filter | None:
    """A filter from query parameters: ``label``, ``labelled``, ``metadata.<field>=value`` (a number or
    true/false is matched as such), ``min.<field>`` / ``max.<field>`` (inclusive bounds)."""
    check_query_string(request)
    params = request.query_params
    metadata: dict[str, Any] = {}
    ranges: dict[str, dict[str, float]] = {}
    for name, value in params.items():
        if name.startswith("metadata."):
            metadata[name.removeprefix("metadata.")] = _scalar(value)
        elif name.startswith(("min.", "max.")):
            bound, field = name.split(".", 1)
            try:
                number = float(value)
            except ValueError:
                raise ValidationError({name: f"'{value}' is not a number"}) from None
            if not math.isfinite(number):
                raise ValidationError({name: "must be a finite number"})
            ranges.setdefault(field, {})["gte" if bound == "min" else "lte"] = number
    labelled = params.get("labelled")
    if labelled not in (None, "true", "false"):
        raise ValidationError({"labelled": "must be true or false"})
    if not metadata and not ranges and "label" not in params and labelled is None:
        return None
    try:
        return Filter(
            label=params.get("label"),
            labelled=None if labelled is None else labelled == "true",
            metadata=metadata,
            ranges={name: Range(**bounds) for name, bounds in ranges.items()},
        )
    except ValueError as exc:
        raise ValidationError({"filter": str(exc)}) from None


def _scalar(raw: str) -> str | int | bool:
    if raw in ("true", "false"):
        return raw == "true"
    try:
        return int(raw)
    except ValueError:
        return raw


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError({name: f"'{raw}' is not an integer"}) from None
    if not lo <= value <= hi:
        raise ValidationError({name: f"must be from {lo} to {hi}"})
    return value


LIMIT_PARAM = OpenApiParameter("limit", OpenApiTypes.INT, description=f"How many results (1-{MAX_LIMIT}).")
FILTER_PARAMS = [
    OpenApiParameter("label", OpenApiTypes.STR, description="Only items with this label."),
    OpenApiParameter("labelled", OpenApiTypes.BOOL, description="Only items with (true) or without a label."),
    OpenApiParameter(
        "metadata.<field>", OpenApiTypes.STR, description="Metadata field equals this value (repeatable)."
    ),
    OpenApiParameter("min.<field>", OpenApiTypes.NUMBER, description="Numeric metadata field >= this value."),
    OpenApiParameter("max.<field>", OpenApiTypes.NUMBER, description="Numeric metadata field <= this value."),
]

RESULT_EXAMPLE = {
    "item": {
        "id": 412,
        "key": "t-5f2c…",
        "label": "transfer",
        "text": "move $200 to savings",
        "metadata": {},
    },
    "score": 0.912345,
    "distance": 0.087655,
    "explanation": {"closest_example": {"item_id": 17}, "similarity": 0.912345},
}


# -- recommendations ------------------------------------------------------------------------------------------


class ItemNeighboursApi(APIView):
    """The items nearest to one item under the active model (the item itself left out)."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(
        parameters=[LIMIT_PARAM, *FILTER_PARAMS],
        responses={200: OpenApiTypes.OBJECT, 409: OpenApiResponse(description="no active model yet")},
        examples=[
            OpenApiExample(
                "Neighbours", value={"version": 3, "results": [RESULT_EXAMPLE]}, response_only=True
            )
        ],
    )
    def get(self, request: Request, slug: str, pk: int) -> Response:
        dataset = _dataset(slug)
        get_object_or_404(Item, dataset=dataset, pk=pk)
        limit = _int_param(request, "limit", 10, 1, MAX_LIMIT)
        version, results = services.item_neighbours(
            dataset=dataset, item_id=pk, limit=limit, filter=_query_filter(request)
        )
        return Response({"version": version.number, "results": [_result(r) for r in results]})


class RecommendInputSerializer(serializers.Serializer):
    positive = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID), required=False, max_length=100
    )
    negative = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID), required=False, max_length=100
    )
    positive_texts = serializers.ListField(
        child=serializers.CharField(max_length=MAX_TEXT), required=False, max_length=20
    )
    negative_texts = serializers.ListField(
        child=serializers.CharField(max_length=MAX_TEXT), required=False, max_length=20
    )
    positive_vectors = serializers.ListField(
        child=serializers.ListField(child=StrictFloatField(), max_length=4096), required=False, max_length=20
    )
    negative_vectors = serializers.ListField(
        child=serializers.ListField(child=StrictFloatField(), max_length=4096), required=False, max_length=20
    )
    strategy = serializers.ChoiceField(choices=["average_vector", "best_score"], default="average_vector")
    limit = serializers.IntegerField(min_value=1, max_value=MAX_LIMIT, default=10)
    filter = FilterSerializer(required=False)


class RecommendApi(APIView):
    """More like these, less like those: item ids and free texts (or feature vectors) as examples, with
    payload filters. Each result names the positive example it is closest to."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(
        request=RecommendInputSerializer,
        responses={200: OpenApiTypes.OBJECT, 409: OpenApiResponse(description="no active model yet")},
        examples=[
            OpenApiExample(
                "Like two items and a text, unlike one item, English only",
                value={
                    "positive": [17, 52],
                    "positive_texts": ["send money to my brother"],
                    "negative": [9],
                    "strategy": "average_vector",
                    "limit": 10,
                    "filter": {"metadata": {"lang": "en"}, "ranges": {"year": {"gte": 2020}}},
                },
                request_only=True,
            ),
            OpenApiExample("Results", value={"version": 3, "results": [RESULT_EXAMPLE]}, response_only=True),
        ],
    )
    def post(self, request: Request, slug: str) -> Response:
        dataset = _dataset(slug)
        data = RecommendInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        flt = None
        if "filter" in v:
            filter_data = FilterSerializer(data=request.data.get("filter"))
            filter_data.is_valid(raise_exception=True)
            flt = filter_data.to_filter()
        version, results = services.recommend(
            dataset=dataset,
            positive=services.Examples(
                v.get("positive", []), v.get("positive_texts", []), v.get("positive_vectors", [])
            ),
            negative=services.Examples(
                v.get("negative", []), v.get("negative_texts", []), v.get("negative_vectors", [])
            ),
            strategy=v["strategy"],
            limit=v["limit"],
            filter=flt,
        )
        return Response({"version": version.number, "results": [_result(r) for r in results]})


# -- classification -------------------------------------------------------------------------------------------


class ClassifyInputSerializer(serializers.Serializer):
    text = serializers.CharField(required=False, max_length=MAX_TEXT)
    texts = serializers.ListField(
        child=serializers.CharField(max_length=MAX_TEXT), required=False, min_length=1, max_length=MAX_BATCH
    )
    vector = serializers.ListField(child=StrictFloatField(), required=False, max_length=4096)
    vectors = serializers.ListField(
        child=serializers.ListField(child=StrictFloatField(), max_length=4096),
        required=False,
        min_length=1,
        max_length=MAX_BATCH,
    )
    top = serializers.IntegerField(min_value=1, max_value=50, default=5)
    k = serializers.IntegerField(min_value=1, max_value=MAX_LIMIT, required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        given = [name for name in ("text", "texts", "vector", "vectors") if name in attrs]
        if len(given) != 1:
            raise ValidationError("give exactly one of 'text', 'texts', 'vector' or 'vectors'")
        return attrs


def _classification(c: services.Classification) -> dict[str, Any]:
    return {
        "label": c.label,
        "unknown": c.unknown,
        "calibrated": c.calibrated,
        "anomaly_score": round(c.anomaly_score, 6),
        "threshold": None if c.threshold is None else round(c.threshold, 6),
        "labels": c.labels,
        "neighbours": [_result(r) for r in c.neighbours],
    }


class ClassifyApi(APIView):
    """Top labels of a text (or feature vector) by a distance-weighted vote of its nearest labelled items;
    "unknown" when it is farther from them than the model version's calibrated threshold."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(
        request=ClassifyInputSerializer,
        responses={200: OpenApiTypes.OBJECT, 409: OpenApiResponse(description="no active model yet")},
        examples=[
            OpenApiExample(
                "One text", value={"text": "how do I move money to savings", "top": 3}, request_only=True
            ),
            OpenApiExample(
                "Answer",
                value={
                    "version": 3,
                    "label": "transfer",
                    "unknown": False,
                    "calibrated": True,
                    "anomaly_score": 0.21,
                    "threshold": 0.34,
                    "labels": [
                        {"label": "transfer", "confidence": 0.91},
                        {"label": "balance", "confidence": 0.09},
                    ],
                    "neighbours": [RESULT_EXAMPLE],
                },
                response_only=True,
            ),
        ],
    )
    def post(self, request: Request, slug: str) -> Response:
        dataset = _dataset(slug)
        data = ClassifyInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        single = "text" in v or "vector" in v
        texts = [v["text"]] if "text" in v else v.get("texts")
        vectors = [v["vector"]] if "vector" in v else v.get("vectors")
        version, answers = services.classify(
            dataset=dataset, texts=texts, vectors=vectors, top=v["top"], k=v.get("k")
        )
        if single:
            return Response({"version": version.number} | _classification(answers[0]))
        return Response({"version": version.number, "results": [_classification(a) for a in answers]})


# -- anomalies ------------------------------------------------------------------------------------------------


def _active_version(dataset: Dataset) -> ModelVersion:
    version, _ = require_active_model(dataset)
    return version


def _threshold(dataset: Dataset, version: ModelVersion) -> services.Threshold:
    return services.anomaly_threshold(dataset=dataset, version=version)


class AnomalyListApi(APIView):
    """Items by anomaly score under the active version, highest first, with the threshold and verdicts."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(
        parameters=[
            LIMIT_PARAM,
            OpenApiParameter("offset", OpenApiTypes.INT, description="Skip this many (paging)."),
            OpenApiParameter(
                "verdict",
                OpenApiTypes.STR,
                enum=["any", "unreviewed", "anomaly", "normal"],
                description="Only items without feedback, or with this consensus verdict.",
            ),
            OpenApiParameter("above", OpenApiTypes.BOOL, description="Only items above the threshold."),
        ],
        operation_id="datasets_anomalies_list",
        responses={200: OpenApiTypes.OBJECT, 409: OpenApiResponse(description="no active model yet")},
    )
    def get(self, request: Request, slug: str) -> Response:
        check_query_string(request)
        dataset = _dataset(slug)
        version = _active_version(dataset)
        limit = _int_param(request, "limit", 50, 1, MAX_LIMIT)
        offset = _int_param(request, "offset", 0, 0, 10**9)
        verdict = request.query_params.get("verdict", "any")
        if verdict not in ("any", "unreviewed", "anomaly", "normal"):
            raise ValidationError({"verdict": "must be any, unreviewed, anomaly or normal"})
        above = request.query_params.get("above")
        if above not in (None, "true", "false"):
            raise ValidationError({"above": "must be true or false"})
        threshold = _threshold(dataset, version)
        page = selectors.anomaly_list(
            dataset=dataset,
            version=version,
            user=request.user,
            verdict=verdict,
            above=threshold.value if above == "true" and threshold.value is not None else None,
            limit=limit,
            offset=offset,
        )
        options = services.discovery_settings(dataset)
        return Response(
            {
                "version": version.number,
                "k": (version.metrics.get("anomaly") or {}).get("k", options.anomaly_k),
                "threshold": threshold.value,
                "threshold_source": threshold.source,
                "contamination": options.contamination,
                "count": page.count,
                "above_threshold": selectors.anomaly_count_above(version=version, threshold=threshold.value),
                "results": page.results,
            }
        )


class AnomalyHistogramApi(APIView):
    """The distribution of anomaly scores under the active version, with the threshold."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(
        parameters=[
            OpenApiParameter("bins", OpenApiTypes.INT, description="Number of bins (2-200, default 30).")
        ],
        responses={200: OpenApiTypes.OBJECT},
        examples=[
            OpenApiExample(
                "Histogram",
                value={
                    "version": 2,
                    "n": 1831,
                    "threshold": 3.9,
                    "bins": [{"lo": 0.4, "hi": 0.9, "count": 212}],
                },
                response_only=True,
            )
        ],
    )
    def get(self, request: Request, slug: str) -> Response:
        check_query_string(request)
        dataset = _dataset(slug)
        version = _active_version(dataset)
        bins = _int_param(request, "bins", 30, 2, 200)
        threshold = _threshold(dataset, version)
        histogram = selectors.anomaly_histogram(version=version, bins=bins)
        return Response({"version": version.number, "threshold": threshold.value} | histogram)


class AnomalyItemApi(APIView):
    """One item's anomaly score and rank, its nearest neighbours and the feedback it has."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(
        parameters=[LIMIT_PARAM], operation_id="datasets_anomalies_item", responses={200: OpenApiTypes.OBJECT}
    )
    def get(self, request: Request, slug: str, pk: int) -> Response:
        check_query_string(request)
        dataset = _dataset(slug)
        item = get_object_or_404(Item, dataset=dataset, pk=pk)
        version = _active_version(dataset)
        limit = _int_param(request, "limit", 10, 1, MAX_LIMIT)
        threshold = _threshold(dataset, version)
        detail = selectors.anomaly_item(version=version, item=item, user=request.user)
        try:
            _, neighbours = services.item_neighbours(dataset=dataset, item_id=pk, limit=limit)
        except services.DiscoveryError:
            neighbours = []  # not indexed yet: the score (if any) still stands
        return Response(
            {
                "version": version.number,
                "threshold": threshold.value,
                "above_threshold": (
                    detail["score"] is not None
                    and threshold.value is not None
                    and detail["score"] > threshold.value
                ),
            }
            | detail
            | {"neighbours": [_result(r) for r in neighbours]}
        )


class FeedbackInputSerializer(serializers.Serializer):
    verdict = serializers.ChoiceField(
        choices=AnomalyFeedback.Verdict.choices,
        help_text="'anomaly' (confirmed) or 'normal' (not an anomaly).",
    )


class AnomalyFeedbackApi(APIView):
    """Your verdict on an item: PUT sets or changes it, DELETE withdraws it. Verdicts shape the normal
    reference set of the next scoring and become training pairs for the next retrain."""

    permission_classes = [permissions.IsAuthenticated]

    @extend_schema(
        request=FeedbackInputSerializer,
        responses={200: OpenApiTypes.OBJECT},
        examples=[OpenApiExample("Not an anomaly", value={"verdict": "normal"}, request_only=True)],
    )
    def put(self, request: Request, slug: str, pk: int) -> Response:
        dataset = _dataset(slug)
        item = get_object_or_404(Item, dataset=dataset, pk=pk)
        data = FeedbackInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        feedback = services.anomaly_feedback_set(
            item=item, user=request.user, verdict=data.validated_data["verdict"]
        )
        return Response(
            {"item": item.pk, "verdict": feedback.verdict, "pairs_added": len(feedback.pair_ids)},
            status=status.HTTP_200_OK,
        )

    @extend_schema(
        request=None, responses={204: None, 404: OpenApiResponse(description="no verdict to withdraw")}
    )
    def delete(self, request: Request, slug: str, pk: int) -> Response:
        dataset = _dataset(slug)
        item = get_object_or_404(Item, dataset=dataset, pk=pk)
        if not services.anomaly_feedback_clear(item=item, user=request.user):
            return Response({"detail": "you have no verdict on this item"}, status=status.HTTP_404_NOT_FOUND)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AnomalyRescoreApi(APIView):
    """Score every item of the active version again, in the background (after feedback, a change of
    ``anomaly_k`` or ``contamination``, or items added since the retrain). Staff only."""

    permission_classes = [permissions.IsAdminUser]

    @extend_schema(request=None, responses={202: OpenApiTypes.OBJECT})
    def post(self, request: Request, slug: str) -> Response:
        dataset = _dataset(slug)
        version = _active_version(dataset)
        services.discovery_settings(dataset)  # a bad setting is a 400 now, not a failed job later
        jobs.enqueue_rescore(dataset_id=dataset.pk)
        return Response(
            {"detail": "rescoring started", "version": version.number}, status=status.HTTP_202_ACCEPTED
        )
