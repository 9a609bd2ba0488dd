"""Schema-driven fuzzing of the whole REST API: every operation of ``/api/schema/``, with generated valid and
invalid input, as staff (who reach every endpoint), against real trained data. No input may get a 5xx, and
every documented response must match its schema.

A bounded run (``EXAMPLES`` cases per operation, derandomised so that CI is reproducible); ``python -m
bench.fuzz --examples N`` runs as many as asked, with a new seed each time. How the data is built, cases are
steered to it and each case is isolated: ``tests/fuzzing.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.discovery.conftest import fresh_data_dir
from tests.fuzzing import (
    FuzzData,
    fuzz_data_build,
    fuzz_data_remove,
    fuzz_operation,
    fuzz_session,
    load_schema,
    operations,
)

# Cases per operation: the bounded run of `make test` (1.5 to 2.5 minutes on two busy cores, setup included).
# SIMAPP_FUZZ_EXAMPLES=200 runs longer, against whichever database DATABASE_URL names.
EXAMPLES = int(os.environ.get("SIMAPP_FUZZ_EXAMPLES", "120"))

# Transactional: no transaction of pytest-django's wraps the test, so each case's own is the outermost one
# and is really rolled back, and a job a case starts sees only the committed data, as in production.
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def fuzz_data(
    django_db_setup: Any, django_db_blocker: Any, tmp_path_factory: Any, shared_data: Path
) -> Iterator[FuzzData]:
    """The datasets, committed for the module (each case rolls its own writes back)."""
    with django_db_blocker.unblock(), fresh_data_dir(tmp_path_factory.mktemp("fuzz")):
        try:
            yield fuzz_data_build(shared_data)
        finally:
            fuzz_data_remove()


def test_no_input_gets_a_server_error(fuzz_data: FuzzData, subtests: Any) -> None:
    with fuzz_session(fuzz_data) as errors:
        schema = load_schema(fuzz_data)
        reports = []
        for operation in operations(schema):
            with subtests.test(msg=operation.label):
                report = fuzz_operation(operation, data=fuzz_data, errors=errors, examples=EXAMPLES)
                reports.append(report)
                print(report.label, report.cases, dict(sorted(report.statuses.items())))  # shown with -s
                assert report.failure is None, report.failure

    # the steering sent cases past the 404s of unknown slugs and ids, to views that answered (an operation
    # whose path parameters it does not know would only get 404s: tests/fuzzing.py must learn them)
    assert [report.label for report in reports if not set(report.statuses) - {404}] == []
    assert sum(n for report in reports for code, n in report.statuses.items() if 200 <= code < 300) > 0
