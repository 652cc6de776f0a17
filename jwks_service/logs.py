"""The service's own log lines, as `[log]` asks: `format` (text or json), `level`, on stderr.

- text (the default): `<time> <LEVEL> <logger> <message>`, as before, plus ` request_id=<id>` on the
  lines written while handling a request.
- json: one object per line, `{"time" (RFC 3339, UTC, milliseconds), "level", "logger", "message",
  "request_id"?, ...fields}`; a record's fields are its `extra` items and, for a `Fields` message
  (audit events), that message's fields, all as top-level keys; a traceback goes in `exception`.

`configure` sets up the process (the CLI, and `serve` before uvicorn starts); `uvicorn_config` is the
same set-up as a `logging.config` dictionary, which uvicorn applies in its process and again in every
worker process it starts (`--workers N`), so that all of them log alike.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

import orjson

from .clock import rfc3339
from .configparts import LogSettings
from .requestid import REQUEST_ID

SERVICE_LOGGER = "jwks_service"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

# The attributes every LogRecord has: anything else on a record came from `extra`. uvicorn adds
# `color_message` (the message with terminal colours) to its own lines.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName", "color_message"}
_HEAD = ("time", "level", "logger", "message", "request_id")


class Fields:
    """A log message with fields of its own: the text format prints `text` (an object whose str() is
    the line, made only when a text line is written); the json format writes `summary` as the message
    and each field as a top-level key."""

    __slots__ = ("fields", "summary", "text")

    def __init__(self, summary: str, fields: Mapping[str, Any], text: object) -> None:
        self.summary = summary
        self.fields = fields
        self.text = text

    def __str__(self) -> str:
        return str(self.text)


class Lines:
    """A line written per request (the access log): `logger`'s records at `level`, each a copy of a
    template of what does not change in this process (its pid, thread, source) with the time and the
    message set, handed to the logger's handlers as `Logger.info` would. `Logger.info` spends about as
    long making a record (the caller's frame, the pid, the thread) as the line takes to format and write.
    Make it in the thread that will write the lines (the event loop's)."""

    def __init__(self, logger: logging.Logger, level: int = logging.INFO) -> None:
        self.logger = logger
        self.level = level
        self.template = vars(logger.makeRecord(logger.name, level, __file__, 0, "", (), None)).copy()

    def write(self, msg: object) -> None:
        if not self.logger.isEnabledFor(self.level):
            return
        now = time.time()
        template = self.template
        record = logging.LogRecord.__new__(logging.LogRecord)
        fields = record.__dict__
        fields.update(template)
        fields["created"] = now
        fields["msecs"] = (now - int(now)) * 1000 // 1 + 0.0
        fields["relativeCreated"] = template["relativeCreated"] + (now - template["created"]) * 1000
        fields["msg"] = msg
        self.logger.handle(record)


def _request_id(record: logging.LogRecord) -> str:
    rid = getattr(record, "request_id", "")
    return rid if isinstance(rid, str) and rid else REQUEST_ID.get()


class _PerSecond:
    """A line's time down to the second, rendered once a second (a line costs a few µs, this was one)."""

    def __init__(self, render: Callable[[int], str]) -> None:
        self.render = render
        self.last: tuple[int, str] = (-1, "")

    def __call__(self, second: int) -> str:
        last = self.last
        if last[0] != second:
            last = self.last = (second, self.render(second))
        return last[1]


def _rfc3339_second(second: int) -> str:
    return rfc3339(second)[:-1]  # without its "Z"


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = _PerSecond(_rfc3339_second)

    def time(self, created: float) -> str:
        """clock.rfc3339(created, "milliseconds"), the same text."""
        second = int(created)
        return f"{self._second(second)}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        msg = record.msg
        fields: Mapping[str, Any] = {}
        if isinstance(msg, Fields) and not record.args:
            message, fields = msg.summary, msg.fields
        else:
            message = record.getMessage()
        out: dict[str, Any] = {
            "time": self.time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        if rid := _request_id(record):
            out["request_id"] = rid
        if record.__dict__.keys() - _RECORD_ATTRIBUTES:  # `extra` items
            for key, value in record.__dict__.items():
                if key not in _RECORD_ATTRIBUTES and key not in _HEAD:
                    out[key] = value
        for key, value in fields.items():
            if key not in _HEAD:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._second = _PerSecond(lambda second: time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second)))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return f"{self._second(int(record.created))},{int(record.msecs):03d}"  # logging's default, per second

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)  # before a traceback, which format() appends
        rid = _request_id(record)
        return f"{line} request_id={rid}" if rid else line


