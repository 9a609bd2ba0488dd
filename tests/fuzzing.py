"""Schema-driven fuzzing of the REST API, shared by ``tests/test_api_fuzz.py`` (bounded, in ``make test``) and
``bench/fuzz.py`` (long runs).

The schema is the one the app serves at ``/api/schema/``, fetched from the app's WSGI handler with a staff
token; schemathesis then calls the same handler in-process. The data is real: a text dataset (a small slice
of CLINC150 with metadata, labelled pairs and anomaly feedback) and a vector dataset (a slice of ODDS
thyroid), each retrained with the product's pipeline (real MiniLM encoder for the texts) so that it has an
active model and index, plus an empty dataset with no model.

Cases come from the schema (valid and invalid input, in equal measure), then most are steered to the real
data (slugs, ids, item keys, the one kind of content each dataset takes) so that they get past "not found"
to the code behind it, and some get one hostile value put inside their JSON body: a lone surrogate, NUL,
integers beyond 64 bits, floats beyond float32, which schemathesis does not generate by itself.

Every case runs inside a transaction that is rolled back afterwards, so a case that deletes a dataset or
adds items leaves the data as the next case expects it. Work deferred with ``transaction.on_commit``
(indexing, retraining) is dropped with the rollback; a job started at once (anomaly rescoring) runs against
the committed data and is waited for before the next case, so no two cases overlap.
"""

from __future__ import annotations

import copy
import itertools
import json
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import numpy as np
import scipy.io
from django.core.signals import got_request_exception, request_finished, request_started
from django.db import close_old_connections, transaction
from django.test import override_settings
from hypothesis import HealthCheck, Phase, Verbosity
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance

from apps.common import background
from apps.datasets.formats import ItemRecord, PairRecord
from apps.datasets.models import Dataset, Item
from apps.discovery.services import anomaly_feedback_set
from apps.training.models import ModelVersion, TrainingRun

STAFF_USERNAME = "fuzz-admin"
TEXT_SLUG = "clinc"
VECTOR_SLUG = "thyroid"
EMPTY_SLUG = "empty"
# No 5xx for any input; every response the schema documents matches it.
CHECKS = [not_a_server_error, response_schema_conformance]


@dataclass
class FuzzData:
    """What the fuzzer steers cases to: real slugs, ids and keys, so that cases reach the views."""

    token: str
    items: dict[str, list[int]]  # dataset slug -> its item ids (every dataset, the empty one included)
    keys: dict[str, list[str]]  # dataset slug -> its item keys
    dims: dict[str, int | None]  # dataset slug -> its vectors' dimension (None: a text dataset)
    run_ids: list[int]
    version_ids: list[int]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}


def _text_records(shared_data: Path) -> tuple[list[ItemRecord], list[PairRecord]]:
    """Five CLINC150 intents, twelve queries each, with filterable metadata, and labelled pairs: the first
    two queries of each intent are similar (by the staff user), the first queries of neighbouring intents
    are not (imported, no annotator)."""
    from tests.discovery.conftest import clinc_slice

    records = clinc_slice(shared_data)
    by_label: dict[str, list[str]] = {}
    for record in records:
        by_label.setdefault(record.label, []).append(record.key)
    firsts = [keys[0] for keys in by_label.values()]
    pairs = [
        PairRecord(a=keys[0], b=keys[1], score=1.0, annotator=STAFF_USERNAME) for keys in by_label.values()
    ]
    pairs += [PairRecord(a=a, b=b, score=0.0) for a, b in itertools.pairwise(firsts)]
    return records, pairs


def _vector_records(shared_data: Path, *, inliers: int = 48, outliers: int = 12) -> list[ItemRecord]:
    """The first rows of ODDS thyroid (6 features), labelled ``inlier`` / ``outlier`` by its y."""
    mat = scipy.io.loadmat(shared_data / "odds" / "thyroid.mat", variable_names=["X", "y"])
    features, flags = np.asarray(mat["X"], dtype=np.float64), np.asarray(mat["y"]).reshape(-1)
    rows = [*np.flatnonzero(flags == 0)[:inliers], *np.flatnonzero(flags == 1)[:outliers]]
    return [
        ItemRecord(
            key=f"row-{row + 1:05d}",
            vector=features[row].tolist(),
            label="outlier" if flags[row] == 1 else "inlier",
            metadata={"outlier": int(flags[row])},
            line=row + 1,
        )
        for row in sorted(rows)
    ]


