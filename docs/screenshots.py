"""Screenshots of the main pages for the README: ``python docs/screenshots.py`` against a running demo.

Start the demo first (``make demo``), then run this with the project's environment. It logs in as the demo
admin through the login page, opens each main page in Debian's Chromium (``/usr/bin/chromium``; nothing is
downloaded), does what a person would to fill it (a text to classify, a pair on screen) and saves a PNG of
the window (1280 px wide) under ``docs/screenshots/``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script (python docs/screenshots.py): bench is found from the root
from bench.chromium import chromium_launch  # noqa: E402

OUT = Path(__file__).resolve().parent / "screenshots"


def settle(page: Page) -> None:
    """Wait until htmx partials (``hx-trigger="load"``) have arrived."""
    page.wait_for_load_state("networkidle")
    page.wait_for_function("() => !document.querySelector('.htmx-request')")


def classify(page: Page) -> None:
    page.get_by_label("Text to classify").fill("how tall is the eiffel tower")
    page.get_by_role("button", name="Classify").click()
    page.wait_for_selector("#classification :is(table, .card, p)")
    settle(page)


def first_item(slug: str, query: str) -> Callable[[Page, str], str]:
    """The page of the first item whose text matches ``query`` (found through the items page)."""

    def find(page: Page, base: str) -> str:
        page.goto(f"{base}/datasets/{slug}/items/?q={query}")
        settle(page)
        href = page.locator("table a[href*='/items/']").first.get_attribute("href")
        assert href, f"no item of {slug} matches {query!r}"
        return href

    return find


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--user", default=os.environ.get("SIMAPP_DEMO_USER", "demo"))
    parser.add_argument("--password", default=os.environ.get("SIMAPP_DEMO_PASSWORD", "simapp-demo"))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    base = args.url.rstrip("/")
    args.out.mkdir(parents=True, exist_ok=True)

    # (file name, path or a function that finds it, what to do on the page before the picture)
    shots: list[tuple[str, str | Callable[[Page, str], str], Callable[[Page], None] | None]] = [
        ("datasets", "/datasets/", None),
        ("dataset-overview", "/datasets/clinc150/", None),
        ("labelling", "/datasets/clinc150/label/", None),
        ("training", "/datasets/clinc150/training/", None),
        ("item-neighbours", first_item("clinc150", "new card"), None),
        ("anomalies", "/datasets/cardio/anomalies/", None),
        ("classify", "/datasets/clinc150/classify/", classify),
        ("api-docs", "/api/docs/", None),
    ]
    with sync_playwright() as playwright:
        browser = chromium_launch(playwright)
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        context.set_default_timeout(30_000)
        page = context.new_page()
        page.goto(f"{base}/accounts/login/")
        page.get_by_label("Username").fill(args.user)
        page.get_by_label("Password").fill(args.password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(lambda url: "/accounts/login/" not in url)
        for name, where, prepare in shots:
            path = where if isinstance(where, str) else where(page, base)
            page.goto(base + path if path.startswith("/") else path)
            settle(page)
            if prepare:
                prepare(page)
            target = args.out / f"{name}.png"
            page.screenshot(path=str(target))
            print(f"{target}  {path}")
        browser.close()


if __name__ == "__main__":
    main()
