"""The analysts' pages in a real browser, htmx included, over a small real trained CLINC150 slice (five
intents, twelve queries each, MiniLM with an MLP head for two epochs): an item's neighbours and a dislike
that steers them, the anomaly dashboard and a verdict, and classification.

Each test trains its own dataset: the live server needs committed rows, which a transactional test's
flush removes afterwards.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from apps.datasets.models import Dataset
from apps.discovery.models import AnomalyFeedback
from tests.browser.conftest import TRAINING_MARKS, login, shot
from tests.discovery.conftest import clinc_slice
from tests.training.conftest import make_dataset, run_to_end

pytestmark = TRAINING_MARKS


def trained(shared_data: Path) -> Dataset:
    dataset = make_dataset("clinc", clinc_slice(shared_data))
    run = run_to_end(dataset, epochs=2)
    assert (run.status, run.error) == ("succeeded", "")
    return dataset


def result_ids(page: Page) -> list[int]:
    return [
        int(i) for i in page.locator("#results li.result").evaluate_all("els => els.map(e => e.dataset.item)")
    ]


def test_an_items_neighbours_and_a_dislike_that_steers_them(
    page: Page, analyst: Any, shared_data: Path
) -> None:
    dataset = trained(shared_data)
    login(page, analyst)

    page.goto(f"/datasets/{dataset.slug}/")
    page.get_by_role("navigation", name="Dataset").get_by_role("link", name="Items").click()
    page.wait_for_url(f"**/datasets/{dataset.slug}/items/")  # loaded, htmx included
    page.get_by_label("Label").select_option("alarm")
    expect(page.get_by_text("12 items found")).to_be_visible()  # htmx swapped the table
    shot(page, "discovery-items")

    first_item = page.locator("#item-table tbody a").first
    chosen_text = first_item.inner_text()
    first_item.click()
    page.wait_for_url(re.compile(r"/items/\d+/$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Item")
    expect(page.locator(".item-text")).to_have_text(chosen_text)
    results = page.locator("#results li.result")
    expect(results).to_have_count(10)
    expect(results.first.locator(".why")).to_contain_text("closest to: this item · similarity")
    before = result_ids(page)
    shot(page, "discovery-item")

    results.first.get_by_role("button", name="Dislike").click()
    expect(page.locator(f'#results li.result[data-item="{before[0]}"]')).to_have_count(0)
    expect(page.locator(".summary")).to_contain_text("steered by 0 likes and 1 dislike")
    after = result_ids(page)
    assert len(after) == 10 and after != before and before[0] not in after
    expect(page.locator(".chip.disliked")).to_have_count(1)
    expect(page).to_have_url(re.compile(rf"\?disliked={before[0]}$"))  # the history holds the steering

    # A like, then a metadata filter: the likes and dislikes stay while the filter applies.
    page.locator("#results li.result").first.get_by_role("button", name=re.compile(r"^Like")).click()
    expect(page.locator(".chip.liked")).to_have_count(1)
    page.get_by_label("group equals").fill("even")
    page.get_by_label("group equals").press("Enter")
    expect(page.locator(".summary")).to_contain_text("filtered")
    expect(page.locator(".chip.disliked")).to_have_count(1)
    for chip in page.locator("#results li.result .r-meta").all():
        expect(chip).to_contain_text("group: even")
    shot(page, "discovery-item-steered")


def test_the_anomaly_dashboard_and_a_not_an_anomaly_verdict(
    page: Page, analyst: Any, shared_data: Path
) -> None:
    dataset = trained(shared_data)
    login(page, analyst)

    page.goto(f"/datasets/{dataset.slug}/anomalies/")
    histogram = page.locator("svg.hist")
    expect(histogram).to_be_visible()
    expect(histogram.locator("rect.bar")).to_have_count(40)
    expect(histogram.locator("line.threshold")).to_have_count(1)
    expect(page.locator("#above-count")).to_contain_text("3 items above the threshold")
    rows = page.locator("tbody.anomaly")
    expect(rows).to_have_count(3)
    shot(page, "discovery-anomalies")

    # Lower the threshold: the line moves and more items are listed; nothing is saved.
    line_before = histogram.locator("line.threshold").get_attribute("x1")
    lowest_listed = float(rows.last.locator("td").nth(1).inner_text())
    page.get_by_label("Threshold", exact=True).fill(f"{lowest_listed * 0.9:.4f}")
    page.get_by_label("Threshold", exact=True).press("Enter")
    expect(page.locator("#above-count")).not_to_contain_text("3 items above")
    assert histogram.locator("line.threshold").get_attribute("x1") != line_before
    assert rows.count() > 3
    assert Dataset.objects.get(pk=dataset.pk).settings.get("anomaly_threshold") is None

    # The drill-down loads the item's neighbours.
    top = rows.first
    item_id = int((top.get_attribute("id") or "").removeprefix("anomaly-"))
    top.locator("summary").click()
    expect(top.locator(".neighbours li")).to_have_count(5)
    shot(page, "discovery-anomalies-drilldown")

    top.get_by_role("button", name="Not an anomaly").click()
    row = page.locator(f"#anomaly-{item_id}")
    expect(row.locator(".verdict.normal")).to_have_text("Not an anomaly")
    expect(row.get_by_role("button", name="Withdraw")).to_be_visible()
    expect(row).to_contain_text("1 normal")
    assert list(AnomalyFeedback.objects.values_list("item_id", "user_id", "verdict")) == [
        (item_id, analyst.pk, "normal")
    ]
    shot(page, "discovery-anomalies-verdict")

    row.get_by_role("button", name="Withdraw").click()
    expect(row.locator(".verdict")).to_have_count(0)
    assert not AnomalyFeedback.objects.exists()


def test_classify_a_clinc_query(page: Page, analyst: Any, shared_data: Path) -> None:
    dataset = trained(shared_data)
    document = json.loads((shared_data / "clinc150" / "data_full_train_val.json").read_text())
    query = "what is the apr on my chase card"
    assert [query, "apr"] in document["val"]  # a real query, not one of the dataset's items
    login(page, analyst)

    page.goto(f"/datasets/{dataset.slug}/classify/")
    page.get_by_role("button", name="Classify").click()
    expect(page.get_by_role("alert")).to_contain_text("Enter a text to classify")

    page.get_by_label("Text to classify").fill(query)
    page.get_by_role("button", name="Classify").click()
    expect(page.locator(".predicted")).to_have_text("apr")
    expect(page.locator(".confidence li").first).to_contain_text("apr")
    expect(page.locator(".note")).to_contain_text("alibrated.")
    expect(page.locator("#classification tbody tr")).to_have_count(10)
    shot(page, "discovery-classify")

    page.get_by_label("Text to classify").fill("the mitochondria is the powerhouse of the cell")
    page.get_by_role("button", name="Classify").click()
    expect(page.locator(".predicted")).to_have_text("Unknown")
    shot(page, "discovery-classify-unknown")


def test_without_a_model_the_pages_say_to_train_first(page: Page, analyst: Any, shared_data: Path) -> None:
    dataset = make_dataset("fresh", clinc_slice(shared_data, intents=2, per_intent=3))
    item = dataset.items.order_by("id").first()
    login(page, analyst)
    for url in (
        f"/datasets/fresh/items/{item.pk}/",
        "/datasets/fresh/anomalies/",
        "/datasets/fresh/classify/",
    ):
        page.goto(url)
        expect(page.get_by_role("alert")).to_contain_text("No model yet: train it first.")
    page.goto(f"/datasets/fresh/items/{item.pk}/")
    expect(page.locator(".item-text")).to_have_text(item.text)
    shot(page, "discovery-no-model")
