"""The pages every user sees first: log in, the dataset list and a dataset's overview."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from apps.datasets.formats import ItemRecord
from tests.browser.conftest import login, shot
from tests.training.conftest import make_dataset

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_login_then_datasets_and_a_dataset_overview(page: Page, analyst: Any) -> None:
    make_dataset(
        "faq",
        [
            ItemRecord(key="q1", text="how do I reset my pin", label="pin", metadata={"lang": "en"}, line=1),
            ItemRecord(key="q2", text="change my card's PIN", label="pin", metadata={"lang": "en"}, line=2),
        ],
    )

    page.goto("/datasets/")
    expect(page).to_have_url("/accounts/login/?next=/datasets/")  # anonymous: sent to log in
    login(page, analyst)
    page.goto("/datasets/")
    expect(page.get_by_role("link", name="faq")).to_be_visible()
    shot(page, "datasets")

    page.get_by_role("link", name="faq").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("faq")
    expect(page.get_by_text("how do I reset my pin")).to_be_visible()
    expect(page.get_by_role("navigation", name="Dataset")).to_be_visible()
    shot(page, "dataset-overview")


def test_a_wrong_password_says_so_on_the_page(page: Page, analyst: Any) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill("analyst")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()

    expect(page.get_by_role("alert")).to_contain_text("didn't match")
    shot(page, "login-failed")
