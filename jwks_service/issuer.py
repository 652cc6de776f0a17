"""The issuer and the listen address: what `serve --listen` does to the embedded default issuer, and
whether the issuer points at this server at all (API.md §8). Pure: settings in, settings or a
warning out."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlsplit

from .addresses import default_issuer, split_listen, valid_listen
from .config import Settings
from .errors import ConfigError


def listening_on(settings: Settings, listen: str) -> Settings:
    """`serve --listen HOST:PORT`: the settings with that address, and with the embedded default
    issuer, the issuer http://HOST:PORT (a configured issuer is never changed; API.md §8)."""
    if not valid_listen(listen):
        raise ConfigError(f"--listen: must be HOST:PORT with a port from 1 to 65535 (got {listen!r})")
    issuer = settings.issuer if settings.issuer_configured else default_issuer(listen, tls=settings.tls)
    return replace(settings, listen=listen, issuer=issuer)


_LOOPBACK = {"localhost", "127.0.0.1", "::1"}
_WILDCARD = {"0.0.0.0", "::", ""}  # noqa: S104 - names, compared; nothing binds here


def issuer_mismatch(settings: Settings) -> str:
    """Why the issuer does not point at this server's listen address ("" when it does, or when a proxy
    is declared in [http] trusted_proxies, which may well publish it under another name). Discovery
    and every token name the issuer: a wrong one sends verifiers elsewhere, silently."""
    if settings.trusted_proxies:
        return ""
    parts = urlsplit(settings.issuer)
    host, port = split_listen(settings.listen)
    try:
        issuer_port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return ""
    issuer_host = (parts.hostname or "").lower()
    same_host = host in _WILDCARD or issuer_host == host.lower() or {issuer_host, host} <= _LOOPBACK
    if issuer_port == port and same_host:
        return ""
    return (
        f"issuer {settings.issuer} does not point at this server's listen address {settings.listen}: discovery and"
        " every token send verifiers there. Set issuer to the URL clients reach this server at, or declare the"
        " proxy in front of it in [http] trusted_proxies"
    )
