"""`jwks-service serve`: the HTTP service under uvicorn."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import socket
from typing import Any

from .. import __version__, logs
from ..addresses import split_listen
from ..config import Settings, parse_duration
from ..errors import ConfigError, InvalidRequestError
from ..issuer import issuer_mismatch, listening_on
from ..runtime import build_runtime
from .common import generated_kek, settings_of, stderr

# On SIGTERM, requests in flight get this long to finish; open /keys/events streams are then cut
# (their clients reconnect elsewhere with Last-Event-ID).
GRACEFUL_SHUTDOWN_SECONDS = 3


def _http_protocol() -> Any:
    """uvicorn's httptools protocol with one write per response and the JWKS answered at once
    (http/protocol.py), when httptools is installed (it is a dependency); else uvicorn's own choice."""
    try:
        from ..http.protocol import ServiceProtocol
    except ImportError:
        return "auto"
    return ServiceProtocol


def _sighup(signum: int, frame: object) -> None:
    # `systemctl reload` sends SIGHUP, whose default action ends the process. Without TLS nothing
    # needs it: keys, clients and revocations are re-read from the store as they change. With TLS
    # the running server takes SIGHUP over to reload the certificate (http/listeners.py).
    logging.getLogger("jwks_service").warning(
        "SIGHUP: nothing to reload (keys, clients and revocations follow the store by themselves; a changed"
        " configuration needs a restart); still serving"
    )


def uvicorn_proxy_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's X-Forwarded-For handling from `[http] trusted_proxies`: off unless proxies are named.

    uvicorn's own default believes the header from 127.0.0.1 (or whatever FORWARDED_ALLOW_IPS says),
    which lets a local client pick its source address and so dodge the failed-login throttle or lock
    someone else out. uvicorn takes addresses and CIDR networks alike.
    """
    if not settings.trusted_proxies:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": list(settings.trusted_proxies)}


def _address_in_use(host: str, port: int) -> str:
    """Why the server could not listen on host:port ("" when it can), found before anything starts, so
    a busy port is one line rather than a start-up banner followed by uvicorn's traceback-like logs."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"{host}:{port} is in use by another process; stop it, or serve --listen HOST:PORT elsewhere"
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return ""


def tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's HTTPS options: with --workers each worker loads the files itself; one process
    serves them from a context of its own (http/listeners.py), and uvicorn only logs https."""
    return {"ssl_certfile": settings.tls_cert, "ssl_keyfile": settings.tls_key} if settings.tls else {}


def _check_listeners(settings: Settings, listen: str) -> None:
    if settings.admin_listen and split_listen(settings.admin_listen)[1] == split_listen(listen)[1]:
        raise ConfigError(f"http.admin_listen: must use another port than the one served ({listen})")


def _welcome(settings: Settings, listen: str) -> None:
    """Validate, create keys, and tell the user what happened and how to begin."""
    rt = build_runtime(settings)
    try:
        if rt.kek.generated:
            print(generated_kek(rt.kek))
        n_clients = len(rt.clients.read_all())
    finally:
        rt.close()
    keysets = ", ".join(f"{n} ({p.alg})" for n, p in settings.keysets.items())
    print(f"jwks-service {__version__}: issuer {settings.issuer}, store {settings.store_display}, keysets {keysets}")
    scheme = "https" if settings.tls else "http"
    print(f"JWKS:  {scheme}://{listen}/.well-known/jwks.json")
    if settings.admin_listen:
        print(f"Admin API and metrics: {scheme}://{settings.admin_listen}/admin/..., /metrics")
    if n_clients == 0:
        print("No clients yet. Create one and get a token:")
        print("  jwks-service clients create demo --scope read --audience api")
        print(f"  curl -s -u CLIENT_ID:CLIENT_SECRET -d grant_type=client_credentials {scheme}://{listen}/oauth/token")


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    # From the first moment: uvicorn handles SIGINT and SIGTERM only (with --workers, its supervisor
    # takes SIGHUP over and restarts the workers one by one).
    signal.signal(signal.SIGHUP, _sighup)
    settings = settings_of(args, serving=True)
    if args.listen:  # with the embedded default issuer, the issuer follows (API.md §8)
        settings = listening_on(settings, args.listen)
    listen = settings.listen
    host, port = split_listen(listen)
    if busy := _address_in_use(host, port):
        stderr(f"jwks-service: listen: {busy}")  # one line, exit 1 (README: 2 is a refused configuration)
        return 1
    drain_seconds = parse_duration(args.drain, "--drain")
    if drain_seconds and args.workers > 1:
        raise InvalidRequestError("--drain works with one worker per process: run one replica per worker instead")
    _check_listeners(settings, listen)
    from ..http.listeners import serve, serve_workers, tls_reload

    reload = tls_reload(settings)  # the files checked before anything starts
    _welcome(settings, listen)
    if mismatch := issuer_mismatch(settings):
        logging.getLogger("jwks_service").warning("%s", mismatch)
    if os.environ.get("FORWARDED_ALLOW_IPS"):
        logging.getLogger("jwks_service").warning(
            "FORWARDED_ALLOW_IPS is ignored: name the proxies whose X-Forwarded-For is believed in [http]"
            " trusted_proxies (or JWKS_HTTP__TRUSTED_PROXIES); now: %s",
            ", ".join(settings.trusted_proxies) or "none",
        )
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": logs.uvicorn_config(settings.log),  # applied here and in every worker
        "log_level": settings.log.level,
        "access_log": False,  # the service's own ([log] access: http/access.py)
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
        "http": _http_protocol(),
        **uvicorn_proxy_options(settings),
        **tls_options(settings),
    }
    if args.workers > 1:
        if settings.config_file:
            os.environ["JWKS_CONFIG"] = settings.config_file
        os.environ["JWKS_LISTEN"] = listen  # the workers derive the same default issuer
        app = "jwks_service.http.app:app_from_env"
        serve_workers(settings, uvicorn.Config(app, factory=True, workers=args.workers, **options))
        return 0
    from ..http.app import create_app
    from ..http.drain import Drain

    drain = Drain()
    config = uvicorn.Config(create_app(settings, drain=drain), **options)
    started = serve(settings, config, reload, drain, drain_seconds)
    return 0 if started else 1  # not started: uvicorn logged why