def fuzz_data_build(shared_data: Path) -> FuzzData:
    """Create, committed, the staff user with a token and the three datasets; train the two with items.

    Call with database access, in a data directory of its own (``SIMAPP_DATA_DIR``)."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from apps.datasets.services import dataset_create
    from tests.training.conftest import make_dataset, run_to_end

    staff = get_user_model().objects.create_user(
        username=STAFF_USERNAME, password="unused-password-fuzz", is_staff=True, is_superuser=True
    )
    token = Token.objects.create(user=staff).key
    records, pairs = _text_records(shared_data)
    text = make_dataset(TEXT_SLUG, [*records, *pairs])
    vector = make_dataset(VECTOR_SLUG, _vector_records(shared_data))
    dataset_create(slug=EMPTY_SLUG)
    for dataset, config in ((text, {"epochs": 2}), (vector, {"epochs": 2, "head": "mlp"})):
        run = run_to_end(dataset, **config)
        assert (run.status, run.error) == ("succeeded", ""), f"{dataset.slug}: {run.error}"
        # a verdict of the staff user, so that withdrawing one (DELETE .../feedback/) has something to do
        anomaly_feedback_set(
            item=Item.objects.filter(dataset=dataset).order_by("id").first(), user=staff, verdict="anomaly"
        )
    background.drain()
    slugs = (TEXT_SLUG, VECTOR_SLUG, EMPTY_SLUG)
    items = {slug: Item.objects.filter(dataset__slug=slug).order_by("id") for slug in slugs}
    return FuzzData(
        token=token,
        items={slug: list(rows.values_list("id", flat=True)) for slug, rows in items.items()},
        keys={slug: list(rows.values_list("key", flat=True)) for slug, rows in items.items()},
        dims=dict(Dataset.objects.filter(slug__in=slugs).values_list("slug", "vector_dim")),
        run_ids=list(TrainingRun.objects.order_by("id").values_list("id", flat=True)),
        version_ids=list(ModelVersion.objects.order_by("id").values_list("id", flat=True)),
    )


def fuzz_data_remove() -> None:
    """Remove what ``fuzz_data_build`` committed (versions first: a version protects its run)."""
    from django.contrib.auth import get_user_model

    background.drain()
    ModelVersion.objects.all().delete()
    Dataset.objects.all().delete()
    get_user_model().objects.filter(username=STAFF_USERNAME).delete()


def steer_to_real_data(schema: Any, data: FuzzData) -> None:
    """Register hooks on ``schema`` that send most cases to real datasets, items, runs and versions, with
    bodies that name items of that dataset (ids to recommend from, keys to pair) and give the one kind of
    content the dataset takes (new items, recommend and classify examples): so that cases get past "not
    found" and "give exactly one of" to the code behind them (the index, the encoder, the writes). Some
    JSON bodies get a hostile value (``HOSTILE``) put inside, and ``<field>`` query placeholders are named
    after real metadata fields.

    The generated value is kept in some cases, so unknown slugs, ids and keys are fuzzed too.
    """

    def real(path: str) -> st.SearchStrategy[dict[str, Any]]:
        if path.startswith("/api/runs/"):
            return st.fixed_dictionaries({"id": st.sampled_from(data.run_ids)})
        if path.startswith("/api/versions/"):
            return st.fixed_dictionaries({"id": st.sampled_from(data.version_ids)})
        with_items = [slug for slug, ids in data.items.items() if ids]
        if "{id}" in path:
            return st.sampled_from(with_items).flatmap(
                lambda slug: st.fixed_dictionaries(
                    {"slug": st.just(slug), "id": st.sampled_from(data.items[slug])}
                )
            )
        return st.fixed_dictionaries({"slug": st.sampled_from(sorted(data.items))})

    @schema.hook
    def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> st.SearchStrategy[Any]:
        if not isinstance(path_parameters, dict) or not ({"slug", "id"} & set(path_parameters)):
            return st.just(path_parameters)
        steered = real(context.operation.path).map(lambda values: path_parameters | values)
        # First, so that hypothesis draws it more often and shrinks a failure to real data.
        return st.one_of(steered, st.just(path_parameters))

    @schema.hook
    def flatmap_case(context: Any, case: Any) -> st.SearchStrategy[Any]:
        # Each draw of the case strategy builds a new case, so the variants may set its parts in place.
        def with_body(body: Any) -> Any:
            case.body = body
            return case

        def with_query(query: dict[str, Any]) -> Any:
            case.query = query
            return case

        variants = []
        if isinstance(case.body, dict):
            slug = case.path_parameters.get("slug") if isinstance(case.path_parameters, dict) else None
            real = None
            if isinstance(slug, str) and data.items.get(slug):
                real = _real_body(context.operation.path, case.body, data=data, slug=slug)
            body = real if real is not None else st.just(case.body)
            if real is not None:
                variants.append(body.map(with_body))
            if "json" in (case.media_type or ""):  # what a form or multipart body cannot carry, JSON can
                variants.append(body.flatmap(_hostile).map(with_body))
        if isinstance(case.query, dict) and any("<field>" in name for name in case.query):
            variants.append(_real_query(case.query).map(with_query))
        return st.one_of(*variants, st.just(case))


# Half of a UTF-16 pair ("\\ud800" in JSON), which schemathesis cannot hold in a case (it validates cases
# with a UTF-8 library): a case carries this private-use character instead, which `send` turns into the
# JSON escape of a lone surrogate on the wire.
LONE_SURROGATE = "\U000f0000"
_LONE_SURROGATE_JSON = json.dumps(LONE_SURROGATE)[1:-1]  # its escape: a valid surrogate pair
# Values that JSON can carry but a database, the index or 32-bit floats cannot: a lone surrogate, NUL,
# integers beyond 64 bits, floats beyond float32 or near the end of float64; and wrong types.
# Most telling first: hypothesis draws early entries more often.
HOSTILE = [LONE_SURROGATE, 1e300, 2**63, "\x00", -(2**63) - 1, 10**30, -1e300, 1e20, 3.5e38, 5e-324]
HOSTILE += [f"a{LONE_SURROGATE}b", "9" * 40, "", " ", [], {}, None, True]
# The metadata fields of the fuzzing data, for the `metadata.<field>`, `min.<field>`, ... query parameters.
FIELDS = ["n", "group", "weight", "outlier"]
HOSTILE_QUERY = ["99999999999999999999", "-9223372036854775809", "1e308", "1e400", "nan", "true", "0", "even"]


def _spots(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], bool]]:
    """Where a hostile value can go in a JSON ``value``: (path, True) adds a key to the object at path,
    (path, False) replaces the value at path."""
    if isinstance(value, dict):
        yield path, True
        for name, item in value.items():
            yield from _spots(item, (*path, name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _spots(item, (*path, index))
    if path:
        yield path, False


def _put(body: Any, spot: tuple[tuple[Any, ...], bool], hostile: Any) -> Any:
    path, add_key = spot
    body = copy.deepcopy(body)
    if add_key:
        target = body
        for step in path:
            target = target[step]
        target[hostile if isinstance(hostile, str) else LONE_SURROGATE] = hostile
        return body
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = hostile
    return body


def _hostile(body: Any) -> st.SearchStrategy[Any]:
    """``body`` with one hostile value put somewhere in it, more often inside a nested object or list
    (metadata, settings, filters, vectors), where the values go furthest before they are checked."""
    spots = [spot for spot in _spots(body) for _ in range(3 if len(spot[0]) >= 2 else 1)]
    return st.tuples(st.sampled_from(spots), st.sampled_from(HOSTILE)).map(lambda chosen: _put(body, *chosen))


def _real_query(query: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``query`` with its ``<field>`` placeholders named after real metadata fields, and values that are
    sometimes hostile."""
    names = [name for name in query if "<field>" in name]
    real = st.tuples(*[st.sampled_from(FIELDS) for _ in names])
    values = st.tuples(*[st.sampled_from([*HOSTILE_QUERY, query[name]]) for name in names])

    def renamed(chosen: tuple[tuple[str, ...], tuple[Any, ...]]) -> dict[str, Any]:
        out = {name: value for name, value in query.items() if name not in names}
        for name, field_name, value in zip(names, *chosen, strict=True):
            out[name.replace("<field>", field_name)] = value
        return out

    return st.tuples(real, values).map(renamed)


