"""Make docs/status-page.png: a real server with two keysets and some history, fetchers holding its
JWKS, a forced rotation shown live; the page in Debian's chromium.

    .venv/bin/python docs/status_page_screenshot.py

Takes about a minute and a half (it waits for the page's own once-a-minute refresh to show the
adoption counted after the rotation).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

import httpx  # noqa: E402
from browser import CHROMIUM, Served, serving  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from jwks_service.clock import ManualClock  # noqa: E402
from jwks_service.config import load_settings  # noqa: E402
from jwks_service.runtime import build_runtime  # noqa: E402

DAY = 86400
KEYSETS = (
    '[keysets.default]\nalg = "ES256"\nrotation_period = "30d"\n'
    '[keysets.partners]\nalg = "EdDSA"\nrotation_period = "14d"\n'
)
FETCHERS = ["orders-api/1f3a", "orders-api/77c2", "billing/0b9e", "search/5d10", "gateway/a1c4", "reports/c3d2"]


def history(srv: Served) -> None:
    """Ten weeks of scheduled rotations, the scheduler ticking every six hours."""
    now = time.time()
    clock = ManualClock(now - 70 * DAY)
    rt = build_runtime(load_settings(str(srv.config)), clock)
    try:
        while clock.now() < now - 3 * 3600:
            clock.advance(6 * 3600)
            rt.keys.tick()
    finally:
        rt.close()


def fetch(srv: Served, names: list[str]) -> None:
    for name in names:
        httpx.get(f"{srv.base}/.well-known/jwks.json", headers={"JWKS-Verifier": name}, timeout=5)


def main() -> None:
    out = ROOT / "docs" / "status-page.png"
    with tempfile.TemporaryDirectory() as tmp, serving(Path(tmp), KEYSETS, history) as srv:
        fetch(srv, FETCHERS)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
            page.goto(f"{srv.base}/status")
            page.wait_for_selector("#live.on", timeout=15_000)
            rotated = srv.cli_json("keys", "rotate", "default", "--force", "--reason", "screenshot")
            page.wait_for_function(
                "kid => document.querySelector('#keyset-default').dataset.current === kid",
                arg=rotated["current"],
                timeout=15_000,
            )
            fetch(srv, FETCHERS[:4])  # four of six fetchers have the new next key so far
            page.wait_for_function(
                "kid => document.querySelector(`tr[data-kid='${kid}'] td.share`).textContent.includes('67%')",
                arg=rotated["next"],
                timeout=90_000,
            )
            page.screenshot(path=str(out), full_page=True)
            browser.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
