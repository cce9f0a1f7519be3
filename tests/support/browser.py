"""Chromium for the end-to-end tests: Debian's /usr/bin/chromium driven by Playwright, one
browser and context per test, console errors and page errors collected on `page.problems`,
and where screenshots go (MAILGATE_SCREENSHOTS=docs/screenshots keeps them)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.peers import ROOT

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
NEEDS_CHROMIUM = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (.ci/run)"
)


@contextmanager
def chromium_page(
    width: int,
    height: int,
    *,
    timezone: str | None = None,
    prepare: Callable[[Any], None] | None = None,
    ours: Callable[[Any], bool] = lambda page: True,
) -> Iterator[Any]:
    """A French-speaking page. `prepare(context)` may route requests; a console error or an
    uncaught exception counts as a problem when `ours(page)` (a third party's page is not)."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        options: dict[str, Any] = {
            "locale": "fr-FR",
            "viewport": {"width": width, "height": height},
            "extra_http_headers": {"Accept-Language": "fr-FR,fr;q=0.9"},
        }
        if timezone:
            options["timezone_id"] = timezone
        context = browser.new_context(**options)
        if prepare is not None:
            prepare(context)
        page = context.new_page()
        page.problems = []

        def problem(text: str) -> None:
            if ours(page):
                page.problems.append(text)

        page.on("console", lambda m: m.type == "error" and problem(m.text))
        page.on("pageerror", lambda e: problem(str(e)))
        try:
            yield page
        finally:
            context.close()
            browser.close()


def screenshots_folder(tmp_path: Path) -> Path:
    target = os.environ.get("MAILGATE_SCREENSHOTS")
    folder = (ROOT / target) if target else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder
