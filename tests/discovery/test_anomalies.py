"""Anomaly scores, their list, histogram and item views, and feedback, over a real trained CLINC150 slice.

The retrain (MiniLM, MLP head, embedded Qdrant) runs once for the module; each test's feedback, pairs and
settings roll back with it. Rescoring runs in the job thread and is tested in ``test_jobs``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from django.db.models import Q
from rest_framework.test import APIClient

from apps.discovery.models import AnomalyFeedback, AnomalyScore
from apps.labelling.models import Pair
from apps.training.index import index_alias, vector_store
from apps.training.models import ModelVersion
from simapp.learning.anomaly import trimmed_knn_scores
from tests.discovery.conftest import Trained, state
from tests.factories import DatasetFactory, ItemFactory

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

URL = "/api/datasets/clinc/anomalies/"


def active() -> ModelVersion:
    return ModelVersion.objects.get(dataset__slug="clinc", is_active=True)


def scores_desc() -> list[tuple[int, float]]:
    """(item id, score) of the active version, highest first (ties by item id, as the API orders them)."""
    rows = AnomalyScore.objects.filter(version=active()).values_list("item_id", "score")
    return sorted(rows, key=lambda r: (-r[1], r[0]))


def nearest(clinc: Trained, item_id: int, *, exclude: tuple[int, ...] = ()) -> list[int]:
    """The other items by cosine similarity of their indexed vectors to ``item_id``'s, nearest first."""
    vectors = vector_store().get_vectors(index_alias(clinc.dataset), clinc.ids)
    sims = {i: float(vectors[item_id] @ v) for i, v in vectors.items() if i != item_id and i not in exclude}
    return sorted(sims, key=lambda i: -sims[i])


def feedback_pairs(user: Any, item_id: int) -> list[tuple[int, int, float, str]]:
    return sorted(
        Pair.objects.filter(Q(item_a_id=item_id) | Q(item_b_id=item_id), annotator=user).values_list(
            "item_a_id", "item_b_id", "score", "source"
        )
    )


def pairs_with(item_id: int, others: list[int], score: float) -> list[tuple[int, int, float, str]]:
    return sorted((min(item_id, o), max(item_id, o), score, "feedback") for o in others)


# -- the scores the retrain stored --------------------------------------------------------------------------


def test_the_retrain_scored_every_item_for_the_active_version(clinc: Trained) -> None:
    version = active()
    scored = dict(AnomalyScore.objects.filter(version=version).values_list("item_id", "score"))
    vectors = vector_store().get_vectors(index_alias(clinc.dataset), clinc.ids)

    # Every item of the slice is labelled, so every one stays in the reference set: a label is a person
    # saying which known class the item belongs to.
    expected = trimmed_knn_scores(
        np.stack([vectors[i] for i in clinc.ids]),
        k=10,
        distance="cosine",
        contamination=0.05,
        normal=range(len(clinc.ids)),
    )

    assert sorted(scored) == clinc.ids
    np.testing.assert_allclose([scored[i] for i in clinc.ids], expected.scores, rtol=1e-4, atol=1e-5)
    summary = dict(version.metrics["anomaly"])
    assert summary.pop("seconds") >= 0
    assert summary == {
        "k": 10,
        "contamination": 0.05,
        "scored": 60,
        "reference": int(expected.reference.sum()),
        "feedback_normal": 0,
        "labelled_normal": 60,
        "feedback_anomaly": 0,
    }
    assert summary["reference"] == 60  # nothing trimmed: every item is labelled


# -- list ---------------------------------------------------------------------------------------------------


def test_the_list_ranks_items_by_score_with_the_contamination_threshold(
    labeller_api: APIClient, clinc: Trained
) -> None:
    ranked = scores_desc()

    body = labeller_api.get(URL).json()
    rest = labeller_api.get(f"{URL}?offset=50").json()

    assert body["version"] == 1 and body["k"] == 10 and body["contamination"] == 0.05
    assert body["count"] == 60 and len(body["results"]) == 50 and len(rest["results"]) == 10
    results = body["results"] + rest["results"]
    assert [r["item"]["id"] for r in results] == [i for i, _ in ranked]
    assert [r["score"] for r in results] == [round(s, 6) for _, s in ranked]
    assert [r["rank"] for r in results] == list(range(1, 61))  # no two items share a score here
    assert body["threshold_source"] == "contamination"
    assert body["threshold"] == ranked[math.floor(60 * 0.05)][1]  # the 4th score: 3 items lie above it
    assert body["above_threshold"] == 3
    first = results[0]
    assert first["feedback"] == {"anomaly": 0, "normal": 0} and first["my_verdict"] is None
    row = clinc.item[first["item"]["id"]]
    assert first["item"] == {k: row[k] for k in ("id", "key", "label", "text", "metadata")}


