"""Copies of the audit log outside the store: a JSON-lines file and the local syslog ([audit] file,
syslog). The store holds the record; a sink is a second, append-only witness of it, written after
the store committed each event (the store's audit tap calls `write` in the writing thread, never
on the event loop).

Each line (or syslog message) is the event's canonical JSON, id and `prev` included, so the SHA-256
of one line is the `prev` of the next: the file can be checked without the store.

A sink that fails loses nothing in the store and fails no request: the first failure is logged,
later ones are counted, and when the sink works again one line says how many events it missed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from logging.handlers import SysLogHandler
from typing import Protocol

from .model import AuditEvent, canonical_json

log = logging.getLogger("jwks_service.audit")

DEV_LOG = "/dev/log"
SYSLOG_TAG = "jwks-service-audit: "


class AuditSink(Protocol):
    def write(self, events: Sequence[AuditEvent]) -> None: ...


def line(event: AuditEvent) -> str:
    return canonical_json(event.as_dict()).decode("ascii")


class _Counted(ABC):
    """A sink's failures: logged once, counted until it works again."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.missed = 0  # events not written since the sink began failing
        self.failures = 0  # failed writes in all (for tests and metrics)
        self._lock = threading.Lock()

    def write(self, events: Sequence[AuditEvent]) -> None:
        """One writer at a time (store writes come from several worker threads)."""
        with self._lock:
            try:
                self._write(events)
            except OSError as exc:
                first = self.missed == 0
                self.missed += len(events)
                self.failures += 1
                if first:
                    log.warning(
                        "audit sink %s failed: %s; the events are in the store; counting what it misses",
                        self.name,
                        exc,
                    )
                return
            missed, self.missed = self.missed, 0
        if missed:
            log.warning(
                "audit sink %s works again; it missed %d event%s", self.name, missed, "" if missed == 1 else "s"
            )

    @abstractmethod
    def _write(self, events: Sequence[AuditEvent]) -> None:
        """Write the events, or raise OSError."""


class FileSink(_Counted):
    """Appends one line per event to `path`: opened in append mode for each batch (so a log rotation
    that renames the file is followed at once), written with one write() and fsync'd before the
    store's caller goes on."""

    def __init__(self, path: str) -> None:
        super().__init__(f"file {path}")
        self.path = path

    def _write(self, events: Sequence[AuditEvent]) -> None:
        data = "".join(line(e) + "\n" for e in events).encode("ascii")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


class _RaisingHandler(SysLogHandler):
    """SysLogHandler, except that a failed send raises (for the count) instead of printing."""

    def handleError(self, record: logging.LogRecord) -> None:
        raise  # emit() calls this inside its except block: the send's OSError goes on


class SyslogSink(_Counted):
    """Sends one message per event to the local syslog (facility auth), at `address`: /dev/log, or
    any datagram socket path. Connects at the first event, and again after a failure."""

    def __init__(self, address: str = DEV_LOG) -> None:
        super().__init__(f"syslog {address}")
        self.address = address
        self._handler: SysLogHandler | None = None

    def _write(self, events: Sequence[AuditEvent]) -> None:
        if self._handler is None:
            self._handler = _RaisingHandler(self.address, SysLogHandler.LOG_AUTH, socket.SOCK_DGRAM)
            self._handler.ident = SYSLOG_TAG
        try:
            for e in events:
                self._handler.emit(
                    logging.makeLogRecord({"msg": line(e), "levelno": logging.INFO, "levelname": "INFO"})
                )
        except OSError:
            self._handler.close()
            self._handler = None
            raise

    def close(self) -> None:
        if self._handler is not None:
            self._handler.close()
            self._handler = None


def sinks(file: str, syslog: bool) -> list[AuditSink]:
    """The sinks [audit] asks for."""
    out: list[AuditSink] = []
    if file:
        out.append(FileSink(file))
    if syslog:
        out.append(SyslogSink())
    return out
