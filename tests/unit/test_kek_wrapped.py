"""Envelope mode's file handling (kek.load_wrapped_kek) with a stand-in for Vault Transit."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from jwks_service.errors import ConfigError, UnavailableError
from jwks_service.kek import load_kek, load_wrapped_kek


class FakeTransit:
    """Wraps by base64 behind a Transit-like prefix; counts calls; may fail."""

    description = "Vault Transit key transit/keys/fake"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: Exception | None = None
        self.before_wrap: object = None

    def ensure_key(self) -> None:
        self.calls.append("ensure")

    def wrap(self, data: bytes) -> str:
        self.calls.append("wrap")
        if callable(self.before_wrap):
            self.before_wrap()
        return "vault:v1:" + base64.b64encode(data[::-1]).decode()

    def unwrap(self, wrapped: str) -> bytes:
        self.calls.append("unwrap")
        if self.fail is not None:
            raise self.fail
        return base64.b64decode(wrapped.removeprefix("vault:v1:"))[::-1]


def test_created_once_then_unwrapped(tmp_path: Path) -> None:
    transit = FakeTransit()
    path = tmp_path / "sub" / "kek.wrapped"
    made = load_wrapped_kek(str(path), transit, create=True)
    assert made.generated and made.wrapped_by == transit.description and len(made.key) == 32
    assert transit.calls == ["ensure", "wrap", "unwrap"]  # checked to unwrap before anything uses it
    assert path.read_text().startswith("vault:v1:") and made.key not in path.read_bytes()
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["kek.wrapped"]  # no temporary file left
    again = load_wrapped_kek(str(path), transit, create=True)
    assert not again.generated and again.key == made.key


def test_another_process_that_wrote_first_wins(tmp_path: Path) -> None:
    path = tmp_path / "kek.wrapped"
    theirs = FakeTransit().wrap(os.urandom(32))
    transit = FakeTransit()
    transit.before_wrap = lambda: path.write_text(theirs)
    loaded = load_wrapped_kek(str(path), transit, create=True)
    assert not loaded.generated and path.read_text() == theirs
    assert loaded.key == FakeTransit().unwrap(theirs)


def test_missing_file_without_create_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"transit/datakey/wrapped/<key> bits=256") as caught:
        load_wrapped_kek(str(tmp_path / "kek"), FakeTransit(), create=False)
    assert caught.value.description.startswith("secrets.kek_file: ")
    assert not (tmp_path / "kek").exists()


def test_unwrap_failures(tmp_path: Path) -> None:
    path = tmp_path / "kek.wrapped"
    load_wrapped_kek(str(path), FakeTransit(), create=True)
    transit = FakeTransit()
    transit.fail = UnavailableError("Vault at http://x is unreachable (ConnectionError)", retry_after=5)
    with pytest.raises(UnavailableError, match=r"^secrets\.kek: cannot unwrap the KEK in .*unreachable") as caught:
        load_wrapped_kek(str(path), transit, create=True)
    assert caught.value.retry_after == 5
    transit.fail = ConfigError("Vault permission denied on transit/decrypt/fake")
    with pytest.raises(ConfigError, match=r"^secrets\.kek: .*permission denied on transit/decrypt/fake"):
        load_wrapped_kek(str(path), transit, create=True)
    path.write_text(FakeTransit().wrap(b"short"))
    with pytest.raises(ConfigError, match="holds 5 bytes, not 32"):
        load_wrapped_kek(str(path), FakeTransit(), create=True)
    path.write_text("garbage")
    with pytest.raises(ConfigError, match=r"is not a Vault Transit ciphertext"):
        load_wrapped_kek(str(path), FakeTransit(), create=True)


def test_plain_and_wrapped_files_are_not_mistaken_for_each_other(tmp_path: Path) -> None:
    plain = tmp_path / "kek"
    load_kek(str(plain), create=True)
    with pytest.raises(ConfigError, match="holds a plaintext KEK"):
        load_wrapped_kek(str(plain), FakeTransit(), create=True)
    wrapped = tmp_path / "kek.wrapped"
    load_wrapped_kek(str(wrapped), FakeTransit(), create=True)
    with pytest.raises(ConfigError, match=r"holds a KEK wrapped by Vault Transit; set secrets\.kek"):
        load_kek(str(wrapped), create=True)