def test_above_keeps_the_items_over_the_threshold(labeller_api: APIClient, clinc: Trained) -> None:
    ranked = scores_desc()

    body = labeller_api.get(f"{URL}?above=true").json()
    every = labeller_api.get(f"{URL}?above=false&limit=200").json()

    assert [r["item"]["id"] for r in body["results"]] == [i for i, _ in ranked[:3]]
    assert body["count"] == 3 == body["above_threshold"]
    assert all(r["score"] > body["threshold"] for r in body["results"])
    assert every["count"] == 60


def test_a_contamination_setting_moves_the_threshold(
    staff_api: APIClient, labeller_api: APIClient, clinc: Trained
) -> None:
    ranked = scores_desc()
    patched = staff_api.patch("/api/datasets/clinc/", {"settings": {"contamination": 0.1}}, format="json")

    body = labeller_api.get(f"{URL}?above=true").json()

    assert patched.status_code == 200
    assert body["contamination"] == 0.1 and body["threshold_source"] == "contamination"
    assert body["threshold"] == ranked[6][1] and body["above_threshold"] == 6 == body["count"]


def test_an_absolute_threshold_setting_replaces_the_quantile(
    staff_api: APIClient, labeller_api: APIClient, clinc: Trained
) -> None:
    ranked = scores_desc()
    cut = (ranked[8][1] + ranked[9][1]) / 2  # nine items lie above it
    patched = staff_api.patch("/api/datasets/clinc/", {"settings": {"anomaly_threshold": cut}}, format="json")

    body = labeller_api.get(f"{URL}?above=true").json()
    histogram = labeller_api.get(f"{URL}histogram/").json()
    item = labeller_api.get(f"{URL}{ranked[8][0]}/").json()

    assert patched.status_code == 200
    assert (body["threshold"], body["threshold_source"]) == (cut, "absolute")
    assert body["above_threshold"] == 9 == body["count"]
    assert [r["item"]["id"] for r in body["results"]] == [i for i, _ in ranked[:9]]
    assert histogram["threshold"] == cut
    assert item["threshold"] == cut and item["above_threshold"] is True


def test_verdict_filters_and_my_verdict(
    staff_api: APIClient, labeller_api: APIClient, clinc: Trained
) -> None:
    ranked = [i for i, _ in scores_desc()]
    confirmed, cleared, disputed = ranked[0], ranked[1], ranked[2]
    for api, item, verdict in [
        (labeller_api, confirmed, "anomaly"),
        (labeller_api, cleared, "normal"),
        (labeller_api, disputed, "anomaly"),
        (staff_api, disputed, "normal"),  # a tie counts as normal
    ]:
        assert api.put(f"{URL}{item}/feedback/", {"verdict": verdict}, format="json").status_code == 200

    def listed(query: str, api: APIClient = labeller_api) -> list[dict[str, Any]]:
        body = api.get(f"{URL}?{query}&limit=200").json()
        assert body["count"] == len(body["results"])
        return body["results"]

    anomalies = listed("verdict=anomaly")
    normal = listed("verdict=normal")
    unreviewed = listed("verdict=unreviewed")
    every = {r["item"]["id"]: r for r in listed("verdict=any")}
    staff_view = {r["item"]["id"]: r for r in listed("verdict=any", staff_api)}

    assert [r["item"]["id"] for r in anomalies] == [confirmed]
    assert [r["item"]["id"] for r in normal] == [cleared, disputed]
    assert [r["item"]["id"] for r in unreviewed] == ranked[3:]
    assert every[disputed]["feedback"] == {"anomaly": 1, "normal": 1}
    assert every[confirmed]["feedback"] == {"anomaly": 1, "normal": 0}
    assert [every[i]["my_verdict"] for i in (confirmed, cleared, disputed, ranked[3])] == [
        "anomaly",
        "normal",
        "anomaly",
        None,
    ]
    assert [staff_view[i]["my_verdict"] for i in (confirmed, disputed)] == [None, "normal"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("verdict=maybe", "must be any, unreviewed, anomaly or normal"),
        ("above=yes", "must be true or false"),
        ("limit=0", "must be from 1 to 200"),
        ("limit=201", "must be from 1 to 200"),
        ("offset=-1", "must be from 0 to"),
        ("offset=x", "'x' is not an integer"),
    ],
)
def test_bad_list_queries_are_400(labeller_api: APIClient, clinc: Trained, query: str, message: str) -> None:
    response = labeller_api.get(f"{URL}?{query}")

    assert response.status_code == 400 and message in str(response.json())


