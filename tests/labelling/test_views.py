"""The labelling page through Django's test client: answers, skips, undo, graded mode and bad input."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.labelling.models import Pair
from tests.conftest import db_snapshot, session_client
from tests.factories import DatasetFactory, ItemFactory, PairFactory, UserFactory

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "labelling-work"}


@pytest.fixture
def dataset() -> Any:
    dataset = DatasetFactory(slug="faq")
    for n in range(6):
        ItemFactory(
            dataset=dataset, key=f"q{n}", text=f"question number {n}", label="pin" if n < 3 else "card"
        )
    return dataset


@pytest.fixture
def client(labeller: Any) -> Client:
    return session_client(labeller)


def shown(response: Any) -> tuple[int, int]:
    items = response.context["items"]
    assert items is not None, response.content.decode()[:2000]
    return items[0].pk, items[1].pk


def answer(client: Client, pair: tuple[int, int], value: str, **extra: Any) -> Any:
    data = {"a": pair[0], "b": pair[1], "answer": value, "strategy": "random"} | extra
    return client.post("/datasets/faq/label/answer/", data, **HTMX)


def labelled(a: Any, b: Any, annotator: Any, score: float = 1.0) -> Pair:
    """Items ``a`` and ``b`` labelled ``score`` by ``annotator`` on this page (source manual)."""
    return PairFactory(
        dataset=a.dataset, item_a=a, item_b=b, annotator=annotator, score=score, source="manual"
    )


def labels() -> list[tuple[int, int, float, str, str]]:
    return list(
        Pair.objects.order_by("id").values_list(
            "item_a_id", "item_b_id", "score", "annotator__username", "source"
        )
    )


def test_the_page_shows_two_items_of_the_dataset_with_the_answer_buttons(
    client: Client, dataset: Any
) -> None:
    response = client.get("/datasets/faq/label/")

    a, b = shown(response)
    html = response.content.decode()
    assert response.status_code == 200
    assert a < b and {a, b} <= set(dataset.items.values_list("id", flat=True))
    assert 'data-shortcut="1"' in html and 'aria-keyshortcuts="0"' in html
    assert (
        'aria-keyshortcuts="s"' in html
        and 'aria-keyshortcuts="u"' in html
        and 'aria-keyshortcuts="?"' in html
    )
    assert "Labelled by you: <strong>0</strong> / 100" in html
    assert 'role="dialog"' in html or "<dialog" in html


def test_anonymous_visitors_are_sent_to_log_in(dataset: Any) -> None:
    response = Client().get("/datasets/faq/label/")

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_an_answer_is_stored_for_the_user_and_the_next_pair_comes_back_in_the_same_request(
    client: Client, labeller: Any, dataset: Any
) -> None:
    first = shown(client.get("/datasets/faq/label/"))

    response = answer(client, first, "1")

    assert response.status_code == 200
    assert labels() == [(first[0], first[1], 1.0, "labeller", "manual")]
    assert shown(response) != first
    html = response.content.decode()
    assert "Labelled by you: <strong>1</strong> / 100" in html
    assert 'hx-swap-oob="innerHTML"' in html and "Saved: q" in html
    assert "<html" not in html  # the partial, not the page


def test_dissimilar_is_stored_as_0(client: Client, dataset: Any) -> None:
    pair = shown(client.get("/datasets/faq/label/"))

    answer(client, pair, "0")

    assert labels() == [(pair[0], pair[1], 0.0, "labeller", "manual")]


def test_a_double_submit_stores_one_label(client: Client, dataset: Any) -> None:
    pair = shown(client.get("/datasets/faq/label/"))

    first, second = answer(client, pair, "1"), answer(client, pair, "1")

    assert first.status_code == second.status_code == 200
    assert labels() == [(pair[0], pair[1], 1.0, "labeller", "manual")]
    assert client.session[f"labelling:{dataset.pk}:answers"] == [
        [Pair.objects.get().pk, pair[0], pair[1], None]
    ]


def test_graded_mode_stores_grade_n_as_n_minus_1_over_4(client: Client, dataset: Any) -> None:
    dataset.settings = {"label_mode": "graded"}
    dataset.save()
    page = client.get("/datasets/faq/label/")
    html = page.content.decode()
    assert all(f'data-shortcut="{n}"' in html for n in range(1, 6))
    pair = shown(page)

    second = shown(answer(client, pair, "4"))
    third = shown(answer(client, second, "1"))
    answer(client, third, "5")

    assert labels() == [
        (pair[0], pair[1], 0.75, "labeller", "manual"),
        (second[0], second[1], 0.0, "labeller", "manual"),
        (third[0], third[1], 1.0, "labeller", "manual"),
    ]


@pytest.mark.parametrize(
    ("dataset_settings", "value"),
    [({}, "3"), ({}, "0.5"), ({}, ""), ({"label_mode": "graded"}, "0"), ({"label_mode": "graded"}, "6")],
)
def test_an_answer_the_label_mode_does_not_have_is_refused_and_changes_nothing(
    client: Client, dataset: Any, dataset_settings: dict[str, Any], value: str
) -> None:
    dataset.settings = dataset_settings
    dataset.save()
    pair = shown(client.get("/datasets/faq/label/"))
    before = db_snapshot()

    response = answer(client, pair, value)

    assert response.status_code == 400
    assert 'role="alert"' in response.content.decode()
    assert db_snapshot() == before


def test_answering_a_pair_of_another_dataset_is_refused_and_changes_nothing(
    client: Client, dataset: Any
) -> None:
    other = DatasetFactory(slug="other")
    foreign = [ItemFactory(dataset=other) for _ in range(2)]
    mine = dataset.items.first()
    before = db_snapshot()

    both_foreign = answer(client, (foreign[0].pk, foreign[1].pk), "1")
    one_foreign = answer(client, (mine.pk, foreign[0].pk), "1")

    assert both_foreign.status_code == one_foreign.status_code == 400
    assert "not both items of dataset &#x27;faq&#x27;" in one_foreign.content.decode()
    assert db_snapshot() == before


@pytest.mark.parametrize(
    "data",
    [
        {"a": "x", "b": "2", "answer": "1"},
        {"a": "1", "answer": "1"},
        {"a": "5", "b": "5", "answer": "1"},
        {"a": "-1", "b": "2", "answer": "1"},
        {"a": str(10**30), "b": "2", "answer": "1"},
        {"a": "1", "b": "2", "answer": "1", "strategy": "best"},
    ],
)
def test_malformed_answers_are_refused_and_change_nothing(
    client: Client, dataset: Any, data: dict[str, str]
) -> None:
    before = db_snapshot()

    response = client.post("/datasets/faq/label/answer/", data, **HTMX)

    assert response.status_code == 400
    assert db_snapshot() == before


def test_an_unknown_strategy_is_a_message_not_an_error_page(client: Client, dataset: Any) -> None:
    response = client.get("/datasets/faq/label/?strategy=smartest")

    assert response.status_code == 400
    assert "Unknown strategy &#x27;smartest&#x27;; choose one of: random, uncertain, hard, review." in (
        response.content.decode()
    )


def test_an_unknown_dataset_is_404_and_wrong_methods_are_405(client: Client, dataset: Any) -> None:
    assert client.get("/datasets/nope/label/").status_code == 404
    assert client.get("/datasets/faq/label/answer/").status_code == 405
    assert client.post("/datasets/faq/label/").status_code == 405


def test_skip_stores_nothing_and_the_skipped_pair_is_not_offered_again_right_away(
    client: Client, dataset: Any
) -> None:
    seen = [shown(client.get("/datasets/faq/label/"))]
    before = db_snapshot()

    for _ in range(5):
        response = client.post("/datasets/faq/label/skip/", {"a": seen[-1][0], "b": seen[-1][1]}, **HTMX)
        assert response.status_code == 200
        seen.append(shown(response))

    assert db_snapshot() == before
    assert len(set(seen)) == 6  # 15 pairs among 6 items: each skip brought a new one
    assert "Skipped." in response.content.decode()


def test_undo_removes_only_the_users_last_answer_and_shows_that_pair_again(
    client: Client, labeller: Any, dataset: Any
) -> None:
    items = list(dataset.items.order_by("id"))
    labelled(items[0], items[1], UserFactory(username="other"))
    first = shown(client.get("/datasets/faq/label/"))
    second = shown(answer(client, first, "1"))
    answer(client, second, "0")

    response = client.post("/datasets/faq/label/undo/", {"strategy": "random"}, **HTMX)

    assert response.status_code == 200
    assert shown(response) == second
    assert sorted(labels()) == sorted(
        [(items[0].pk, items[1].pk, 1.0, "other", "manual"), (first[0], first[1], 1.0, "labeller", "manual")]
    )
    assert "Undone" in response.content.decode()


def test_undo_twice_goes_back_two_answers_and_a_third_has_nothing_left(client: Client, dataset: Any) -> None:
    first = shown(client.get("/datasets/faq/label/"))
    second = shown(answer(client, first, "1"))
    answer(client, second, "1")

    back = client.post("/datasets/faq/label/undo/", {}, **HTMX)
    back_again = client.post("/datasets/faq/label/undo/", {}, **HTMX)
    nothing = client.post("/datasets/faq/label/undo/", {"a": first[0], "b": first[1]}, **HTMX)

    assert (shown(back), shown(back_again), shown(nothing)) == (second, first, first)
    assert labels() == []
    assert "Nothing to undo." in nothing.content.decode()


def test_undo_of_an_answer_that_replaced_one_restores_the_earlier_score(
    client: Client, labeller: Any, dataset: Any
) -> None:
    items = list(dataset.items.order_by("id"))
    labelled(items[0], items[1], labeller, score=0.0)

    answer(client, (items[0].pk, items[1].pk), "1")
    assert labels() == [(items[0].pk, items[1].pk, 1.0, "labeller", "manual")]
    client.post("/datasets/faq/label/undo/", {}, **HTMX)

    assert labels() == [(items[0].pk, items[1].pk, 0.0, "labeller", "manual")]


def test_without_an_active_model_uncertain_and_hard_fall_back_to_random_and_say_so(
    client: Client, dataset: Any
) -> None:
    for strategy in ("uncertain", "hard"):
        response = client.get(f"/datasets/faq/label/?strategy={strategy}")

        assert response.status_code == 200
        assert response.context["shown"].used == "random"
        assert "No active model yet" in response.content.decode()
        shown(response)


def test_review_offers_the_pair_one_other_annotator_labelled(client: Client, dataset: Any) -> None:
    dataset.settings = {"annotators_per_pair": 2}
    dataset.save()
    items = list(dataset.items.order_by("id"))
    labelled(items[2], items[4], UserFactory(username="other"))

    response = client.get("/datasets/faq/label/?strategy=review")
    after = answer(client, shown(response), "1", strategy="review")

    assert shown(response) == (items[2].pk, items[4].pk)
    assert response.context["shown"].used == "review"
    assert after.context["shown"].used == "random"  # nothing left to review
    assert "Nothing to review" in after.content.decode()


def test_unusable_settings_fall_back_to_defaults_and_say_so(client: Client, dataset: Any) -> None:
    dataset.settings = {"label_mode": "stars", "label_target": 0, "annotators_per_pair": "two"}
    dataset.save()

    response = client.get("/datasets/faq/label/")

    html = response.content.decode()
    assert response.status_code == 200
    assert "The setting label_mode = &#x27;stars&#x27; is not" in html
    assert "Labelled by you: <strong>0</strong> / 100" in html


def test_without_htmx_an_answer_renders_the_whole_page(client: Client, dataset: Any) -> None:
    pair = shown(client.get("/datasets/faq/label/"))

    response = client.post("/datasets/faq/label/answer/", {"a": pair[0], "b": pair[1], "answer": "1"})

    assert response.status_code == 200
    assert "<html" in response.content.decode()
    assert labels() == [(pair[0], pair[1], 1.0, "labeller", "manual")]


def test_progress_and_per_annotator_counts(client: Client, labeller: Any, dataset: Any) -> None:
    dataset.settings = {"label_target": 3}
    dataset.save()
    items = list(dataset.items.order_by("id"))
    other = UserFactory(username="other")
    for b in items[1:3]:
        labelled(items[0], b, other)
    pair = shown(client.get("/datasets/faq/label/"))

    response = answer(client, pair, "1")

    assert response.context["annotators"] == [("other", 2), ("labeller", 1)]
    assert "Labelled by you: <strong>1</strong> / 3" in response.content.decode()


def test_when_every_pair_is_labelled_the_page_says_so(client: Client, labeller: Any) -> None:
    dataset = DatasetFactory(slug="faq")
    a, b = ItemFactory(dataset=dataset), ItemFactory(dataset=dataset)
    labelled(a, b, labeller)

    response = client.get("/datasets/faq/label/")

    assert response.context["items"] is None
    assert "Nothing left to label" in response.content.decode()


def test_a_dataset_with_one_item_has_nothing_to_label(client: Client) -> None:
    ItemFactory(dataset=DatasetFactory(slug="faq"))

    response = client.get("/datasets/faq/label/")

    assert response.status_code == 200
    assert response.context["items"] is None
    assert "This dataset has fewer than two items" in response.content.decode()
