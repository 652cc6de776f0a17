"""The sockets `serve` listens on, and HTTPS on them: the public `listen`, the admin listener
(`[http] admin_listen`, which `routes.AdminSplit` gives the admin routes), one `ssl.SSLContext`
for both (`[http] tls_cert`, `tls_key`), and SIGHUP, which loads the certificate files again.

A reload reads and checks the files in a worker thread (`tls.check`), then loads them into the
same context on the event loop (OpenSSL reads the two small files once more there; it takes only
paths): handshakes run on the loop, so none can start between the certificate and its key being
replaced. Handshakes after it present the new certificate; connections already open, kept-alive
ones included, are not touched. Files that fail the check leave the previous certificate in
place, and the error is logged.

With `--workers N` (`serve_workers`), uvicorn's supervisor hands both sockets to every worker,
and SIGHUP is the supervisor's: it replaces the workers one at a time, each loading the files.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import socket
import ssl
import time
from typing import Any

import uvicorn

from .. import tls
from ..addresses import split_listen
from ..config import Settings
from ..errors import ConfigError
from .drain import Drain, DrainingServer

log = logging.getLogger("jwks_service")


class TlsReload:
    """The served context and the files it was loaded from."""

    def __init__(self, context: ssl.SSLContext, cert: tls.Certificate) -> None:
        self.context = context
        self.cert = cert
        self._task: asyncio.Task[None] | None = None
        self._again = False
        _warn_if_expired(cert)

    def signalled(self) -> None:
        """SIGHUP: reload now; during a reload, once more after it (the files may have changed since)."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._again = False
        self._task = asyncio.get_running_loop().create_task(self._reloads())

    async def _reloads(self) -> None:
        await self.reload()
        while self._again:
            self._again = False
            await self.reload()

    async def reload(self) -> None:
        try:
            cert = await asyncio.to_thread(tls.check, self.cert.cert_file, self.cert.key_file)
            tls.load(self.context, cert)
        except ConfigError as exc:
            log.error("SIGHUP: the TLS certificate was not reloaded, the previous one is still served: %s", exc)
            return
        self.cert = cert
        log.info("SIGHUP: reloaded the TLS certificate: %s", cert.summary)
        _warn_if_expired(cert)


def _warn_if_expired(cert: tls.Certificate) -> None:
    if cert.not_after <= time.time():
        log.warning("http.tls_cert: the certificate served has expired: %s", cert.summary)


class Server(DrainingServer):
    """`serve`'s single-process server: the drain period, and with TLS, SIGHUP reloading it."""

    def __init__(self, config: uvicorn.Config, drain: Drain, seconds: float, reload: TlsReload | None) -> None:
        super().__init__(config, drain, seconds)
        self.tls_reload = reload

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if self.tls_reload is not None:
            self.config.ssl = self.tls_reload.context  # instead of the one uvicorn made: one context, reloadable
        await super().startup(sockets)
        if self.tls_reload is not None and self.started:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.tls_reload.signalled)


def bind(config: uvicorn.Config, listen: str) -> socket.socket:
    """A listening socket for `listen` (HOST:PORT), bound (and logged) as uvicorn binds `config`'s
    own; an address in use is logged, and the process exits with status 1."""
    host, port = config.host, config.port
    config.host, config.port = split_listen(listen)
    try:
        return config.bind_socket()
    finally:
        config.host, config.port = host, port


def tls_reload(settings: Settings) -> TlsReload | None:
    """The served context, its files checked (ConfigError naming the file), when TLS is on."""
    return TlsReload(*tls.server_context(settings)) if settings.tls else None


def _sockets(settings: Settings, config: uvicorn.Config) -> list[socket.socket]:
    """`config`'s address, and the admin listener's if there is one."""
    sockets = [config.bind_socket()]
    if settings.admin_listen:
        sockets.append(bind(config, settings.admin_listen))
    return sockets


def serve(
    settings: Settings, config: uvicorn.Config, reload: TlsReload | None, drain: Drain, drain_seconds: float
) -> bool:
    """Run the server until it stops; False if it did not start (uvicorn logged why)."""
    sockets = _sockets(settings, config)
    server = Server(config, drain, drain_seconds, reload)
    try:
        server.run(sockets=sockets)
    finally:
        for sock in sockets:
            sock.close()
    return server.started


def serve_workers(settings: Settings, config: uvicorn.Config) -> None:
    """`--workers N`: uvicorn's supervisor and its N worker processes, each serving both sockets
    (`config` names the app by import string; each worker loads it, and the TLS files, itself)."""
    from uvicorn.supervisors import Multiprocess

    sockets = _sockets(settings, config)
    options: dict[str, Any] = {"sockets": sockets}
    if "target" in inspect.signature(Multiprocess).parameters:  # uvicorn before 0.5x took the worker's target
        options["target"] = uvicorn.Server(config).run
    try:
        Multiprocess(config, **options).run()
    except KeyboardInterrupt:
        pass
    finally:
        for sock in sockets:
            sock.close()