# -- histogram ----------------------------------------------------------------------------------------------


def test_the_histogram_counts_every_score(labeller_api: APIClient, clinc: Trained) -> None:
    ranked = scores_desc()
    threshold = labeller_api.get(URL).json()["threshold"]

    body = labeller_api.get(f"{URL}histogram/").json()
    five = labeller_api.get(f"{URL}histogram/?bins=5").json()

    assert body["version"] == 1 and body["n"] == 60 and body["threshold"] == threshold
    assert len(body["bins"]) == 30 and sum(b["count"] for b in body["bins"]) == 60
    assert len(five["bins"]) == 5 and sum(b["count"] for b in five["bins"]) == 60
    assert body["min"] == pytest.approx(ranked[-1][1]) and body["max"] == pytest.approx(ranked[0][1])
    assert body["bins"][0]["lo"] == body["min"] and body["bins"][-1]["hi"] == body["max"]
    for left, right in zip(body["bins"], body["bins"][1:], strict=False):
        assert left["hi"] == right["lo"]
    scores = np.asarray([s for _, s in ranked])
    top = five["bins"][-1]
    assert top["count"] == int(((scores >= top["lo"]) & (scores <= top["hi"])).sum())


@pytest.mark.parametrize(
    ("query", "message"), [("bins=1", "must be from 2 to 200"), ("bins=x", "not an integer")]
)
def test_bad_histogram_queries_are_400(
    labeller_api: APIClient, clinc: Trained, query: str, message: str
) -> None:
    response = labeller_api.get(f"{URL}histogram/?{query}")

    assert response.status_code == 400 and message in str(response.json())


# -- one item -----------------------------------------------------------------------------------------------


def test_an_item_shows_its_score_rank_and_neighbours(labeller_api: APIClient, clinc: Trained) -> None:
    ranked = scores_desc()
    item, score = ranked[4]

    response = labeller_api.get(f"{URL}{item}/")
    three = labeller_api.get(f"{URL}{item}/?limit=3").json()

    assert response.status_code == 200
    body = response.json()
    assert body["version"] == 1 and body["scored"] == 60
    assert (body["score"], body["rank"]) == (round(score, 6), 5)
    assert body["above_threshold"] is False  # rank 5; three items lie above the threshold
    assert body["item"]["id"] == item and body["feedback"] == [] and body["my_verdict"] is None
    assert [n["item"]["id"] for n in body["neighbours"]] == nearest(clinc, item)[:10]
    assert [n["item"]["id"] for n in three["neighbours"]] == nearest(clinc, item)[:3]

    top = labeller_api.get(f"{URL}{ranked[0][0]}/").json()
    assert (top["rank"], top["above_threshold"]) == (1, True)


def test_an_item_shows_everyones_feedback(
    staff_api: APIClient, labeller_api: APIClient, clinc: Trained
) -> None:
    item = clinc.ids[5]
    labeller_api.put(f"{URL}{item}/feedback/", {"verdict": "anomaly"}, format="json")
    staff_api.put(f"{URL}{item}/feedback/", {"verdict": "normal"}, format="json")

    body = labeller_api.get(f"{URL}{item}/").json()

    assert sorted((f["user"], f["verdict"]) for f in body["feedback"]) == [
        ("admin", "normal"),
        ("labeller", "anomaly"),
    ]
    assert body["my_verdict"] == "anomaly"


def test_an_unknown_item_is_404(labeller_api: APIClient, clinc: Trained) -> None:
    elsewhere = ItemFactory(dataset=DatasetFactory(slug="other"))

    assert labeller_api.get(f"{URL}999999/").status_code == 404
    assert labeller_api.get(f"{URL}{elsewhere.pk}/").status_code == 404


