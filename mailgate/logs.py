"""One line per event, `event key=value ...` (or JSON), on stderr for journald."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

_LOGGER = logging.getLogger("mailgate")


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\r\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


def _event_and_fields(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    if hasattr(record, "fields"):
        return record.getMessage(), record.fields
    # A library's free-text record (uvicorn, asyncio): the logger names the event.
    return record.name, {"message": record.getMessage()}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        name, fields = _event_and_fields(record)
        line = f"level={record.levelname.lower()} event={name}"
        if fields:
            line += " " + " ".join(f"{k}={_quote(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        name, fields = _event_and_fields(record)
        doc: dict[str, Any] = {"level": record.levelname.lower(), "event": name}
        doc.update(fields)
        if record.exc_info:
            doc["traceback"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def setup(fmt: str = "kv", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    _LOGGER.handlers[:] = [handler]
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


def event(name: str, level: int = logging.INFO, exc_info: bool = False, /, **fields: Any) -> None:
    _LOGGER.log(level, name, extra={"fields": fields}, exc_info=exc_info)


def info(name: str, /, **fields: Any) -> None:
    event(name, logging.INFO, False, **fields)


def warning(name: str, /, **fields: Any) -> None:
    event(name, logging.WARNING, False, **fields)


def error(name: str, /, exc_info: bool = False, **fields: Any) -> None:
    event(name, logging.ERROR, exc_info, **fields)