def _real_body(
    path: str, body: dict[str, Any], *, data: FuzzData, slug: str
) -> st.SearchStrategy[dict[str, Any]] | None:
    """``body`` with item references of dataset ``slug`` (ids, keys) and the one kind of content the
    dataset takes (new items, discovery examples); None when there is nothing to steer."""
    ids, keys, dim = st.sampled_from(data.items[slug]), st.sampled_from(data.keys[slug]), data.dims[slug]
    vector = st.lists(st.floats(-1e6, 1e6, width=32), min_size=dim or 1, max_size=dim or 1)
    text = st.text(min_size=1, max_size=200).filter(str.strip)
    if path.endswith("/pairs/") and {"a", "b"} <= set(body):
        return st.fixed_dictionaries({"a": keys, "b": keys}).map(lambda ab: body | ab)
    if path.endswith("/pairs/bulk/") and isinstance(body.get("pairs"), list) and body["pairs"]:
        entries = body["pairs"]
        ab = st.fixed_dictionaries({"a": keys, "b": keys})
        return st.tuples(*[ab for _ in entries]).map(
            lambda abs_: (
                body
                | {"pairs": [e | x if isinstance(e, dict) else e for e, x in zip(entries, abs_, strict=True)]}
            )
        )
    if path.endswith("/items/") or path.endswith("/items/bulk/"):
        # Each item with the one content its dataset takes: text, or a vector of the dataset's dimension.
        content = vector.map(lambda v: {"vector": v}) if dim else text.map(lambda t: {"text": t})

        def one_item(entry: Any) -> st.SearchStrategy[Any]:
            if not isinstance(entry, dict):
                return st.just(entry)
            rest = {name: value for name, value in entry.items() if name not in ("text", "vector")}
            return content.map(lambda given: rest | given)

        if path.endswith("/items/"):
            return one_item(body)
        if isinstance(body.get("items"), list) and body["items"]:
            entries = body["items"]
            return st.tuples(*[one_item(entry) for entry in entries]).map(
                lambda items: body | {"items": list(items)}
            )
        return None
    if path.endswith("/recommend/"):
        # Ids of this dataset, plus texts (a text dataset) or vectors of its dimension (a vector one).
        examples = "positive_vectors" if dim else "positive_texts"
        other = {"positive_texts", "negative_texts", "positive_vectors", "negative_vectors"} - {
            examples,
            examples.replace("positive", "negative"),
        }
        kept = {name: value for name, value in body.items() if name not in other}
        parts: dict[str, st.SearchStrategy[Any]] = {
            "positive": st.lists(ids, min_size=1, max_size=3),
            "negative": st.lists(ids, max_size=2),
        }
        if dim:
            parts["positive_vectors"] = st.lists(vector, max_size=2)
        return st.fixed_dictionaries(parts).map(lambda values: kept | values)
    if path.endswith("/classify/"):
        # Exactly one input, of the dataset's kind.
        rest = {
            name: value for name, value in body.items() if name not in ("text", "texts", "vector", "vectors")
        }
        if dim:
            single, batch = "vector", "vectors"
            inputs = st.one_of(
                vector.map(lambda v: {single: v}),
                st.lists(vector, min_size=1, max_size=3).map(lambda v: {batch: v}),
            )
        else:
            inputs = st.one_of(
                text.map(lambda t: {"text": t}),
                st.lists(text, min_size=1, max_size=3).map(lambda t: {"texts": t}),
            )
        return inputs.map(lambda given: rest | given)
    return None