# -- feedback -----------------------------------------------------------------------------------------------


def test_a_confirmed_anomaly_becomes_dissimilar_to_its_nearest_neighbours(
    labeller_api: APIClient, labeller: Any, clinc: Trained
) -> None:
    item = clinc.by_label["apr"][2]

    response = labeller_api.put(f"{URL}{item}/feedback/", {"verdict": "anomaly"}, format="json")

    assert response.status_code == 200
    assert response.json() == {"item": item, "verdict": "anomaly", "pairs_added": 5}
    feedback = AnomalyFeedback.objects.get()
    assert (feedback.item_id, feedback.user, feedback.verdict) == (item, labeller, "anomaly")
    assert feedback_pairs(labeller, item) == pairs_with(item, nearest(clinc, item)[:5], 0.0)
    assert sorted(feedback.pair_ids) == sorted(Pair.objects.values_list("id", flat=True))


def test_changing_the_verdict_replaces_exactly_its_pairs(
    labeller_api: APIClient, labeller: Any, clinc: Trained
) -> None:
    item = clinc.by_label["apr"][2]
    labeller_api.put(f"{URL}{item}/feedback/", {"verdict": "anomaly"}, format="json")
    old = set(AnomalyFeedback.objects.get().pair_ids)

    response = labeller_api.put(f"{URL}{item}/feedback/", {"verdict": "normal"}, format="json")

    assert response.json() == {"item": item, "verdict": "normal", "pairs_added": 5}
    feedback = AnomalyFeedback.objects.get()
    assert feedback.verdict == "normal" and not old & set(feedback.pair_ids)
    assert not Pair.objects.filter(pk__in=old).exists()
    assert feedback_pairs(labeller, item) == pairs_with(item, nearest(clinc, item)[:5], 1.0)
    assert Pair.objects.count() == 5


def test_withdrawing_the_verdict_removes_its_pairs(
    labeller_api: APIClient, labeller: Any, clinc: Trained
) -> None:
    item = clinc.by_label["apr"][2]
    labeller_api.put(f"{URL}{item}/feedback/", {"verdict": "anomaly"}, format="json")

    response = labeller_api.delete(f"{URL}{item}/feedback/")
    before = state()
    again = labeller_api.delete(f"{URL}{item}/feedback/")

    assert response.status_code == 204
    assert not AnomalyFeedback.objects.exists() and not Pair.objects.exists()
    assert again.status_code == 404 and again.json() == {"detail": "you have no verdict on this item"}
    assert state() == before


def test_not_an_anomaly_pairs_skip_confirmed_anomalies(
    staff_api: APIClient, labeller_api: APIClient, labeller: Any, clinc: Trained
) -> None:
    item = clinc.by_label["alarm"][4]
    closest = nearest(clinc, item)
    staff_api.put(f"{URL}{closest[0]}/feedback/", {"verdict": "anomaly"}, format="json")
    staff_api.put(f"{URL}{closest[2]}/feedback/", {"verdict": "anomaly"}, format="json")

    response = labeller_api.put(f"{URL}{item}/feedback/", {"verdict": "normal"}, format="json")

    assert response.json()["pairs_added"] == 5
    others = nearest(clinc, item, exclude=(closest[0], closest[2]))[:5]
    assert feedback_pairs(labeller, item) == pairs_with(item, others, 1.0)


def test_a_persons_own_pair_label_is_never_overwritten(
    staff_api: APIClient, labeller_api: APIClient, labeller: Any, staff_user: Any, clinc: Trained
) -> None:
    item = clinc.by_label["apr"][2]
    neighbour = nearest(clinc, item)[0]
    a, b = sorted((item, neighbour))
    own = Pair.objects.create(
        dataset=clinc.dataset, item_a_id=a, item_b_id=b, score=0.5, annotator=labeller, source="manual"
    )
    own_row = Pair.objects.filter(pk=own.pk).values_list().get()

    added = labeller_api.put(f"{URL}{item}/feedback/", {"verdict": "anomaly"}, format="json").json()
    changed = labeller_api.put(f"{URL}{item}/feedback/", {"verdict": "normal"}, format="json").json()
    others = staff_api.put(f"{URL}{item}/feedback/", {"verdict": "anomaly"}, format="json").json()
    labeller_api.delete(f"{URL}{item}/feedback/")

    assert (added["pairs_added"], changed["pairs_added"]) == (4, 4)
    assert others["pairs_added"] == 5  # another person's verdict: their own pairs, the neighbour included
    assert Pair.objects.filter(pk=own.pk).values_list().get() == own_row
    assert list(Pair.objects.filter(annotator=labeller).values_list("id", flat=True)) == [own.pk]
    assert feedback_pairs(staff_user, item) == pairs_with(item, nearest(clinc, item)[:5], 0.0)


