"""One line per event, `event key=value ...` (or JSON), on stderr for journald."""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

_LOGGER = logging.getLogger("mailgate")

# The single writer logs several lines a mail: each is built with as little work as gives
# the same text (a quote check by one regex search, the JSON string encoder itself, a record
# made without logging's walk of the stack, or no record at all: see _emit).
_NEEDS_QUOTES = re.compile('[ "=\n\r\t]').search
_JSON_STRING = json.encoder.encode_basestring  # json.dumps(text, ensure_ascii=False) for a str
_JSON_LINE = json.JSONEncoder(ensure_ascii=False, default=str).encode


def _quote(value: Any) -> str:
    text = value if type(value) is str else str(value)
    if text == "" or _NEEDS_QUOTES(text):
        return _JSON_STRING(text)
    return text


def _event_and_fields(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    if hasattr(record, "fields"):
        return record.getMessage(), record.fields
    # A library's free-text record (uvicorn, asyncio): the logger names the event.
    return record.name, {"message": record.getMessage()}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        name, fields = _event_and_fields(record)
        line = self.line(record.levelname.lower(), name, fields)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line

    @staticmethod
    def line(level: str, name: str, fields: dict[str, Any]) -> str:
        line = f"level={level} event={name}"
        if fields:
            line += " " + " ".join([f"{k}={_quote(v)}" for k, v in fields.items()])
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        name, fields = _event_and_fields(record)
        doc = self._doc(record.levelname.lower(), name, fields)
        if record.exc_info:
            doc["traceback"] = self.formatException(record.exc_info)
        return _JSON_LINE(doc)

    @classmethod
    def line(cls, level: str, name: str, fields: dict[str, Any]) -> str:
        return _JSON_LINE(cls._doc(level, name, fields))

    @staticmethod
    def _doc(level: str, name: str, fields: dict[str, Any]) -> dict[str, Any]:
        doc: dict[str, Any] = {"level": level, "event": name}
        doc.update(fields)
        return doc


_LEVELS = {n: logging.getLevelName(n).lower() for n in (10, 20, 30, 40, 50)}
# setup()'s handler, for _emit's direct path: see there.
_direct: logging.StreamHandler[Any] | None = None


def setup(fmt: str = "kv", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    _LOGGER.handlers[:] = [handler]
    global _direct
    _direct = handler
    _LOGGER.setLevel(level)
    _LOGGER.propagate = False
    # Libraries' warnings and errors reach the root logger: same stream, same format, so a
    # log shipper reading --log-format json never meets a plain-text line. Other handlers
    # on the root (pytest's capture) stay.
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "mailgate", False)]:
        root.removeHandler(old)
    library = logging.StreamHandler(sys.stderr)
    library.setFormatter(handler.formatter)
    library.mailgate = True  # type: ignore[attr-defined]
    root.addHandler(library)


def settings() -> tuple[str, int]:
    """This process's log format and level, for a child process to log alike (`setup`)."""
    json_lines = any(isinstance(h.formatter, JsonFormatter) for h in _LOGGER.handlers)
    return ("json" if json_lines else "kv"), _LOGGER.level or logging.INFO


def _emit(level: int, name: str, exc_info: bool, fields: dict[str, Any]) -> None:
    """What Logger.log does, the record naming the code that called event/info/warning/error
    (two frames up) instead of asking logging.findCaller to walk the stack for it (it stopped
    at this module anyway)."""
    logger = _LOGGER
    if not logger.isEnabledFor(level):
        return
    handler = _direct
    if (
        handler is not None
        and not exc_info
        and level in _LEVELS
        and len(logger.handlers) == 1
        and logger.handlers[0] is handler
        and not logger.filters
        and not handler.filters
        and level >= handler.level
        and isinstance(handler.formatter, (KeyValueFormatter, JsonFormatter))
    ):
        # The line setup()'s handler alone would write, written directly: no LogRecord (its
        # clock, pid, thread and process names) nor the handler chain, which cost more than
        # the line itself (a call took 11.8 us that way, 5.2 this way): serve's writer logs
        # several a mail. Any other handler (deliver's buffer, a test's) or a traceback takes
        # the way below.
        line = handler.formatter.line(_LEVELS[level], name, fields)
        handler.acquire()
        try:
            handler.stream.write(line + handler.terminator)
            handler.stream.flush()
            return
        except Exception:  # noqa: S110  (the way below writes it, or reports why it cannot)
            pass
        finally:
            handler.release()
    caller = sys._getframe(2)
    code = caller.f_code
    record = logger.makeRecord(
        logger.name,
        level,
        code.co_filename,
        caller.f_lineno,
        name,
        (),
        sys.exc_info() if exc_info else None,
        code.co_name,
        {"fields": fields},
    )
    logger.handle(record)


def event(name: str, level: int = logging.INFO, exc_info: bool = False, /, **fields: Any) -> None:
    _emit(level, name, exc_info, fields)


def info(name: str, /, **fields: Any) -> None:
    _emit(logging.INFO, name, False, fields)


def warning(name: str, /, **fields: Any) -> None:
    _emit(logging.WARNING, name, False, fields)


def error(name: str, /, exc_info: bool = False, **fields: Any) -> None:
    _emit(logging.ERROR, name, exc_info, fields)
