"""Staff import files from the dataset pages in a real browser: a bad file says why, a good one counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from apps.datasets.formats import ItemRecord
from apps.datasets.models import Dataset, Item
from tests.browser.conftest import login, shot
from tests.conftest import db_snapshot
from tests.training.conftest import make_dataset

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_staff_upload_a_bad_file_then_a_good_one(page: Page, staff: Any, tmp_path: Path) -> None:
    make_dataset("faq", [ItemRecord(key="q0", text="what is my balance", label="balance", line=1)])
    bad = tmp_path / "bad.csv"
    bad.write_text("key,text,label\nq1,how do I reset my pin,pin\nq2,only two fields\n")
    good = tmp_path / "good.csv"
    good.write_text("key,text,label\nq1,how do I reset my pin,pin\nq2,change my card's PIN,pin\n")
    login(page, staff)
    page.goto("/datasets/faq/")
    form = page.get_by_role("region", name="Import a file")
    before = db_snapshot()

    form.get_by_label("File").set_input_files(bad)
    form.get_by_label("Format").select_option("csv")
    form.get_by_role("button", name="Import").click()

    expect(page.get_by_role("alert")).to_contain_text("bad.csv, line 3: has 2 fields, but the header has 3")
    expect(page.get_by_role("alert")).to_contain_text("Nothing was changed.")
    shot(page, "dataset-import-error")
    assert db_snapshot() == before

    form = page.get_by_role("region", name="Import a file")
    form.get_by_label("File").set_input_files(good)
    form.get_by_label("Format").select_option("csv")
    form.get_by_role("button", name="Import").click()

    expect(
        page.get_by_text("good.csv imported into faq: items 2 new, 0 updated, 0 unchanged")
    ).to_be_visible()
    expect(page.get_by_role("alert")).to_have_count(0)
    expect(page.get_by_text("change my card's PIN")).to_be_visible()
    shot(page, "dataset-import-done")
    assert sorted(Item.objects.values_list("key", flat=True)) == ["q0", "q1", "q2"]


def test_staff_create_a_dataset_from_a_file_on_the_list_page(page: Page, staff: Any, tmp_path: Path) -> None:
    upload = tmp_path / "questions.csv"
    upload.write_text("id,question,intent\n1,reset my pin,pin\n2,lost my card,card\n3,card stolen,card\n")
    login(page, staff)
    page.goto("/datasets/")
    form = page.get_by_role("region", name="New dataset from a file")

    form.get_by_label("Slug").fill("support")
    form.get_by_label("Name").fill("Support questions")
    form.get_by_label("File").set_input_files(upload)
    form.get_by_label("Format").select_option("csv")
    form.get_by_text("Column names (csv, jsonl)").click()
    form.get_by_label("Key column").fill("id")
    form.get_by_label("Text column").fill("question")
    form.get_by_label("Label column").fill("intent")
    shot(page, "datasets-new-form")
    form.get_by_role("button", name="Import").click()

    expect(page.get_by_role("heading", level=1)).to_contain_text("Support questions")
    expect(page.get_by_text("questions.csv created support: items 3 new")).to_be_visible()
    shot(page, "dataset-created")
    dataset = Dataset.objects.get(slug="support")
    assert sorted(dataset.items.values_list("label", flat=True)) == ["card", "card", "pin"]
    page.goto("/datasets/")
    expect(page.get_by_role("row", name="Support questions")).to_contain_text("none yet")
    shot(page, "datasets-with-import")
