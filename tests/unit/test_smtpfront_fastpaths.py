"""Shortcuts taken for CPU in the SMTP front and its parse workers give what the general
code gives: each is compared with the code it stands in for, on generated input."""

from __future__ import annotations

import unicodedata
from email.utils import parseaddr

from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.core import limits, loops, quotes


def old_body_start(raw: bytes) -> int:
    crlf, lf = raw.find(b"\r\n\r\n"), raw.find(b"\n\n")
    return min((i + n for i, n in ((crlf, 4), (lf, 2)) if i >= 0), default=len(raw))


def old_normalise_subject(subject: str) -> str:
    decomposed = unicodedata.normalize("NFKD", subject)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


LINE_BITS = st.lists(st.sampled_from([b"\r\n", b"\n", b"\r", b"a", b" ", b":"]), max_size=30)


@settings(max_examples=500)
@given(LINE_BITS)
def test_body_start_is_the_first_blank_line_either_way(pieces: list[bytes]):
    raw = b"".join(pieces)
    assert limits.body_start(raw) == old_body_start(raw)


@given(st.from_regex(loops._PLAIN_ADDR, fullmatch=True))
def test_a_plain_address_is_what_parseaddr_gives(address: str):
    assert parseaddr(address) == ("", address)


@given(st.text(alphabet=st.sampled_from("aZ :-\t\u00a0\u202féÉ\u0301ßİﬁ")))
def test_subjects_normalise_as_before(subject: str):
    assert loops._normalise_subject(subject) == old_normalise_subject(subject)
    ascii_only = subject.encode("ascii", "ignore").decode()
    assert loops._normalise_subject(ascii_only) == old_normalise_subject(ascii_only)


def test_role_addresses_plain_or_not():
    for address in ("postmaster@x.org", "no-reply+x@x.org", "list-request@x.org",
                    '"noreply"@x.org', "Robot <mailer-daemon@x.org>"):  # fmt: skip
        assert loops._is_role_address(address), address
    for address in ("jean@x.org", "Jean <jean@x.org>", "x.org"):
        assert not loops._is_role_address(address), address


def test_header_view_keeps_order_and_case_folding():
    view = loops._HeaderView([(" Received", "a"), ("X-Y", "1"), ("received", "b")])
    assert view.all("received") == ["a", "b"]
    assert view.all("missing") == []
    assert view.first("x-y") == "1"
    assert view.has("x-y") and not view.has("X-Y")
    assert set(view.names) == {"received", "x-y"}


def old_clean_lines(text: str) -> list[str]:
    if not text.isascii():
        text = quotes._INVISIBLE.sub("", unicodedata.normalize("NFC", text))
    return [" ".join(line.split()) for line in text.split("\n")]


SPACES = " \t\x0b\x0c\x1c\x85\u00a0\u1680\u2000\u2007\u2028\u202f\u205f\u3000"


@settings(max_examples=500)
@given(st.text(alphabet=st.sampled_from(SPACES + "\nab>-:é\u0301\u200b\ufeff\x00\x7f")))
def test_clean_lines_as_before(text: str):
    assert quotes._clean_lines(text) == old_clean_lines(text)
