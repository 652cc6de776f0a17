"""GET /status (API.md §6 "Status page") without a browser: the server-rendered HTML holds every key
with its state, the page loads nothing from elsewhere, its policy allows exactly its own style and
script, and it never names a fetcher."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any

import anyio
import pytest
from starlette.testclient import TestClient
from support import ISSUER, wait_until

from jwks_service.adoption import Adoption, Gate
from jwks_service.clock import ManualClock
from jwks_service.http import create_app
from jwks_service.http.status import ADOPTION_WAIT
from jwks_service.model import KeyState
from jwks_service.runtime import Runtime


class Page(HTMLParser):
    """The page's URLs (src, href, action), inline style and script texts, and `style` attributes."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.styles: list[str] = []
        self.scripts: list[str] = []
        self.style_attributes = 0
        self._in: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "action", "xlink:href", "data", "poster", "srcset") and value is not None:
                self.urls.append(value)
            if name == "style":
                self.style_attributes += 1
        self._in = tag if tag in ("style", "script") else None

    def handle_data(self, data: str) -> None:
        if self._in == "style":
            self.styles.append(data)
        elif self._in == "script":
            self.scripts.append(data)

    def handle_endtag(self, tag: str) -> None:
        self._in = None


def sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_the_page_is_html_with_every_key_and_its_state(http: TestClient, runtime: Runtime) -> None:
    r = http.get("/status")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["cache-control"] == "no-cache"
    html = r.text
    keyset = runtime.keys.snapshot.keysets["default"]
    assert keyset.current is not None and keyset.next is not None
    assert f'id="keyset-default" data-keyset="default" data-current="{keyset.current.kid}"' in html
    for key in keyset.keys:
        assert f'data-kid="{key.kid}" data-state="{key.state.value}"' in html  # the table row
        assert f'<g class="row {key.state.value}" data-kid="{key.kid}">' in html  # the timeline row
    assert 'class="rot"' in html and "next rotation" in html  # the next planned rotation is marked
    assert "Latest key events" in html and "now signs" in html
    assert http.head("/status").status_code == 200
    assert http.post("/status").status_code == 405


def test_rotations_taints_and_revocations_show(http: TestClient, runtime: Runtime, clock: ManualClock) -> None:
    first = runtime.keys.summary("default")
    clock.advance(2 * 3600)
    runtime.keys.rotate("default", reason="test", actor="test")
    second = runtime.keys.summary("default")
    runtime.keys.taint(second["current"], reason="suspect", actor="test")
    third = runtime.keys.summary("default")
    runtime.keys.revoke(second["current"], reason="confirmed", actor="test")
    runtime.keys.refresh(force=True)
    html = http.get("/status").text
    assert f'data-current="{third["current"]}"' in html
    assert f'data-kid="{first["current"]}" data-state="previous"' in html
    assert f'<tr class="key revoked" data-kid="{second["current"]}" data-state="revoked">' in html
    for phrase in ("marked suspect", ">revoked<", ">tainted<"):
        assert phrase in html


def test_nothing_is_loaded_from_elsewhere_and_the_policy_allows_only_the_page(http: TestClient) -> None:
    r = http.get("/status")
    page = Page(r.text)
    assert page.urls, "the page links its machine-readable neighbours"
    for url in page.urls:
        assert not re.match(r"^[a-z][a-z0-9+.-]*:", url) or url.startswith("data:"), url
        assert not url.startswith("//"), url
    assert page.style_attributes == 0  # a `style` attribute needs 'unsafe-inline'
    css = "".join(page.styles)
    assert "url(" not in css and "@import" not in css and "@font-face" not in css
    # The only absolute URL in the page is the issuer's name, shown as text.
    assert set(re.findall(r"https?://[^\s\"'<>]+", r.text)) <= {ISSUER}
    csp = dict(part.strip().split(" ", 1) for part in r.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == sha256(page.scripts[0]) and len(page.scripts) == 1
    assert csp["style-src"] == sha256(page.styles[0]) and len(page.styles) == 1
    assert csp["connect-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'" and csp["base-uri"] == "'none'"


def _flush(runtime: Runtime) -> None:
    anyio.run(runtime.fetches.flush, runtime.store, runtime.clock.now())


def test_adoption_shares_show_but_never_a_fetcher(http: TestClient, runtime: Runtime) -> None:
    for name in ("secret-fetcher/0a1b", "another-fetcher/9z"):
        http.get("/.well-known/jwks.json", headers={"JWKS-Verifier": name, "User-Agent": "agent-x/1"})
    _flush(runtime)
    html = http.get("/status").text
    assert "secret-fetcher" not in html and "another-fetcher" not in html and "agent-x" not in html
    assert "testclient" not in html  # nor an address
    assert "100%" in html and "held by 2 of 2 fetchers" in html
    assert "2 in the adoption window" in html


def test_without_adoption_records_shares_are_unknown(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "adoption", None)
    with TestClient(create_app(runtime=runtime, background=False), base_url=ISSUER) as client:
        html = client.get("/status").text
    assert 'title="adoption records are not available">unknown</td>' in html
    assert "held by" not in html and "in the adoption window" not in html


def test_every_keyset_shows_hmac_ones_too(runtime_factory: Callable[..., Runtime]) -> None:
    runtime = runtime_factory({"default": {"alg": "ES256"}, "internal": {"alg": "HS256"}})
    with TestClient(create_app(runtime=runtime, background=False), base_url=ISSUER) as client:
        html = client.get("/status").text
    hmac = runtime.keys.snapshot.keysets["internal"]
    assert 'id="keyset-internal"' in html and "HMAC: never published" in html
    assert html.count('title="HMAC keys are never published">—</td>') == len(hmac.keys)
    for key in hmac.keys:
        assert f'data-kid="{key.kid}" data-state="{key.state.value}"' in html
    assert hmac.by_state(KeyState.CURRENT)


class CountingReader:
    """The runtime's adoption reader, counting its reads, each `delay` seconds long."""

    def __init__(self, inner: Any, delay: float = 0.0) -> None:
        self.inner, self.delay, self.reads = inner, delay, 0

    def adoption(self, name: str) -> Adoption:
        self.reads += 1
        time.sleep(self.delay)
        result: Adoption = self.inner.adoption(name)
        return result

    def gate(self, name: str) -> Gate:
        result: Gate = self.inner.gate(name)
        return result


def test_visitors_share_one_read_of_the_adoption_records(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    reader = CountingReader(runtime.adoption)
    monkeypatch.setattr(runtime, "adoption", reader)
    with TestClient(create_app(runtime=runtime, background=False), base_url=ISSUER) as client:
        for _ in range(20):
            assert client.get("/status").status_code == 200
    assert reader.reads == 1  # one keyset, read once for every visitor within ADOPTION_TTL


def test_a_slow_store_does_not_hold_the_page(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    reader = CountingReader(runtime.adoption, delay=ADOPTION_WAIT + 3)
    monkeypatch.setattr(runtime, "adoption", reader)
    with TestClient(create_app(runtime=runtime, background=False), base_url=ISSUER) as client:
        started = time.monotonic()
        html = client.get("/status").text
        assert time.monotonic() - started < ADOPTION_WAIT + 2
        assert ">unknown</td>" in html  # the page, without the shares it could not wait for
        # The read goes on by itself, once: the page shows its result when it is in.
        wait_until(lambda: "no fetcher yet" in client.get("/status").text, timeout=15)
    assert reader.reads == 1
