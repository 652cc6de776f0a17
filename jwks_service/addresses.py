"""Addresses in the settings: HOST:PORT listen addresses, the embedded default issuer they imply, store
URLs (a SQLite path; a Redis URL with its password hidden). Pure: strings in, strings out."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_ISSUER = "http://127.0.0.1:8000"
DEFAULT_LISTEN = "127.0.0.1:8000"


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***, for messages and logs. Works on the text of the
    authority, so that URLs with several hosts (redis+sentinel://, redis+cluster://) are redacted too."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable Redis URL>"
    userinfo, at, hosts = parts.netloc.rpartition("@")
    netloc = f"{userinfo.partition(':')[0]}:***@{hosts}" if at and ":" in userinfo else parts.netloc
    # redis-py also takes the password from the query string (?password=...).
    query = _PASSWORD_PARAM.sub(r"\1***", parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_PASSWORD_PARAM = re.compile(r"((?:^|&)password=)[^&]*", re.IGNORECASE)


def default_issuer(listen: str, *, tls: bool = False) -> str:
    """The embedded default issuer for a listen address: http://HOST:PORT, or https:// when serving TLS."""
    issuer = f"http://{listen}" if valid_listen(listen) else DEFAULT_ISSUER
    return "https" + issuer[len("http") :] if tls else issuer


def valid_listen(listen: str) -> bool:
    host, sep, port = listen.rpartition(":")
    return bool(sep and host and port.isascii() and port.isdigit() and 0 < int(port) < 65536)


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def sqlite_path(store_url: str) -> Path:
    """``sqlite:///var/jwks.db`` is relative (``var/jwks.db``); ``sqlite:////srv/jwks.db`` absolute."""
    return Path(store_url[len("sqlite:///") :])
