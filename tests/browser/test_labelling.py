"""The labellers' page in a real browser: answers with the keyboard (1 / 0, 1-5 in graded mode), undo,
skip and the help overlay, checked in the database; screenshots of what a labeller sees."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from apps.datasets.models import Dataset
from apps.labelling.models import Pair
from tests.browser.conftest import login, shot
from tests.discovery.conftest import clinc_slice
from tests.factories import UserFactory
from tests.training.conftest import make_dataset

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def labeller(transactional_db: Any) -> Any:
    return UserFactory(username="labeller")


@pytest.fixture
def clinc(shared_data: Path) -> Dataset:
    """Real CLINC150 queries (five intents, four each), not trained: random pairs need no model."""
    return make_dataset("clinc", clinc_slice(shared_data, intents=5, per_intent=4))


def on_screen(page: Page) -> tuple[int, int]:
    """The pair the page shows (its hidden form fields)."""
    form = page.locator("#labelling-work form")
    return int(form.locator("input[name=a]").input_value()), int(form.locator("input[name=b]").input_value())


def progress(page: Page, n: int) -> None:
    expect(page.locator(".lb-progress label")).to_contain_text(f"Labelled by you: {n} /")


def stored(user: Any) -> list[tuple[int, int, float, str, str]]:
    return list(
        Pair.objects.filter(annotator=user)
        .order_by("id")
        .values_list("item_a_id", "item_b_id", "score", "annotator__username", "source")
    )


def test_label_five_pairs_with_the_keyboard_then_undo_skip_and_help(
    page: Page, labeller: Any, clinc: Dataset
) -> None:
    login(page, labeller)
    page.goto("/datasets/clinc/")
    page.get_by_role("navigation", name="Dataset").get_by_role("link", name="Label").click()
    page.wait_for_url("**/datasets/clinc/label/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Label pairs")
    expect(page.get_by_role("button", name="Similar (key 1)")).to_be_visible()
    progress(page, 0)
    shot(page, "labelling")

    answered = []
    for n, key in enumerate(["1", "0", "1", "1", "0"], start=1):
        pair = on_screen(page)
        page.keyboard.press(key)
        progress(page, n)  # the answer and the next pair came back in one swap
        expect(page.locator("#labelling-status")).to_contain_text("Saved:")
        answered.append((pair[0], pair[1], float(key), "labeller", "manual"))
        assert on_screen(page) != pair
    assert stored(labeller) == answered
    expect(page).to_have_url(re.compile(r"/datasets/clinc/label/$"))  # htmx swaps, no form posts
    expect(page.locator(".lb-annotators")).to_contain_text("labeller (you)")
    shot(page, "labelling-after-five")

    page.keyboard.press("u")
    progress(page, 4)
    expect(page.locator("#labelling-status")).to_contain_text("Undone")
    assert on_screen(page) == answered[-1][:2]  # the undone pair is back on screen
    assert stored(labeller) == answered[:4]
    shot(page, "labelling-undo")

    before, shown = Pair.objects.count(), on_screen(page)
    page.keyboard.press("s")
    expect(page.locator("#labelling-status")).to_have_text("Skipped.")
    assert on_screen(page) != shown
    assert Pair.objects.count() == before
    progress(page, 4)

    page.keyboard.press("?")
    help_dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(help_dialog).to_be_visible()
    expect(help_dialog).to_contain_text("Undo your last answer")
    shot(page, "labelling-help")
    page.keyboard.press("1")  # the open dialog holds the keys: nothing is answered behind it
    page.keyboard.press("Escape")
    expect(help_dialog).to_be_hidden()
    assert stored(labeller) == answered[:4]

    page.get_by_role("button", name="Dissimilar (key 0)").click()  # the mouse works too
    progress(page, 5)


def test_graded_mode_keys_1_to_5_and_the_fallback_note(page: Page, labeller: Any, clinc: Dataset) -> None:
    clinc.settings = {"label_mode": "graded", "label_target": 3}
    clinc.save()
    login(page, labeller)
    page.goto("/datasets/clinc/label/?strategy=uncertain")
    expect(page.get_by_text("No active model yet")).to_be_visible()
    expect(page.get_by_role("link", name="Uncertain")).to_have_attribute("aria-current", "true")
    expect(page.get_by_role("button", name=re.compile(r"^The same \(key 5\)$"))).to_be_visible()
    shot(page, "labelling-graded")

    answered = []
    for n, key in enumerate(["4", "1", "5"], start=1):
        pair = on_screen(page)
        page.keyboard.press(key)
        progress(page, n)
        answered.append((pair[0], pair[1], (int(key) - 1) / 4, "labeller", "manual"))

    assert stored(labeller) == answered
    expect(page.locator(".lb-progress")).to_contain_text("target reached")
    shot(page, "labelling-graded-target")


def test_a_vector_dataset_shows_feature_values(page: Page, labeller: Any, shared_data: Path) -> None:
    from apps.datasets.formats import ItemRecord

    make_dataset(
        "points",
        [
            ItemRecord(key=f"p{n}", vector=[n * 0.5, -1.25, 3.0], label="a" if n % 2 else "b", line=n)
            for n in range(4)
        ],
    )
    login(page, labeller)
    page.goto("/datasets/points/label/")

    features = page.get_by_label("Feature values").first
    expect(features).to_contain_text("x1")
    expect(features).to_contain_text("-1.25")
    shot(page, "labelling-vectors")


def test_review_pairs_of_another_annotator_then_agreement(page: Page, labeller: Any, clinc: Dataset) -> None:
    clinc.settings = {"annotators_per_pair": 2}
    clinc.save()
    peer = UserFactory(username="peer")
    ids = list(clinc.items.order_by("id").values_list("id", flat=True))
    peer_scores = {(ids[0], ids[1]): 1.0, (ids[0], ids[5]): 0.0, (ids[2], ids[3]): 1.0, (ids[4], ids[9]): 0.0}
    for (a, b), score in peer_scores.items():
        Pair.objects.create(dataset=clinc, item_a_id=a, item_b_id=b, score=score, annotator=peer)
    login(page, labeller)
    page.goto("/datasets/clinc/label/?strategy=review")
    expect(page.locator(".lb-why")).to_contain_text("another annotator labelled this pair")

    # Agree with the peer on three pairs, disagree on the last one offered.
    for n in range(1, 5):
        pair = on_screen(page)
        assert pair in peer_scores
        agree = n < 4
        key = str(int(peer_scores[pair])) if agree else str(1 - int(peer_scores[pair]))
        page.keyboard.press(key)
        progress(page, n)
    expect(page.locator(".lb-notice")).to_contain_text("Nothing to review")
    expect(page).to_have_url(re.compile(r"/label/\?strategy=review$"))

    page.reload()
    expect(page.locator("#labelling-status")).to_have_text("")  # a fresh page, not the last swap
    panel = page.get_by_role("region", name="Agreement between annotators")
    # p_o = 3/4; "similar": the peer 2 of 4, the labeller 3 of 4 -> p_e = 6/16 + 2/16 = 0.5; kappa 0.5.
    expect(panel).to_contain_text("0.50 Cohen's kappa")
    expect(panel).to_contain_text("over 4 pairs labelled by two or more of 2 annotators")
    shot(page, "labelling-review-agreement")