@pytest.mark.parametrize(
    "payload", [{"verdict": "maybe"}, {"verdict": ""}, {"verdict": None}, {}, {"verdict": ["anomaly"]}]
)
def test_a_bad_verdict_is_400_and_changes_nothing(
    labeller_api: APIClient, clinc: Trained, payload: dict[str, Any]
) -> None:
    item = clinc.ids[0]
    labeller_api.put(f"{URL}{item}/feedback/", {"verdict": "normal"}, format="json")
    before = state()

    response = labeller_api.put(f"{URL}{item}/feedback/", payload, format="json")

    assert response.status_code == 400 and "verdict" in response.json()
    assert state() == before
    assert AnomalyFeedback.objects.get().verdict == "normal" and Pair.objects.count() == 5


def test_feedback_on_an_unknown_item_is_404_and_changes_nothing(
    labeller_api: APIClient, clinc: Trained
) -> None:
    elsewhere = ItemFactory(dataset=DatasetFactory(slug="other"))
    before = state()

    responses = [
        labeller_api.put(f"{URL}999999/feedback/", {"verdict": "anomaly"}, format="json"),
        labeller_api.put(f"{URL}{elsewhere.pk}/feedback/", {"verdict": "anomaly"}, format="json"),
        labeller_api.delete(f"{URL}{elsewhere.pk}/feedback/"),
        labeller_api.put(f"/api/datasets/nope/anomalies/{clinc.ids[0]}/feedback/", {"verdict": "anomaly"}),
    ]

    assert [r.status_code for r in responses] == [404, 404, 404, 404]
    assert state() == before


# -- rescoring ----------------------------------------------------------------------------------------------


def test_rescoring_is_for_staff_only(labeller_api: APIClient, clinc: Trained) -> None:
    before = state()

    response = labeller_api.post(f"{URL}rescore/")

    assert response.status_code == 403
    assert state() == before


def test_a_labelled_class_apart_from_the_rest_stays_normal_and_unlabelled_strays_do_not(db: Any) -> None:
    from apps.discovery.services import anomaly_scores_compute
    from apps.training.models import TrainingRun

    dataset = DatasetFactory(slug="apart")
    rng = np.random.default_rng(0)
    # 150 items of a broad class, 6 of a small class far from it (all labelled), 6 unlabelled strays.
    broad = rng.normal(0, 1, (150, 8)) + np.array([8.0] + [0.0] * 7)
    small = rng.normal(0, 0.3, (6, 8)) + np.array([0.0, 8.0] + [0.0] * 6)
    strays = rng.normal(0, 4, (6, 8)) + np.array([0.0, 0.0, -8.0] + [0.0] * 5)
    labels = ["broad"] * 150 + ["small"] * 6 + [""] * 6
    items = [ItemFactory(dataset=dataset, label=label) for label in labels]
    run = TrainingRun.objects.create(dataset=dataset)
    version = ModelVersion.objects.create(dataset=dataset, run=run, number=1, collection="apart-v1")
    vectors = np.concatenate([broad, small, strays]).astype(np.float32)

    summary = anomaly_scores_compute(
        dataset=dataset,
        version=version,
        item_ids=[i.id for i in items],
        vectors=vectors,
        distance="euclidean",
    )
    plain = trimmed_knn_scores(vectors, k=10, distance="euclidean", contamination=0.05)

    scores = dict(AnomalyScore.objects.filter(version=version).values_list("item_id", "score"))
    top = sorted(scores, key=lambda i: -scores[i])[:6]
    assert {i.id for i in items[156:]} == set(top)  # the strays, not the small class
    assert summary["labelled_normal"] == 156 and summary["reference"] == 156
    # Trimming alone takes the small class for anomalies and drops (some of) it from the reference set.
    assert not plain.reference[150:156].all()
