"""Item texts, labels, metadata and names that hold HTML or script are shown as text, never run, on every
page that shows them: the dataset pages, item browse and the item page, recommendations, labelling,
the anomaly dashboard with its drill-down, classification (the typed text echoed too), and the admin.

Every payload sets ``window.__xss`` and calls ``alert``. Each page is loaded in a real Chromium with a
dialog handler; the flag must stay unset, no dialog may open, and the payload must be visible as its
literal text. A control first puts one payload into a page as markup, to show that the detector sees
a payload that runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from playwright.sync_api import Dialog, Page, expect

from apps.datasets.models import Dataset, Item
from tests.browser.conftest import TRAINING_MARKS, login, shot
from tests.training.conftest import clinc_records, make_dataset, run_to_end

pytestmark = TRAINING_MARKS

SCRIPT = "<script>window.__xss='text';alert('text')</script>"
IMG = "<img src=x onerror=\"window.__xss='img';alert('img')\">"
LABELS = {
    "accept_reservations": "<svg onload=\"window.__xss='label';alert('label')\">",
    "account_blocked": "<img src=y onerror=\"window.__xss='label';alert('label')\">",
}
META = "<img src=z onerror=\"window.__xss='meta';alert('meta')\">"
KEY = "<img src=k onerror=\"window.__xss='key';alert('key')\">"
NAME = "<script>window.__xss='name';alert('name')</script>Payloads"
QUERY = "<img src=q onerror=\"window.__xss='query';alert('query')\"> why is my account blocked"


class Watch:
    """Dialogs the page opened, and ``window.__xss`` after the page settled."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.ran: dict[str, Any] = {}
        page.on("dialog", self._dialog)

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def check(self, name: str, *visible: str) -> None:
        """Record what ran on the page ``name``; the ``visible`` texts must be shown as text."""
        self.page.wait_for_load_state("networkidle")  # an injected <img> would have failed to load by now
        for text in visible:
            expect(self.page.get_by_text(text).filter(visible=True).first).to_be_visible()
        flag = self.page.evaluate("window.__xss")
        if flag is not None or self.dialogs:
            self.ran[name] = {"flag": flag, "dialogs": list(self.dialogs)}
        self.dialogs.clear()
        shot(self.page, f"security-{name}")


def payload_dataset(shared_data: Path) -> Dataset:
    """A real CLINC150 slice (two intents, eight queries each) whose texts start with a script or an
    image payload, with payload keys, labels, metadata and dataset name; indexed (identity head)."""
    records = clinc_records(shared_data, intents=2, per_intent=8)
    for n, record in enumerate(records):
        record.key = f"{KEY}{n:02d}"
        record.text = f"{SCRIPT if n % 2 == 0 else IMG} {record.text}"
        record.label = LABELS[record.label]
        record.metadata = {"note": META, "n": n}
    dataset = make_dataset("xss", records)
    Dataset.objects.filter(pk=dataset.pk).update(name=NAME)
    run = run_to_end(dataset, head="identity")
    assert (run.status, run.error) == ("succeeded", "")
    return dataset


def test_the_detector_sees_a_payload_that_runs(page: Page) -> None:
    watch = Watch(page)

    page.set_content(f"<div>{IMG}</div>")
    page.wait_for_function("window.__xss === 'img'")

    assert watch.dialogs == ["img"]


def test_payloads_are_shown_as_text_on_every_page(
    page: Page, analyst: Any, staff: Any, shared_data: Path
) -> None:
    dataset = payload_dataset(shared_data)
    item = Item.objects.filter(dataset=dataset).order_by("id").first()
    assert item is not None and item.text.startswith(SCRIPT)
    watch = Watch(page)
    login(page, analyst)

    page.goto("/datasets/")
    watch.check("dataset-list", NAME)
    page.goto("/datasets/xss/")
    watch.check("dataset-detail", SCRIPT, IMG, META, NAME)
    page.goto("/datasets/xss/items/")
    watch.check("item-browse", SCRIPT, IMG, META)
    page.get_by_label("Label").select_option(LABELS["account_blocked"])
    expect(page.get_by_text("8 items found")).to_be_visible()  # htmx swapped the table
    watch.check("item-browse-label", SCRIPT, IMG, LABELS["account_blocked"])

    page.goto(f"/datasets/xss/items/{item.pk}/")
    expect(page.locator("#results li.result")).to_have_count(10)
    watch.check("item-page", SCRIPT, IMG, META)
    page.locator("#results li.result").first.locator("button.like").click()
    expect(page.locator(".chip.liked")).to_have_count(1)  # recommendations steered by the liked item
    watch.check("recommendations", SCRIPT, IMG)

    page.goto("/datasets/xss/label/")
    texts = page.locator(".lb-text").all_inner_texts()
    assert len(texts) == 2 and all(t.startswith((SCRIPT, IMG)) for t in texts)
    watch.check("labelling", KEY, META)
    page.keyboard.press("1")  # answer "similar": the status line names both keys
    expect(page.get_by_role("status").filter(has_text="Saved:")).to_contain_text(KEY)
    watch.check("labelling-answered", KEY, META)

    page.goto("/datasets/xss/anomalies/?threshold=0")  # every scored item is above it
    rows = page.locator("tbody.anomaly")
    expect(rows.first).to_be_visible()
    rows.first.locator("summary").click()
    expect(rows.first.locator(".neighbours li")).to_have_count(5)
    watch.check("anomalies", SCRIPT, IMG)

    page.goto("/datasets/xss/classify/")
    page.get_by_label("Text to classify").fill(QUERY)
    page.get_by_role("button", name="Classify").click()
    expect(page.locator("#classification tbody tr").first).to_be_visible()
    watch.check("classify", *LABELS.values(), SCRIPT, IMG)
    assert page.get_by_label("Text to classify").input_value() == QUERY

    page.context.clear_cookies()  # as staff, for the admin
    login(page, staff)
    page.goto("/admin/datasets/item/")
    watch.check("admin-items", SCRIPT, IMG, KEY, *LABELS.values())
    page.goto("/admin/datasets/item/?q=<script>")  # the search term is echoed in the box and the count
    watch.check("admin-item-search", SCRIPT, KEY)
    assert page.locator("#searchbar").input_value() == "<script>"
    expect(page.locator("#result_list tbody tr")).to_have_count(8)
    page.goto(f"/admin/datasets/item/{item.pk}/change/")
    watch.check("admin-item", KEY)
    assert page.locator("textarea[name=text]").input_value() == item.text
    assert json.loads(page.locator("textarea[name=metadata]").input_value()) == {"note": META, "n": 0}
    assert page.locator("input[name=label]").input_value() == item.label
    page.goto("/admin/datasets/dataset/")
    watch.check("admin-datasets", NAME)
    page.goto(f"/admin/datasets/dataset/{dataset.pk}/change/")
    watch.check("admin-dataset")
    assert page.locator("input[name=name]").input_value() == NAME
    page.goto("/admin/labelling/pair/")
    watch.check("admin-pairs")
    page.goto("/admin/discovery/anomalyscore/")
    watch.check("admin-anomaly-scores")

    assert watch.ran == {}
