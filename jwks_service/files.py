"""Secret files written whole or not at all (the KEK, the wrapped KEK, backups), and read with one
error naming the setting or command they belong to.

Each is written to a temporary file beside its target (mode 0600, fsynced), then moved into place in
one step: hard-linked when it must not replace anything (so two processes creating the same file at
once end with one of them, whole), renamed over the target when it replaces it. A reader sees no
file, the old one or the new one, never a partial one. Where the file system has no hard links, a
new file is created in place with O_EXCL (atomic against other writers, not against readers).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .errors import JwksServiceError

MODE = 0o600


def read(path: str | Path, what: str, error: type[JwksServiceError]) -> bytes:
    """The file's bytes; `error` naming `what` (a setting, a command) when it is missing or unreadable."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise error(f"{what}: file {path} does not exist") from None
    except OSError as exc:
        raise error(f"{what}: cannot read {path}: {exc.strerror}") from None


def write_new(path: Path, data: bytes) -> bool:
    """Create `path` with `data`; False (nothing written) when it exists already."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        _write_exclusive(tmp, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # no hard links here
            try:
                _write_exclusive(path, data)
            except FileExistsError:
                return False
        fsync_dir(path.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def replace(path: Path, data: bytes) -> None:
    """Write `path` with `data`, replacing whatever is there, in one rename."""
    tmp = _temporary(path)
    try:
        _write_exclusive(tmp, data)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def fsync_dir(folder: Path) -> None:
    """Make a new directory entry durable (best effort: not every platform can open a directory; the
    rename or link itself is atomic either way)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def _write_exclusive(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, MODE)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
