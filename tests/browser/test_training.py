"""The training console in a real browser: a staff user retrains, watches it live, and rolls back.

The live server runs in this process, so a started run executes on this process's job thread, on a small
real slice of CLINC150 with the real encoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from apps.datasets.formats import ItemRecord
from apps.training.models import ModelVersion, TrainingRun
from tests.browser.conftest import login, shot
from tests.training.conftest import clinc_records, make_dataset

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Records, on the page, the state the run panel shows after each htmx swap (and at load), so the test can
# tell that progress arrived live, without a reload.
RECORD_SWAPS = """
window.__seen = [];
const record = () => {
  const badge = document.querySelector('#live [data-status]');
  const bar = document.querySelector('#run-progress');
  if (badge) window.__seen.push(badge.dataset.status + ' ' + (bar ? bar.value : ''));
};
document.addEventListener('DOMContentLoaded', record);
document.addEventListener('htmx:afterSettle', record);
"""


def run_status(page: Page) -> Any:
    return page.locator("#live [data-status]")


def test_staff_retrain_watch_progress_live_then_roll_back(
    page: Page,
    staff: Any,
    data_dir: Path,
    shared_data: Path,
) -> None:
    make_dataset("clinc", clinc_records(shared_data, intents=5, per_intent=12))
    page.add_init_script(RECORD_SWAPS)
    login(page, staff)
    page.goto("/datasets/clinc/")
    page.get_by_role("navigation", name="Dataset").get_by_role("link", name="Training").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Training")
    expect(page.get_by_text("No model versions yet.")).to_be_visible()
    shot(page, "training-empty")

    start = page.get_by_role("region", name="Start a retrain")
    start.get_by_label("Epochs").fill("2")
    start.get_by_role("button", name="Start retrain").click()
    expect(page.get_by_text("queued: it starts as soon as the worker is free")).to_be_visible()
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("#run-progress")).to_be_visible()
    shot(page, "training-running")
    expect(run_status(page)).to_have_text("Succeeded", timeout=120_000)
    # htmx records a swap at its settle, a moment after the new badge shows: wait for that record.
    page.wait_for_function("window.__seen.at(-1).startsWith('succeeded')", timeout=5_000)

    seen = page.evaluate("window.__seen")
    assert page.evaluate("window.__sameDocument") is True  # the page changed by polling, not by reloads
    assert seen[0].split()[0] in ("queued", "running") and seen[-1] == "succeeded 100"
    assert len(seen) >= 2
    # Polling stopped with the run; the versions table arrived with the last poll.
    expect(page.locator("#live")).not_to_have_attribute("hx-trigger", "every 1s")
    versions = page.get_by_role("region", name="Model versions")
    expect(versions).to_contain_text("Serving v1 · knn_accuracy")
    expect(versions.get_by_role("row", name="v1 Active")).to_be_visible()
    expect(page.get_by_role("img", name="Training loss by epoch")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    shot(page, "training-done")
    run = TrainingRun.objects.get()
    assert (run.status, run.progress, run.requested_by.username) == ("succeeded", 1.0, "admin")
    assert list(ModelVersion.objects.values_list("number", "is_active")) == [(1, True)]

    # A second version, then back to the first.
    start.get_by_label("Epochs").fill("1")
    start.get_by_label("Head").select_option("linear")
    start.get_by_role("button", name="Start retrain").click()
    expect(run_status(page)).to_have_text("Succeeded", timeout=120_000)
    expect(versions).to_contain_text("Serving v2")
    shot(page, "training-two-versions")
    page.get_by_role("button", name="Roll back to the previous version").click()
    expect(page.get_by_text("Rolled back: v1 is active again.")).to_be_visible()
    expect(versions.get_by_role("row", name="v1 Active")).to_be_visible()
    expect(versions.get_by_role("button", name="Activate v2")).to_be_visible()
    shot(page, "training-rolled-back")
    page.goto("/datasets/")
    expect(page.get_by_role("row", name="clinc")).to_contain_text("v1 knn_accuracy")
    shot(page, "datasets-with-model")
    assert list(ModelVersion.objects.order_by("number").values_list("number", "is_active")) == [
        (1, True),
        (2, False),
    ]


def test_a_labeller_sees_no_training_link_nor_controls_and_is_refused(page: Page, analyst: Any) -> None:
    make_dataset(
        "faq",
        [
            ItemRecord(key="q1", text="how do I reset my pin", label="pin", line=1),
            ItemRecord(key="q2", text="change my card's PIN", label="pin", line=2),
        ],
    )
    login(page, analyst)

    page.goto("/datasets/faq/")
    nav = page.get_by_role("navigation", name="Dataset")
    expect(nav.get_by_role("link", name="Overview")).to_be_visible()
    expect(nav.get_by_role("link", name="Training")).to_have_count(0)
    expect(page.get_by_role("button", name="Start retrain")).to_have_count(0)
    expect(page.get_by_role("button", name="Import")).to_have_count(0)
    page.goto("/datasets/")
    expect(page.get_by_role("link", name="Training console")).to_have_count(0)

    response = page.goto("/datasets/faq/training/")
    assert response is not None and response.status == 403
    shot(page, "training-forbidden")
    assert not TrainingRun.objects.exists()