def formatter(format: str = "text") -> logging.Formatter:
    """The formatter of `[log] format` (a factory `logging.config` can name)."""
    return JsonFormatter() if format == "json" else TextFormatter()


class StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is when a line is written (a test's capture, a redirected
    stream), as logging's last-resort handler does."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        logging.Handler.__init__(self, level)

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        return sys.stderr

    def emit(self, record: logging.LogRecord) -> None:
        # StreamHandler's, with one stream look-up and no second lock for the flush (handle() holds it).
        try:
            line = self.format(record)
            stream = sys.stderr
            stream.write(line + "\n")
            stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def _levels(settings: LogSettings) -> tuple[int, int]:
    """(the service's level, the root logger's): other libraries' lines from warning up, or from the
    service's level when that is higher."""
    level = logging.getLevelName(settings.level.upper())
    assert isinstance(level, int)
    return level, max(level, logging.WARNING)


def configure(settings: LogSettings) -> None:
    """Log as `settings` say, from now on, in this process: one handler on the root logger (it replaces
    one an earlier call installed, and leaves any other alone), the level on the service's loggers."""
    level, root_level = _levels(settings)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, StderrHandler):
            root.removeHandler(handler)
    handler = StderrHandler()
    handler.setFormatter(formatter(settings.format))
    root.addHandler(handler)
    if root.level < root_level:
        root.setLevel(root_level)
    logging.getLogger(SERVICE_LOGGER).setLevel(level)


class _Held(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def held() -> Iterator[None]:
    """Hold the lines logged meanwhile (warnings about the configuration, while it loads) and write
    them afterwards through the handler `configure` installed then: in the format it asked for. When
    none was installed (the configuration was refused), they go where they went before."""
    root = logging.getLogger()
    before: list[logging.Handler] = [h for h in root.handlers if isinstance(h, StderrHandler)]
    for handler in before:
        root.removeHandler(handler)
    holder = _Held()
    root.addHandler(holder)
    try:
        yield
    finally:
        root.removeHandler(holder)
        after: list[logging.Handler] = [h for h in root.handlers if isinstance(h, StderrHandler)]
        if not after:
            for handler in before:
                root.addHandler(handler)
        last = [logging.lastResort] if logging.lastResort else []
        for record in holder.records:
            for handler in after or before or last:
                if record.levelno >= handler.level:
                    handler.handle(record)


def uvicorn_config(settings: LogSettings) -> dict[str, Any]:
    """`configure` as a `logging.config.dictConfig` dictionary, for uvicorn's `log_config`: uvicorn's
    own lines go through the same handler and format, at the same level."""
    level, root_level = _levels(settings)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"service": {"()": f"{__name__}.formatter", "format": settings.format}},
        "handlers": {"stderr": {"()": f"{__name__}.StderrHandler", "formatter": "service"}},
        "loggers": {
            SERVICE_LOGGER: {"level": level},
            "uvicorn": {"handlers": [], "propagate": True, "level": level},
            "uvicorn.error": {"handlers": [], "propagate": True, "level": level},
            "uvicorn.access": {"handlers": [], "propagate": False},  # the service's own access log replaces it
        },
        "root": {"level": root_level, "handlers": ["stderr"]},
    }
