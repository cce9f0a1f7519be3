"""Shortcuts taken for CPU in the SMTP front and its parse workers give what the general
code gives: each is compared with the code it stands in for, on generated input."""

from __future__ import annotations

import email
import pickle
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from email.message import Message
from email.utils import parseaddr
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.core import limits, loops, mail, quotes
from mailgate.core.mail import Attachment, InboundMail


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


def a_mail(date: datetime | None) -> InboundMail:
    return InboundMail(
        message_id="a@b", message_id_synthesized=False, subject="s", from_addr="a@b.c",
        from_name="A", reply_to=(), to=("x@y.z",), cc=(), in_reply_to=(), references=("r@s",),
        date=date, headers=(("From", "A <a@b.c>"),), text="é\r\n", html=None,
        attachments=(Attachment("f", "text/plain", b"x", False, "base64"),), locale="fr",
        defects=("D",), sender_ambiguous=True, detected_locale="en",
    )  # fmt: skip


DATES = [
    None,
    datetime(2024, 2, 29, 23, 59, 58, 7, tzinfo=UTC),
    datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    datetime(2024, 1, 1, tzinfo=timezone(timedelta(seconds=1, microseconds=5))),
    datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=1), "CET")),  # named: kept whole
    datetime(2024, 1, 1, fold=1, tzinfo=UTC),
    datetime(2024, 1, 1),
]


def test_mail_pickles_to_the_same_values():
    for date in DATES:
        mail = a_mail(date)
        back = pickle.loads(pickle.dumps(mail, pickle.HIGHEST_PROTOCOL))  # noqa: S301
        assert back == mail and repr(back) == repr(mail)
        assert vars(back) == vars(mail) and list(vars(back)) == list(vars(mail))
        if date is not None:
            assert back.date.tzinfo == date.tzinfo and back.date.fold == date.fold
            assert back.date.tzname() == date.tzname()
        assert back.date is None or back.date.tzinfo is not UTC or date.tzinfo is UTC
        assert pickle.loads(pickle.dumps(mail, 2)) == mail  # noqa: S301


def same_message(ours: Message, theirs: Message) -> None:
    """Two Message objects alike in everything the parser sets."""
    assert type(ours) is type(theirs)
    mine, other = dict(vars(ours)), dict(vars(theirs))
    assert [type(d) for d in mine.pop("defects")] == [type(d) for d in other.pop("defects")]
    payload, expected = mine.pop("_payload"), other.pop("_payload")
    assert mine == other
    if isinstance(expected, list):
        assert isinstance(payload, list) and len(payload) == len(expected)
        for a, b in zip(payload, expected, strict=True):
            same_message(a, b)
    else:
        assert payload == expected


HEADS = st.lists(
    st.sampled_from([
        b"Subject: hi", b"From: a@b.c", b"Content-Type: text/plain; charset=utf-8",
        b"Content-Type: multipart/mixed; boundary=x", b"Content-Type: message/rfc822",
        b"Content-Type: text/html", b" folded", b"\tfolded", b"not a header", b"From x",
        b"X-8bit: \xe9\x85", b":", b"",
    ]),
    max_size=6,
)  # fmt: skip
ENDS = st.sampled_from([b"\r\n", b"\n", b"\r"])
BODY = st.lists(
    st.sampled_from([b"\r\n", b"\n", b"\r", b"a", b" ", b"\x0b", b"\x0c", b"\x1c", b"\x85",
                     b"\xe9", b"--x", b"--x--", b"From y"]),
    max_size=40,
)  # fmt: skip


def both_parses(data: bytes) -> None:
    """Ours and the stdlib's give alike messages, or raise the same error."""
    try:
        expected = email.message_from_bytes(data)
    except Exception as exc:
        with pytest.raises(type(exc)) as raised:
            mail.message_from_bytes(data)
        assert str(raised.value) == str(exc)
        return
    same_message(mail.message_from_bytes(data), expected)


@settings(max_examples=800)
@given(HEADS, st.lists(ENDS, min_size=8, max_size=8), BODY)
def test_message_from_bytes_is_the_stdlib_parse(heads: list[bytes], ends: list[bytes],
                                                body: list[bytes]):  # fmt: skip
    data = b"".join(h + e for h, e in zip(heads, ends, strict=False)) + ends[-1] + b"".join(body)
    both_parses(data)


def test_message_from_bytes_on_every_sample_mail():
    data_dir = Path(__file__).resolve().parent.parent / "data"
    samples = sorted(data_dir.rglob("*.eml"))
    assert samples
    for path in samples:
        raw = path.read_bytes()
        both_parses(raw)


@given(st.text(alphabet=st.sampled_from("\r\na é€")))
def test_unix_lines_is_replace(text: str):
    assert mail._unix_lines(text) == text.replace("\r\n", "\n")


@pytest.mark.parametrize("shift", range(-3, 4))
def test_message_from_bytes_across_the_parsers_8192_character_chunks(shift: int):
    head = b"Subject: long\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    filler = b"x" * (8192 - len(head) + shift)
    for middle in (b"\r\n", b"\r", b"\n", b"\r\r\n", b"\xe9\r\n"):
        raw = head + filler + middle + b"y\r\n" * 5000 + b"\rend"
        both_parses(raw)
        both_parses(raw.replace(b"\r\n", b"\n"))
