"""Browser tests: Playwright drives Debian's Chromium (``/usr/bin/chromium``) against a live server.

Each test gets a fresh browser context on ``live_server`` (a real HTTP server in a thread of the test
process, on the test database), logs in through the login page, and saves a screenshot of what it saw
under ``tests/browser/screenshots/`` (ignored by git) with ``shot(page, name)``: open them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from bench.chromium import CHROMIUM, chromium_launch
from tests.factories import UserFactory
from tests.training.conftest import data_dir  # noqa: F401 (a fixture, for the tests that train)

SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
PASSWORD = "correct horse battery staple"  # tests.factories.UserFactory's
# The marks of a module whose tests train a model: slow, on committed rows (the live server reads them in
# its own thread), each test in a fresh data directory.
TRAINING_MARKS = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("data_dir"),
]

# Playwright's sync API keeps an event loop in this thread; the test's own database calls are still
# synchronous code, which Django would otherwise refuse while a loop exists.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM}: apt-get install -y chromium"
    with sync_playwright() as playwright:
        browser = chromium_launch(playwright)
        yield browser
        browser.close()


@pytest.fixture
def csp_refusals() -> list[str]:
    """What the Content-Security-Policy refused on the test's pages (Chromium reports each on the
    console). The ``page`` fixture fails the test unless it is empty at the end."""
    return []


@pytest.fixture
def page(browser: Browser, live_server: Any, csp_refusals: list[str]) -> Iterator[Page]:
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1366, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            csp_refusals.append(f"{page.url}: {message.text}")

    page.on("console", on_console)
    yield page
    context.close()
    assert not csp_refusals, "the Content-Security-Policy refused:\n" + "\n".join(csp_refusals)


@pytest.fixture
def staff(transactional_db: Any) -> Any:
    return UserFactory(username="admin", is_staff=True, is_superuser=True)


@pytest.fixture
def analyst(transactional_db: Any) -> Any:
    return UserFactory(username="analyst")


def login(page: Page, user: Any) -> None:
    """Log in through the login page, as a person would."""
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(user.get_username())
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/accounts/login/" not in url)


def shot(page: Page, name: str) -> Path:
    """Save a full-page screenshot of what the test sees, to look at afterwards."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
