"""Load over real HTTP: labellers submitting at once through the label API, and simultaneous retrain
requests, against gunicorn serving the test database (SQLite locally, PostgreSQL in CI).

The same code as ``python -m bench.load``. The benchmark runs 20 labellers x 1,000 labels; here each of
the 20 sends 50, because 20,000 labels take minutes on the two shared cores this suite runs on (about 65
to 100 labels/s with other work running; see BENCHMARKS.md, "Load"). Twenty users at once is the point,
and every label sent must be stored exactly once.

The server has a Celery broker (Redis) and no worker, as in production where workers are other machines:
a started retrain stays queued, so the race is decided by the start alone and not by how fast a run ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from django.db import connection

from apps.training.models import TrainingRun
from bench import load

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

LABELLERS = 20
LABELS = 50  # per labeller
BROKER = os.environ.get("SIMAPP_TEST_LOAD_BROKER_URL", load.DEFAULT_BROKER)


@pytest.fixture(scope="module")
def redis_db() -> Iterator[redis.Redis]:
    """A Redis database of the load tests' own. CI runs Redis (.ci/run); without it this fails, it does
    not skip."""
    client = redis.Redis.from_url(BROKER, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        raise AssertionError(f"the load tests need Redis at {BROKER} (start redis-server): {exc}") from None
    yield client
    client.flushdb()


@pytest.fixture
def broker(redis_db: redis.Redis) -> redis.Redis:
    """The broker's database, empty when the test begins."""
    redis_db.flushdb()
    return redis_db


@pytest.fixture(scope="module")
def server(
    django_db_setup: None, redis_db: redis.Redis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[load.Server]:
    """One gunicorn for the module (it takes seconds to start), serving the test database."""
    url = load.database_url(connection.settings_dict)
    with load.serve(database_url=url, data_dir=tmp_path_factory.mktemp("load"), broker_url=BROKER) as running:
        yield running


def test_twenty_labellers_at_once_store_every_label_exactly_once(
    server: load.Server, broker: redis.Redis
) -> None:
    plan = load.prepare(labellers=LABELLERS, labels=LABELS)

    result = load.label_concurrently(server.port, plan, timeout=300)

    assert (result.errors, result.error_samples) == (0, []), server.log_tail()
    assert (result.sent, result.created) == (LABELLERS * LABELS, LABELLERS * LABELS)
    assert load.stored(plan) == {
        "pairs_stored": LABELLERS * LABELS,
        "pairs_expected": LABELLERS * LABELS,
        "pairs_missing": 0,
        "pairs_unexpected": 0,
        "runs": 0,
    }


def test_ten_simultaneous_retrain_requests_create_one_run(server: load.Server, broker: redis.Redis) -> None:
    plan = load.prepare(labellers=0, labels=0)

    race = load.retrain_race(server.port, token=plan.staff_token, slug=plan.slug, racers=10)

    assert sorted(race.statuses) == [200] * 9 + [201], (race.details, server.log_tail())
    (run_id,) = set(race.run_ids)
    assert list(TrainingRun.objects.values_list("id", "status", "config")) == [
        (run_id, "queued", {"encoder": "minilm", "head": "identity"})
    ]
    assert broker.llen("gpu") == 1  # one job message for the one run, waiting for a worker
