"""The Content-Security-Policy (``settings.CONTENT_SECURITY_POLICY``) holds on every kind of page.

Every browser test checks that nothing on the pages it opened was refused (the ``page`` fixture). Here:
the header itself, a control that shows a refusal is seen, and the pages no other browser test opens (the
admin and the API docs, which are third-party pages set up to need no inline script).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from playwright.sync_api import Page, expect

from tests.browser.conftest import login, shot

pytestmark = [pytest.mark.browser]


def test_pages_carry_the_policy(page: Page, staff: Any) -> None:
    response = page.goto("/accounts/login/")

    assert response is not None
    assert response.headers["content-security-policy"] == settings.CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in settings.CONTENT_SECURITY_POLICY.split("; ")


def test_an_inline_script_put_into_a_page_does_not_run_and_is_seen(
    page: Page, staff: Any, csp_refusals: list[str]
) -> None:
    login(page, staff)
    page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = 'window.__ran = true';"
        " document.body.appendChild(s); }"
    )
    expect(page.get_by_role("heading", level=1)).to_be_visible()  # the page is otherwise unharmed

    assert page.evaluate("window.__ran === true") is False
    assert len(csp_refusals) == 1 and "inline script" in csp_refusals[0]
    csp_refusals.clear()  # expected here; the fixture fails any other test on one


def test_the_admin_works_under_the_policy(page: Page, staff: Any) -> None:
    login(page, staff)
    page.goto("/admin/")
    expect(page.locator("#datasets-dataset")).to_be_visible()
    page.goto("/admin/datasets/dataset/add/")
    page.get_by_label("Slug").fill("csp")
    page.get_by_label("Name").fill("Under the policy")
    page.get_by_label("Encoder").fill("minilm")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_text("was added successfully")).to_be_visible()
    shot(page, "admin-under-csp")


def test_the_api_docs_work_under_the_policy(page: Page, staff: Any, csp_refusals: list[str]) -> None:
    login(page, staff)
    page.goto("/api/docs/")
    expect(page.get_by_role("heading", name="simapp API")).to_be_visible()
    expect(page.get_by_text("/api/datasets/{slug}/recommend/").first).to_be_visible()
    shot(page, "api-docs-under-csp")
    assert csp_refusals == []

    page.goto("/api/redoc/")
    expect(page.get_by_role("heading", name="simapp API")).to_be_visible(timeout=30_000)
    shot(page, "api-redoc-under-csp")
    # ReDoc's bundle shows its maker's logo from their CDN; the policy keeps the page from fetching it, as
    # it should (nothing is fetched from elsewhere). That refusal alone is expected.
    outside = [r for r in csp_refusals if "'https://cdn.redoc.ly/" in r and "img-src" in r]
    assert outside and outside == csp_refusals
    csp_refusals.clear()
