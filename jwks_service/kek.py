"""The key-encryption key (KEK) that protects local private keys at rest, and keys derived from it.

Two ways to hold it:

- ``secrets.kek_file``: the KEK itself, base64, mode 0600 (generated on first start in embedded mode);
- envelope mode, ``secrets.kek = "vault-transit:<key>"``: ``secrets.kek_file`` then holds the KEK
  *wrapped* by a Vault Transit key (Transit's ciphertext ``vault:v1:...``, useless without Vault and
  a token allowed to decrypt with that key). At start the service asks Transit to unwrap it and
  keeps the plaintext in memory only; nothing secret is on disk. Every replica needs the same file,
  as with a plain KEK file. The wrapped KEK is not rewrapped after the Transit key rotates (Transit
  still decrypts older versions until its min_decryption_version passes them).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import files
from .errors import ConfigError, UnavailableError

KEK_BYTES = 32


@dataclass(frozen=True, slots=True)
class LoadedKek:
    key: bytes
    path: Path
    generated: bool  # True when this start created the file
    wrapped_by: str = ""  # envelope mode: the Transit key that wraps the file's KEK

    def derive(self, purpose: str) -> bytes:
        """A 256-bit key for one purpose (HKDF-SHA256), so one secret file serves several uses."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"jwks-service/" + purpose.encode()).derive(
            self.key
        )


def _read(path: Path) -> str | None:
    """The KEK file's text, stripped; None when there is no such file."""
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"secrets.kek_file: cannot read {path}: {exc}") from None


def _absent(path: Path, create: bool, how: str) -> None:
    """A missing KEK file is refused unless it may be created; `how` says how to make one."""
    if not create:
        raise ConfigError(f"secrets.kek_file: {path} does not exist; {how} and give every replica the same file")


def load_kek(path_text: str, *, create: bool) -> LoadedKek:
    """Read a base64 KEK file; create it (mode 0600) when absent and `create` is allowed."""
    path = Path(path_text)
    text = _read(path)
    if text is None:
        _absent(path, create, f"create it with `openssl rand -base64 32 > {path}`")
        return _create(path)
    if text.startswith("vault:v"):
        raise ConfigError(
            f"secrets.kek_file: {path} holds a KEK wrapped by Vault Transit; set secrets.kek = "
            '"vault-transit:<the key that wrapped it>" to unwrap it'
        )
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"secrets.kek_file: {path} is not base64") from None
    if len(key) != KEK_BYTES:
        raise ConfigError(f"secrets.kek_file: {path} must hold {KEK_BYTES} bytes of base64, not {len(key)}")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"secrets.kek_file: {path} is readable by others (mode {mode:o}); chmod 600 {path}")
    return LoadedKek(key, path, generated=False)


def _create(path: Path) -> LoadedKek:
    """A new random KEK, written whole or not at all (see files.write_new): a process reading the file
    while this one creates it sees no file or the whole KEK, never an empty one. Of several processes
    creating it at once, one wins and the others use its KEK."""
    key = secrets.token_bytes(KEK_BYTES)
    try:
        written = files.write_new(path, (base64.b64encode(key).decode() + "\n").encode())
    except OSError as exc:
        raise ConfigError(f"secrets.kek_file: cannot create {path}: {exc.strerror}") from None
    if not written:  # another process created it first: use theirs
        return load_kek(str(path), create=False)
    return LoadedKek(key, path, generated=True)


# ----- envelope mode: the KEK wrapped by Vault Transit ------------------------------------------


class KeyWrapper(Protocol):
    """Wraps a data key with a key held elsewhere (``kek_transit.TransitWrapper``). Raises
    ConfigError when a human must act, UnavailableError when trying again may help."""

    description: str

    def ensure_key(self) -> None: ...

    def wrap(self, data: bytes) -> str: ...

    def unwrap(self, wrapped: str) -> bytes: ...

    def rewrap(self, wrapped: str) -> str: ...


def load_wrapped_kek(path_text: str, wrapper: KeyWrapper, *, create: bool) -> LoadedKek:
    """Unwrap the KEK in `path_text` with `wrapper`; with `create`, make one when the file is absent."""
    path = Path(path_text)
    text = _read(path)
    if text is None:
        _absent(
            path,
            create,
            "in envelope mode it holds the KEK wrapped by Vault Transit. Make it once with"
            f" `bao write -field=ciphertext transit/datakey/wrapped/<key> bits=256 > {path}` (or vault write ...)",
        )
        return _create_wrapped(path, wrapper)
    if not text.startswith("vault:v"):
        looks_plain = _plain_kek(text)
        raise ConfigError(
            f"secrets.kek_file: {path} "
            + (
                "holds a plaintext KEK, but secrets.kek wraps the KEK with Vault Transit; remove secrets.kek to use"
                " it (moving existing keys to a wrapped KEK is not supported yet)"
                if looks_plain
                else "is not a Vault Transit ciphertext (vault:v<n>:...)"
            )
        )
    key = _unwrap(path, text, wrapper)
    return LoadedKek(key, path, generated=False, wrapped_by=wrapper.description)


