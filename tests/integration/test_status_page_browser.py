"""The status page in a real headless browser (Debian's chromium, driven by Playwright): it renders the
keys, connects to /keys/events, and shows a rotation made beside it without a reload; its
Content-Security-Policy lets it do all that and nothing is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser import CHROMIUM, Served, serving
from playwright.sync_api import Browser, sync_playwright

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no chromium at {CHROMIUM} (apt-get install chromium)"),
]

KEYSETS = '[keysets.default]\nalg = "ES256"\n[keysets.internal]\nalg = "HS256"\n'
WAIT_MS = 15_000


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    with serving(tmp_path, KEYSETS) as srv:
        yield srv


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def test_a_rotation_shows_without_a_reload(server: Served, browser: Browser) -> None:
    before = server.summary()
    httpx.get(f"{server.base}/.well-known/jwks.json", headers={"JWKS-Verifier": "orders-api/1"})
    page = browser.new_page()
    messages: list[str] = []
    page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
    page.goto(f"{server.base}/status")

    section = page.locator("#keyset-default")
    assert section.get_attribute("data-current") == before["current"]
    assert page.locator("#keyset-default .current-kid").inner_text() == before["current"]
    row = page.locator(f'#keyset-default svg.tl g.row[data-kid="{before["current"]}"]')
    assert row.count() == 1 and row.locator("rect.seg.signing").count() >= 1
    assert page.locator(f'#keyset-default tr[data-kid="{before["next"]}"][data-state="next"]').count() == 1
    assert page.locator("#keyset-internal").count() == 1
    page.wait_for_selector("#live.on", timeout=WAIT_MS)  # the event stream is open

    page.evaluate("window.notReloaded = true")
    rotated = server.cli_json("keys", "rotate", "default", "--force", "--reason", "browser test")
    assert rotated["current"] == before["next"]
    page.wait_for_function(
        "kid => document.querySelector('#keyset-default').dataset.current === kid",
        arg=rotated["current"],
        timeout=WAIT_MS,
    )
    assert page.evaluate("window.notReloaded") is True
    assert page.locator("#keyset-default .current-kid").inner_text() == rotated["current"]
    assert page.locator(f'#keyset-default tr[data-kid="{before["current"]}"][data-state="previous"]').count() == 1
    assert page.locator(f'#keyset-default tr[data-kid="{rotated["next"]}"][data-state="next"]').count() == 1
    assert page.locator(f'#keyset-default svg.tl g.row[data-kid="{rotated["current"]}"]').count() == 1
    page.wait_for_function(
        "kid => [...document.querySelectorAll('#feed li')].some(li => li.textContent.includes(kid + ' now signs'))",
        arg=rotated["current"],
        timeout=WAIT_MS,
    )
    assert not [m for m in messages if "Content Security Policy" in m or m.startswith(("error", "pageerror"))]


def test_without_javascript_the_page_is_complete(server: Served, browser: Browser) -> None:
    summary = server.summary()
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(f"{server.base}/status")
    assert page.locator("#keyset-default").get_attribute("data-current") == summary["current"]
    for state, kid in summary.items():
        assert page.locator(f'tr[data-kid="{kid}"][data-state="{state}"]').count() == 1
    assert page.locator("noscript").count() == 1 and page.locator("#live").inner_text() == "static"
    context.close()
