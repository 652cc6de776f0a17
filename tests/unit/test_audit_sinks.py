"""[audit] file and syslog (API.md §8): every event the store appends is also written outside it, as its
canonical JSON (so the file can be checked without the store); a sink that fails loses no stored event
and fails no write, and says so once, with a count."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
from pathlib import Path

import pytest

from jwks_service.audit_sinks import FileSink, SyslogSink
from jwks_service.config import build_settings
from jwks_service.model import AuditEvent
from jwks_service.runtime import open_store


def events(n: int, start: float = 1.0) -> list[AuditEvent]:
    return [
        AuditEvent(at=start + i, actor="cli:alice", action="test", target=f"t{i}", details={"n": i}) for i in range(n)
    ]


def test_the_file_sink_gets_every_stored_event_as_one_chained_line(tmp_path: Path) -> None:
    file = tmp_path / "audit.jsonl"
    settings = build_settings({"store": {"url": f"sqlite:///{tmp_path}/jwks.db"}, "audit": {"file": str(file)}})
    store = open_store(settings)
    try:
        store.append_audit(events(2))
        store.append_audit(events(1, start=10.0))
        stored = store.list_audit_after(0, 100)
    finally:
        store.close()
    lines = file.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [e.as_dict() for e in stored]
    # The SHA-256 of each line is the next line's prev: the file is a chain of its own.
    for line, after in zip(lines, stored[1:], strict=False):
        assert hashlib.sha256(line.encode()).hexdigest() == after.prev
    assert file.stat().st_mode & 0o777 == 0o600


def test_a_failing_file_sink_loses_no_stored_event_and_logs_once_with_a_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "no-such-dir" / "audit.jsonl"
    settings = build_settings({"store": {"url": f"sqlite:///{tmp_path}/jwks.db"}, "audit": {"file": str(missing)}})
    store = open_store(settings)
    try:
        with caplog.at_level(logging.WARNING, logger="jwks_service.audit"):
            store.append_audit(events(2))  # no exception: the events are stored
            store.append_audit(events(3))
            assert len(store.list_audit_after(0, 100)) == 5
            failed = [r.getMessage() for r in caplog.records]
            assert len(failed) == 1 and f"audit sink file {missing} failed" in failed[0]
            missing.parent.mkdir()
            store.append_audit(events(1))
        assert "it missed 5 events" in caplog.records[-1].getMessage()
        assert len(missing.read_text().splitlines()) == 1
    finally:
        store.close()


def test_the_syslog_sink_sends_one_datagram_per_event(tmp_path: Path) -> None:
    address = str(tmp_path / "log")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(address)
    receiver.settimeout(5)
    sink = SyslogSink(address)
    try:
        sink.write(events(2))
        got = [receiver.recv(65536).decode() for _ in range(2)]
    finally:
        sink.close()
        receiver.close()
    for message, event in zip(got, events(2), strict=True):
        assert message.startswith("<38>")  # facility auth (4), severity info (6)
        body = message.split("jwks-service-audit: ", 1)[1].rstrip("\x00")
        assert json.loads(body) == event.as_dict()


def test_a_missing_syslog_socket_is_counted_and_retried(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    address = str(tmp_path / "log")
    sink = SyslogSink(address)
    with caplog.at_level(logging.WARNING, logger="jwks_service.audit"):
        sink.write(events(2))
        sink.write(events(1))
        assert (sink.missed, sink.failures) == (3, 2)
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        receiver.bind(address)
        try:
            sink.write(events(1))
            assert receiver.recv(65536)
        finally:
            sink.close()
            receiver.close()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "it missed 3 events" in messages[1]


def test_file_sink_batches_are_appended(tmp_path: Path) -> None:
    sink = FileSink(str(tmp_path / "a.jsonl"))
    (tmp_path / "a.jsonl").write_text("kept\n")
    sink.write(events(2))
    assert (tmp_path / "a.jsonl").read_text().splitlines()[0] == "kept"
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == 3