def wrapped_version(text: str) -> int:
    """The Transit key version of a ``vault:v<n>:...`` ciphertext (0 when it is not one)."""
    head = text.split(":", 2)[1] if text.count(":") >= 2 else ""
    return int(head[1:]) if head.startswith("v") and head[1:].isdigit() else 0


def rewrap_kek(path_text: str, wrapper: KeyWrapper) -> tuple[int, int]:
    """Rewrap the KEK file under the wrapping key's latest version: (old version, new version).

    The new ciphertext must unwrap to the very KEK the old one does before it replaces the file
    (written beside it, mode 0600, fsynced, renamed over it), so the KEK is never at risk.
    """
    path = Path(path_text)
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"secrets.kek_file: cannot read {path}: {exc}") from None
    old = wrapped_version(text)
    if not old:
        raise ConfigError(f"secrets.kek_file: {path} is not a Vault Transit ciphertext (vault:v<n>:...)")
    key = _unwrap(path, text, wrapper)
    rewrapped = wrapper.rewrap(text)
    new = wrapped_version(rewrapped)
    if new == old:
        return old, new
    if wrapper.unwrap(rewrapped) != key:
        raise ConfigError(f"secrets.kek: {wrapper.description} rewrapped the KEK into another key; file unchanged")
    files.replace(path, (rewrapped + "\n").encode())
    return old, new


def wrap_plain_kek(path_text: str, out_text: str, wrapper: KeyWrapper) -> None:
    """Move a plaintext KEK into envelope mode: write it wrapped by `wrapper` to a new file `out_text`
    (mode 0600, never over an existing file), after checking that it unwraps to the same KEK. The
    plaintext file is left for the operator to remove once the service starts with the new one."""
    loaded = load_kek(path_text, create=False)
    wrapper.ensure_key()
    wrapped = wrapper.wrap(loaded.key)
    if wrapper.unwrap(wrapped) != loaded.key:
        raise ConfigError(f"secrets.kek: {wrapper.description} did not give the KEK back; nothing written")
    if not files.write_new(Path(out_text), (wrapped + "\n").encode()):
        raise ConfigError(f"{out_text} exists; name a new file for the wrapped KEK")


def _plain_kek(text: str) -> bool:
    try:
        return len(base64.b64decode(text, validate=True)) == KEK_BYTES
    except (binascii.Error, ValueError):
        return False


def _unwrap(path: Path, text: str, wrapper: KeyWrapper) -> bytes:
    where = f"secrets.kek: cannot unwrap the KEK in {path} with {wrapper.description}"
    try:
        key = wrapper.unwrap(text)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.description}") from None
    except UnavailableError as exc:
        raise UnavailableError(
            f"{where}: {exc.description}. Without it no stored key can be read; start again once Vault answers",
            retry_after=exc.retry_after,
        ) from None
    if len(key) != KEK_BYTES:
        raise ConfigError(f"{where}: it holds {len(key)} bytes, not {KEK_BYTES}")
    return key


def _create_wrapped(path: Path, wrapper: KeyWrapper) -> LoadedKek:
    """A new random KEK, wrapped by Transit and checked to unwrap, written atomically (never over another)."""
    key = secrets.token_bytes(KEK_BYTES)
    where = f"secrets.kek: cannot wrap a new KEK with {wrapper.description}"
    try:
        wrapper.ensure_key()
        wrapped = wrapper.wrap(key)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.description}") from None
    except UnavailableError as exc:
        raise UnavailableError(f"{where}: {exc.description}", retry_after=exc.retry_after) from None
    if _unwrap(path, wrapped, wrapper) != key:  # the token can decrypt too, before anything is sealed with it
        raise ConfigError(f"{where}: Vault unwrapped it to another value")
    try:
        written = files.write_new(path, (wrapped + "\n").encode())
    except OSError as exc:
        raise ConfigError(f"secrets.kek_file: cannot create {path}: {exc.strerror}") from None
    if not written:  # another process of this deployment wrote its KEK first: use theirs
        return load_wrapped_kek(str(path), wrapper, create=False)
    return LoadedKek(key, path, generated=True, wrapped_by=wrapper.description)
