"""The key-encryption key (KEK) that protects local private keys at rest, and keys derived from it."""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import ConfigError

KEK_BYTES = 32


@dataclass(frozen=True, slots=True)
class LoadedKek:
    key: bytes
    path: Path
    generated: bool  # True when this start created the file

    def derive(self, purpose: str) -> bytes:
        """A 256-bit key for one purpose (HKDF-SHA256), so one secret file serves several uses."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"jwks-service/" + purpose.encode()).derive(
            self.key
        )


def load_kek(path_text: str, *, create: bool) -> LoadedKek:
    """Read a base64 KEK file; create it (mode 0600) when absent and `create` is allowed."""
    path = Path(path_text)
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        if not create:
            raise ConfigError(
                f"secrets.kek_file: {path} does not exist; create it with `openssl rand -base64 32 > {path}`"
                " and give every replica the same file"
            ) from None
        return _create(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"secrets.kek_file: cannot read {path}: {exc}") from None
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
    key = secrets.token_bytes(KEK_BYTES)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return load_kek(str(path), create=False)
    except OSError as exc:
        raise ConfigError(f"secrets.kek_file: cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(base64.b64encode(key).decode() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return LoadedKek(key, path, generated=True)