@dataclass
class ServerErrors:
    """Tracebacks of the exceptions Django turned into 500 responses, newest last."""

    tracebacks: list[str] = field(default_factory=list)

    def record(self, sender: Any, request: Any = None, **kwargs: Any) -> None:
        self.tracebacks.append(traceback.format_exc())


@contextmanager
def fuzz_session(data: FuzzData) -> Iterator[ServerErrors]:
    """While inside, the WSGI handler can be called in-process within a transaction of the caller's.

    Like Django's test client, it stops the handler from closing the database connection at the start and
    end of each request, which would end the transaction a case runs in; it accepts the host name that
    schemathesis sends, and answers as in production (DEBUG off)."""
    errors = ServerErrors()
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    got_request_exception.connect(errors.record)
    try:
        with override_settings(ALLOWED_HOSTS=["localhost", "testserver"], DEBUG=False):
            yield errors
    finally:
        got_request_exception.disconnect(errors.record)
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@contextmanager
def rolled_back() -> Iterator[None]:
    """Run one case in a transaction that is rolled back, then wait for the jobs it started."""
    try:
        with transaction.atomic():
            yield
            transaction.set_rollback(True)
    finally:
        background.drain()


def load_schema(data: FuzzData) -> Any:
    """The OpenAPI schema the app serves at ``/api/schema/``, fetched with the staff token from its own WSGI
    handler (call inside ``fuzz_session``); its cases call that handler in-process."""
    import schemathesis
    from django.core.handlers.wsgi import WSGIHandler

    schema = schemathesis.openapi.from_wsgi("/api/schema/", WSGIHandler(), headers=data.headers)
    steer_to_real_data(schema, data)
    return schema


