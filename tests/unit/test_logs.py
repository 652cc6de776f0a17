"""Log lines ([log] format and level) and request ids: the formatters, the set-up, the id rules."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from jwks_service import audit, logs, requestid
from jwks_service.clock import parse_rfc3339, rfc3339
from jwks_service.configparts import LogSettings
from jwks_service.model import AuditChain, AuditEvent, event_hash
from jwks_service.requestid import REQUEST_ID
from jwks_service.stores.codec import audit_from_dict

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) \S+ .*$")


def record(
    msg: object, *args: object, level: int = logging.INFO, name: str = "jwks_service.x", **extra: object
) -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, msg, args or None, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


@contextmanager
def request_id(rid: str) -> Iterator[None]:
    token = REQUEST_ID.set(rid)
    try:
        yield
    finally:
        REQUEST_ID.reset(token)


# ----- the JSON format ---------------------------------------------------------------------------


def test_json_line_has_time_level_logger_message_and_extra_fields() -> None:
    line = logs.JsonFormatter().format(record("served %s in %d ms", "x", 3, method="GET", status=200))
    data = json.loads(line)
    assert "\n" not in line
    assert list(data)[:4] == ["time", "level", "logger", "message"]
    assert data["level"] == "info" and data["logger"] == "jwks_service.x"
    assert data["message"] == "served x in 3 ms"
    assert data["method"] == "GET" and data["status"] == 200
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["time"])
    assert abs(parse_rfc3339(data["time"]) - record("m").created) < 5
    assert "request_id" not in data  # outside a request


def test_json_line_carries_the_current_request_id_and_escapes_newlines() -> None:
    with request_id("abc-1"):
        line = logs.JsonFormatter().format(record('two\nlines "quoted"'))
    assert line.count("\n") == 0
    data = json.loads(line)
    assert data["request_id"] == "abc-1" and data["message"] == 'two\nlines "quoted"'


def test_json_line_puts_an_audit_event_s_fields_at_the_top_level() -> None:
    event = audit.event(1700000000.5, "client:c1", "admin.rotate", "default", reason="drill", keyset="default")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    audit.logger.addHandler(handler)
    level = audit.logger.level
    audit.logger.setLevel(logging.INFO)
    try:
        audit.log_events([event])
    finally:
        audit.logger.removeHandler(handler)
        audit.logger.setLevel(level)
    data = json.loads(out.getvalue())
    assert data["message"] == "audit admin.rotate" and data["audit"] is True
    assert data["actor"] == "client:c1" and data["action"] == "admin.rotate" and data["target"] == "default"
    assert data["reason"] == "drill" and data["details"] == {"keyset": "default"} and data["at"] == 1700000000.5
    assert not any(isinstance(v, str) and v.startswith("{") for v in data.values())  # no JSON in a string


def test_json_line_with_a_traceback_and_values_json_cannot_hold() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("jwks_service", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    rec.when = object()  # an `extra` that is not JSON: written as its str()
    data = json.loads(logs.JsonFormatter().format(rec))
    assert data["level"] == "error" and "ValueError: boom" in data["exception"] and "Traceback" in data["exception"]
    assert data["when"].startswith("<object object")


def test_extra_fields_cannot_replace_the_line_s_own_keys() -> None:
    data = json.loads(logs.JsonFormatter().format(record("m", level=logging.WARNING, logger="forged", time="x")))
    assert data["logger"] == "jwks_service.x" and data["time"] != "x" and data["level"] == "warning"


# ----- the text format ---------------------------------------------------------------------------


def test_text_line_is_the_format_of_before_outside_a_request() -> None:
    line = logs.TextFormatter().format(record("started %s", "ok"))
    assert TEXT_LINE.match(line) and line.endswith(" INFO jwks_service.x started ok")


def test_text_line_ends_with_the_request_id_inside_a_request_before_any_traceback() -> None:
    with request_id("r-9"):
        assert logs.TextFormatter().format(record("hello")).endswith("jwks_service.x hello request_id=r-9")
        try:
            raise KeyError("k")
        except KeyError:
            rec = logging.LogRecord("jwks_service", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
        first, *rest = logs.TextFormatter().format(rec).splitlines()
    assert first.endswith("failed request_id=r-9") and rest[0].startswith("Traceback")


def test_text_line_of_an_audit_event_is_the_json_of_before() -> None:
    event = audit.event(5.0, "cli:root", "client.create", "c1")
    rec = record(logs.Fields("audit client.create", {"action": "client.create"}, audit._AuditText(event.as_dict())))
    line = logs.TextFormatter().format(rec)
    assert json.loads(line.split(" jwks_service.x ", 1)[1])["audit"]["action"] == "client.create"


# ----- the set-up --------------------------------------------------------------------------------


def test_configure_installs_one_handler_and_the_level(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    service = logging.getLogger("jwks_service")
    saved = service.level
    try:
        logs.configure(LogSettings(format="json", level="debug"))
        logs.configure(LogSettings(format="json", level="debug"))  # again: replaces, does not add
        assert sum(isinstance(h, logs.StderrHandler) for h in root.handlers) == 1
        logging.getLogger("jwks_service.test").debug("a debug line", extra={"n": 1})
        err = capsys.readouterr().err.splitlines()
        assert [json.loads(line)["message"] for line in err] == ["a debug line"]
        logs.configure(LogSettings(format="text", level="warning"))
        logging.getLogger("jwks_service.test").info("hidden")
        logging.getLogger("jwks_service.test").warning("shown")
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and TEXT_LINE.match(err[0]) and err[0].endswith("WARNING jwks_service.test shown")
    finally:
        for handler in [h for h in root.handlers if isinstance(h, logs.StderrHandler)]:
            root.removeHandler(handler)
        service.setLevel(saved)


def refused_while_held() -> None:
    with logs.held():
        logging.getLogger("jwks_service.config").warning("held, then written")
        raise ValueError("refused")


def test_lines_logged_while_the_settings_load_are_written_in_their_format(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    service = logging.getLogger("jwks_service")
    saved = service.level
    try:
        logs.configure(LogSettings(format="text"))  # an earlier set-up, in this process
        with logs.held():
            logging.getLogger("jwks_service.config").warning("ignoring environment variable %s", "JWKS_URL")
            assert capsys.readouterr().err == ""  # held
            logs.configure(LogSettings(format="json"))
        (line,) = capsys.readouterr().err.splitlines()
        assert json.loads(line)["message"] == "ignoring environment variable JWKS_URL"
        with pytest.raises(ValueError, match="refused"):  # no set-up: written as before
            refused_while_held()
        (line,) = capsys.readouterr().err.splitlines()
        assert json.loads(line)["message"] == "held, then written"
    finally:
        for handler in [h for h in root.handlers if isinstance(h, logs.StderrHandler)]:
            root.removeHandler(handler)
        service.setLevel(saved)


def test_uvicorn_config_routes_uvicorn_and_the_service_through_one_format(capsys: pytest.CaptureFixture[str]) -> None:
    """What uvicorn applies in its process and in each worker (logging.config.dictConfig)."""
    root = logging.getLogger()
    names = ("jwks_service", "uvicorn", "uvicorn.error", "uvicorn.access")
    saved = (list(root.handlers), root.level, {n: vars(logging.getLogger(n)).copy() for n in names})
    try:
        config = logs.uvicorn_config(LogSettings(format="json", level="warning"))
        json.dumps(config)  # plain data: it crosses to spawned workers
        logging.config.dictConfig(config)
        logging.getLogger("uvicorn.error").info("uvicorn info, below the level")
        logging.getLogger("uvicorn.error").warning("uvicorn warning")
        logging.getLogger("jwks_service.x").info("service info, below the level")
        logging.getLogger("jwks_service.x").error("service error")
        logging.getLogger("httpx").info("a library's info")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
        assert [(d["logger"], d["message"]) for d in lines] == [
            ("uvicorn.error", "uvicorn warning"),
            ("jwks_service.x", "service error"),
        ]
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, attrs in saved[2].items():
            vars(logging.getLogger(name)).update(attrs)


# ----- request ids -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["a", "abc-123", "A.b_c:d-e", "0" * 128, "4bf92f3577b34da6a3ce929d0e0e4736"])
def test_sane_request_ids_are_kept(value: str) -> None:
    assert requestid.sanitize(value.encode()) == value
    assert requestid.sanitize(value) == value
    assert requestid.from_headers([(b"host", b"x"), (b"x-request-id", value.encode())]) == value


@pytest.mark.parametrize(
    "value",
    [b"", b"0" * 129, b"has space", b"new\nline", b'quote"', b"semi;colon", b"slash/", b"caf\xc3\xa9", b"\x00", b"a=b"],
)
def test_other_request_ids_are_replaced(value: bytes) -> None:
    assert requestid.sanitize(value) is None
    new = requestid.from_headers([(b"x-request-id", value)])
    assert new != value.decode("latin-1") and requestid.sanitize(new) == new


def test_new_ids_are_sane_unique_and_differ_after_fork() -> None:
    ids = {requestid.new_id() for _ in range(10_000)}
    assert len(ids) == 10_000 and all(requestid.sanitize(i) == i for i in ids)
    assert requestid.from_headers([]) not in ids
    prefix = requestid.new_id().rsplit("-", 1)[0]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, requestid.new_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 200).decode()
    os.close(read)
    os.close(write)
    assert child.rsplit("-", 1)[0] != prefix and requestid.sanitize(child) == child


# ----- request ids in audit events ---------------------------------------------------------------


def test_an_audit_event_made_in_a_request_names_it_and_its_hash_covers_it() -> None:
    with request_id("req-7"):
        inside = audit.event(10.0, "client:a", "admin.rotate", "default")
    outside = audit.event(10.0, "client:a", "admin.rotate", "default")
    assert inside.details == {"request_id": "req-7"} and outside.details == {}
    assert event_hash(inside) != event_hash(outside)
    assert audit_from_dict(json.loads(json.dumps(inside.as_dict()))) == inside  # stores and backups keep it


def test_a_chain_of_old_events_without_request_ids_and_new_ones_with_them_verifies() -> None:
    old = AuditEvent(at=1.0, actor="cli:x", action="client.create", target="c", id=1, prev="")
    with request_id("r1"):
        made = audit.event(2.0, "client:a", "admin.rotate", "default")
    new = AuditEvent(**{**made.as_dict(), "id": 2, "prev": event_hash(old)})
    chain = AuditChain(first_id=1, first_prev="", last_id=2, last_hash=event_hash(new))
    assert audit.verify([old, new], chain).ok
    edited = AuditEvent(**{**new.as_dict(), "details": {"request_id": "r2"}})
    assert audit.verify([old, edited], chain).bad_id == 2


def test_lines_are_records_as_logger_info_makes_them() -> None:
    logger = logging.getLogger("jwks_service.test_lines")
    got: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = got.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        lines = logs.Lines(logger)
        before = time.time()
        lines.write(logs.Fields("GET / 200", {"status": 200}, "GET / 200"))
        logger.info("the usual way")
        logger.setLevel(logging.WARNING)
        lines.write("below the level")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    fast, usual = got
    assert len(got) == 2 and fast.getMessage() == "GET / 200" and fast.levelname == "INFO"
    assert before <= fast.created <= usual.created and int(fast.msecs) == int((fast.created % 1) * 1000)
    assert 0 <= usual.relativeCreated - fast.relativeCreated < 1000
    assert (fast.name, fast.process, fast.thread) == (usual.name, usual.process, usual.thread)
    assert json.loads(logs.JsonFormatter().format(fast))["status"] == 200
    assert fast.__dict__ is not lines.template and "created" in lines.template


@pytest.mark.parametrize("created", [0.0, 1700000000.0, 1700000000.5, 1795999022.123456, 1795999022.999])
def test_times_rendered_once_a_second_are_those_of_before(created: float) -> None:
    assert logs.JsonFormatter().time(created) == rfc3339(created, "milliseconds")
    rec = record("m")
    rec.created, rec.msecs = created, (created - int(created)) * 1000 // 1
    assert logs.TextFormatter().formatTime(rec) == logging.Formatter().formatTime(rec)
