"""mailgate.logs writes the same lines as it did before it was made cheaper (quoting by one
regex and the JSON string encoder, records made without logging's stack walk): every value is
quoted as `json.dumps(str(value), ensure_ascii=False)` when it is empty or holds a space, a
double quote, "=", CR, LF or tab, and given as str(value) otherwise; the JSON format is
json.dumps(..., ensure_ascii=False, default=str). A record names the code that logged. Each
line is checked both ways it can be written: directly by setup()'s handler when it is the
logger's only one (serve), and through a LogRecord when another handler is there."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from enum import StrEnum
from typing import Any

import pytest

from mailgate import logs


class Colour(StrEnum):
    RED = "red"


VALUES: list[Any] = [
    "", "plain", "two words", 'a"quote', "k=v", "line\nbreak", "cr\rhere", "tab\there",
    "été", "日本", "emoji 🙂", "back\\slash", "\x00nul", "\x1bescape", "\u2028sep", None, 0, -3,
    12.5, True, Colour.RED, b"bytes", ("a", 1), {"k": "v w"},
]  # fmt: skip


def _reference_quote(value: Any) -> str:
    """The quoting as it was written before."""
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\r\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


@pytest.fixture
def log_format() -> str:
    return "kv"


def _setup_alone(log_format: str, monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """logs.setup(), its handler writing to a string and the logger's only handler, as in
    serve (pytest attaches its capture handlers to a logger that does not propagate: taken
    off here)."""
    logs.setup(log_format)
    ours = logging.getLogger("mailgate")
    (handler,) = [h for h in ours.handlers if h is logs._direct]
    stream = io.StringIO()
    handler.setStream(stream)
    monkeypatch.setattr(ours, "handlers", [handler])
    return stream


@pytest.fixture(params=["direct", "record"])
def captured(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, log_format: str
) -> Iterator[io.StringIO]:
    """Two ways: "direct", setup()'s handler alone, lines written without a LogRecord;
    "record", another handler beside it, so every line goes through a LogRecord and the
    formatter's format()."""
    stream = _setup_alone(log_format, monkeypatch)
    if request.param == "record":
        logging.getLogger("mailgate").addHandler(_Records())
    yield stream
    logs.setup()


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_a_value_is_quoted_as_before(value: Any) -> None:
    assert logs._quote(value) == _reference_quote(value)


def test_key_value_lines_are_as_before(captured: io.StringIO) -> None:
    fields = {f"f{i}": v for i, v in enumerate(VALUES)}
    logs.info("test.line", **fields)
    logs.warning("test.empty")
    expected = "level=info event=test.line " + " ".join(
        f"{k}={_reference_quote(v)}" for k, v in fields.items()
    )
    assert captured.getvalue().split("\n") == [expected, "level=warning event=test.empty", ""]


@pytest.mark.parametrize("log_format", ["json"])
def test_json_lines_are_as_before(captured: io.StringIO) -> None:
    fields = {f"f{i}": v for i, v in enumerate(VALUES)}
    logs.error("test.line", **fields)
    doc = {"level": "error", "event": "test.line", **fields}
    assert captured.getvalue() == json.dumps(doc, ensure_ascii=False, default=str) + "\n"


def test_exc_info_and_levels_as_logger_log_has_them(captured: io.StringIO) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logs.error("test.crashed", exc_info=True, n=1)
        logs.event("test.quiet", logging.DEBUG, True, n=2)  # below the level: nothing
    lines = captured.getvalue().splitlines()
    assert lines[0] == "level=error event=test.crashed n=1"
    assert lines[1] == "Traceback (most recent call last):" and lines[-1] == "RuntimeError: boom"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_record_names_the_code_that_logged() -> None:
    ours, kept = logging.getLogger("mailgate"), _Records()
    ours.addHandler(kept)
    try:
        lines = [sys._getframe().f_lineno + 1, sys._getframe().f_lineno + 2]
        logs.info("test.where", n=1)
        logs.event("test.where", logging.INFO, False, n=2)
    finally:
        ours.removeHandler(kept)
    found = [(r.pathname, r.lineno, r.funcName, getattr(r, "fields", None)) for r in kept.records]
    assert found == [
        (__file__, lines[0], "test_a_record_names_the_code_that_logged", {"n": 1}),
        (__file__, lines[1], "test_a_record_names_the_code_that_logged", {"n": 2}),
    ]


def test_the_setup_handler_alone_gets_its_line_without_a_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = _setup_alone("kv", monkeypatch)
    made: list[str] = []
    real = logging.Logger.makeRecord

    def counting(self: logging.Logger, *args: Any, **kwargs: Any) -> logging.LogRecord:
        made.append(args[4])  # the event name
        return real(self, *args, **kwargs)

    monkeypatch.setattr(logging.Logger, "makeRecord", counting)
    try:
        logs.info("test.direct", n=1)
        assert made == []  # written directly (the tests above check it is the same text)
        ours, kept = logging.getLogger("mailgate"), _Records()
        ours.addHandler(kept)  # another handler: it gets a record, the line is still written
        logs.info("test.both", n=2)
        ours.removeHandler(kept)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logs.error("test.traceback", exc_info=True)  # a traceback: through a record too
    finally:
        logs.setup()
    assert made == ["test.both", "test.traceback"]
    assert [getattr(r, "fields", None) for r in kept.records] == [{"n": 2}]
    assert stream.getvalue().splitlines()[:3] == [
        "level=info event=test.direct n=1",
        "level=info event=test.both n=2",
        "level=error event=test.traceback",
    ]