def operations(schema: Any) -> list[Any]:
    """Every operation of the schema (an operation the schema cannot describe is an error, not skipped)."""
    return [result.ok() for result in schema.get_all_operations()]


def send(case: Any, data: FuzzData) -> Any:
    """Call the app with ``case`` as staff, its lone-surrogate stand-ins made real in a JSON body."""
    if "json" in (case.media_type or "") and isinstance(case.body, dict | list):
        raw = json.dumps(case.body)
        if _LONE_SURROGATE_JSON in raw:
            return case.call(headers=data.headers, data=raw.replace(_LONE_SURROGATE_JSON, "\\ud800").encode())
    return case.call(headers=data.headers)


@dataclass
class OperationReport:
    """What fuzzing one operation did: cases sent, their status codes, and the failure if one was found
    (hypothesis stops an operation at its first failure and reports the smallest input it shrank to)."""

    label: str
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failure: str | None = None


def fuzz_operation(
    operation: Any,
    *,
    data: FuzzData,
    errors: ServerErrors,
    examples: int,
    seed: int | None = None,
) -> OperationReport:
    """Send ``examples`` generated cases (valid and invalid input, in equal measure) to one operation, each
    in a rolled-back transaction, and check every response. Derandomised unless ``seed`` is given."""
    report = OperationReport(operation.label)
    strategy = st.one_of([operation.as_strategy(generation_mode=mode) for mode in GenerationMode])
    failing_traceback: list[str] = []

    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=seed is None,
        phases=[Phase.generate, Phase.target, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
    )
    @hypothesis.given(case=strategy)
    def run(case: Any) -> None:
        seen = len(errors.tracebacks)
        with rolled_back():
            response = send(case, data)
            report.cases += 1
            report.statuses[response.status_code] += 1
            try:
                case.validate_response(response, checks=CHECKS, headers=data.headers)
            except BaseException:
                # The exception behind a 500, which the response body does not carry.
                failing_traceback[:] = errors.tracebacks[seen:]
                raise

    if seed is not None:
        run = hypothesis.seed(seed)(run)
    try:
        run()
    except (Exception, BaseExceptionGroup) as exc:  # failed checks (a FailureGroup), or an error sending
        report.failure = "\n".join([_describe(exc), *failing_traceback])
    return report


def _describe(exc: BaseException) -> str:
    """What failed: schemathesis's report of each failure (with the request to reproduce it); hypothesis
    groups distinct failures of one operation."""
    if type(exc) in (ExceptionGroup, BaseExceptionGroup):
        return "\n\n".join(_describe(inner) for inner in exc.exceptions)  # type: ignore[attr-defined]
    if isinstance(exc, FailureGroup):
        return f"{type(exc).__name__}: {exc}"
    # Not a failed check: the case could not be sent or checked. Where, then, matters.
    return "".join(traceback.format_exception(exc))
