"""mailgate.logs writes the same lines as it did before it was made cheaper (quoting by one
regex and the JSON string encoder, records made without logging's stack walk): every value is
quoted as `json.dumps(str(value), ensure_ascii=False)` when it is empty or holds a space, a
double quote, "=", CR, LF or tab, and given as str(value) otherwise; the JSON format is
json.dumps(..., ensure_ascii=False, default=str). A record names the code that logged."""

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
def captured(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    logs.setup(getattr(request, "param", "kv"))
    stream = io.StringIO()
    for handler in logging.getLogger("mailgate").handlers:
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(stream)
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


@pytest.mark.parametrize("captured", ["json"], indirect=True)
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
