"""adapters/transports.py `dot_stuffed`: the DATA of a mail is what the regular expression it
replaced wrote (a "." added at the start of every line starting with one, CRLF at the end,
the lone dot), whatever the bytes."""

from __future__ import annotations

import random
import re

import pytest

from mailgate.adapters.transports import dot_stuffed

_LEADING_DOT = re.compile(rb"(?m)^\.")


def _reference(raw: bytes) -> bytes:
    data = _LEADING_DOT.sub(b"..", raw)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


@pytest.mark.parametrize(
    "raw",
    [b"", b".", b"..", b".\r\n", b"a\r\n.b\r\n", b"a\n.b", b"a\r.b", b"a\r\n", b"a", b"\r\n.",
     b"a.b\r\n", b"Subject: x\r\n\r\n.\r\n..\r\n.x\r\n", b"\n\n.\n", b"\xff\n.\xfe"],
)  # fmt: skip
def test_a_mail_is_stuffed_as_the_regular_expression_stuffed_it(raw: bytes) -> None:
    assert dot_stuffed(raw) == _reference(raw)


def test_random_mails_are_stuffed_as_the_regular_expression_stuffed_them() -> None:
    rng = random.Random(1202)
    for _ in range(3000):
        raw = bytes(rng.choices(b".\r\n ax", k=rng.randrange(0, 60)))
        assert dot_stuffed(raw) == _reference(raw), raw
