"""An outgoing mail -> the bytes we send, carrying every header CONTRACT.md promises.

`compose_bytes` is the fast path the sender uses for every mail: it writes the bytes the
stdlib's BytesGenerator writes for `email.mime`-style parts under a compat32 policy, without
building a Message: each header is folded by that policy (`_POLICY.fold_binary`), non-ASCII
names and subjects are RFC 2047 encoded words (`email.header.Header`'s lines, made quicker),
bodies quoted-printable exactly as `email.quoprimime.body_encode` writes them. A test compares
its bytes with the generator's, whatever the text. `compose` builds the same mail as an
`EmailMessage` (policy SMTP, headerregistry): it is the reference the tests compare with, and
the path for attachments and the rare address that is not ASCII.

Either way a display name or subject taken from a customer can never add a header or a
recipient: `one_line` turns control characters into spaces, every value set is refused if it
still holds CR or LF, and an address must be one addr-spec (its local part quoted if needed).
The multipart boundary comes from the Message-ID, so assembling a row twice (a retry) gives
the same bytes; it starts with "=_", which quoted-printable text can never contain.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from email import base64mime, charset, policy
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from functools import lru_cache
from typing import Any

LOOP_HEADER = "X-Mailgate-Loop"
AUTOMATIC_KINDS = frozenset(
    {
        "confirmation",
        "activation",
        "password_reset",
        "agent_notification",
        "auto_resolved",
        "command_error",
        "follow_up",
        "limit_reached",
    }
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_FREE_TEXT = ("subject", "text", "html", "from_name", "to_name")


@dataclass(frozen=True)
class OutAttachment:
    filename: str  # as a sender named it: only ever a parameter of Content-Disposition
    content_type: str
    payload: bytes


_MIME_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")


@dataclass(frozen=True)
class Outgoing:
    kind: str
    to_addr: str
    subject: str
    text: str
    from_addr: str
    from_name: str
    message_id: str  # without <>
    date: datetime
    hostname: str
    to_name: str = ""
    html: str | None = None
    ticket_id: int | None = None
    reply_to: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    auto_submitted: str | None = "auto-generated"  # None for a human's reply
    locale: str = "fr"
    attachments: tuple[OutAttachment, ...] = ()

    def __post_init__(self) -> None:
        # Text echoed from a broken mail (undecodable bytes kept as lone surrogates) cannot
        # be encoded as UTF-8: each such character becomes U+FFFD, as a mail reader shows it.
        for name in _FREE_TEXT:
            value = getattr(self, name)
            if value and not value.isascii():
                try:  # UTF-8 encodes every character but a surrogate: quicker than a search
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    object.__setattr__(self, name, _SURROGATE.sub("\ufffd", value))


def one_line(value: str, limit: int = 200) -> str:
    """A value fit for a header: control characters (CR, LF ...) become spaces."""
    return " ".join(_CONTROL.sub(" ", value).split())[:limit]


def address(addr_spec: str, display_name: str = "") -> Address:
    local, sep, domain = addr_spec.partition("@")
    if not sep or not local or not domain or _CONTROL.search(addr_spec):
        raise ValueError(f"not an address: {addr_spec!r}")
    return Address(display_name=one_line(display_name, 100), username=local, domain=domain)


def boundary_for(message_id: str) -> str:
    """The multipart boundary of a mail: fixed by its Message-ID, never inside QP text."""
    return "=_mg_" + hashlib.sha256(message_id.encode("utf-8", "replace")).hexdigest()[:24]


def _headers(out: Outgoing) -> list[tuple[str, Any]]:
    """Every header but the Content-* ones, in order; addresses and names still raw."""
    headers: list[tuple[str, Any]] = [
        ("Date", format_datetime(out.date)),
        ("Message-ID", f"<{out.message_id}>"),
    ]
    headers += _thread(out)
    headers.append(("X-Mailgate-Kind", out.kind))
    if out.ticket_id is not None:
        headers.append(("X-Mailgate-Ticket", str(out.ticket_id)))
    headers.append((LOOP_HEADER, out.hostname))
    if out.auto_submitted:
        headers.append(("Auto-Submitted", out.auto_submitted))
        # Ask Exchange and friends not to answer our automatic mail with theirs.
        headers.append(("X-Auto-Response-Suppress", "All"))
    return headers


def _thread(out: Outgoing) -> list[tuple[str, str]]:
    """In-Reply-To and References, when the mail answers one."""
    headers = []
    in_reply_to, refs = out.in_reply_to, list(out.references)
    if in_reply_to:
        headers.append(("In-Reply-To", f"<{in_reply_to}>"))
    if len(refs) > 1 or (refs and not refs[0]):  # duplicates or empties to drop
        refs = list(dict.fromkeys(r for r in refs if r))
    if in_reply_to and in_reply_to not in refs:
        refs.append(in_reply_to)
    if len(refs) == 1:  # a first answer: the mail answered, nothing to join
        headers.append(("References", f"<{refs[0]}>"))
    elif refs:
        headers.append(("References", " ".join(f"<{r}>" for r in refs[-20:])))
    return headers


def compose(out: Outgoing) -> EmailMessage:
    """The reference build (headerregistry, policy SMTP): slow, exact, strict."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = address(out.from_addr, out.from_name)
    msg["To"] = address(out.to_addr, out.to_name)
    msg["Subject"] = one_line(out.subject, 250)
    rest = _headers(out)
    msg["Date"], msg["Message-ID"] = rest[0][1], rest[1][1]
    if out.reply_to:
        msg["Reply-To"] = address(out.reply_to, out.from_name)
    for name, value in rest[2:]:
        msg[name] = value
    msg["MIME-Version"] = "1.0"
    msg.set_content(out.text, charset="utf-8", cte="quoted-printable")
    if out.html:
        msg.add_alternative(out.html, subtype="html", charset="utf-8", cte="quoted-printable")
        msg.set_boundary(boundary_for(out.message_id))
    for attachment in out.attachments:
        content_type = attachment.content_type.lower()
        if not _MIME_TYPE.fullmatch(content_type):
            content_type = "application/octet-stream"
        maintype, subtype = content_type.split("/")
        msg.add_attachment(
            attachment.payload,
            maintype=maintype,
            subtype=subtype,
            filename=one_line(attachment.filename, 200) or "attachment",
        )
    if out.attachments:  # multipart/mixed now: its boundary fixed too, for a retry's bytes
        msg.set_boundary(boundary_for(out.message_id + "/mixed"))
    # After set_content, which drops Content-* headers set before it.
    msg["Content-Language"] = out.locale
    return msg


# -- the fast path ---------------------------------------------------------------------------


class _Policy(policy.Compat32):
    """compat32, strict and quick: a value holding CR or LF is refused when set (as policy
    SMTP does), and one that needs no folding (ASCII, fits a line) is written as it is instead
    of going through compat32's Header folding, which every other value still gets."""

    def header_store_parse(self, name: str, value: Any) -> tuple[str, Any]:
        # A Header is only made by _text/_mailbox, of one_line() text and a checked address.
        if isinstance(value, str) and ("\r" in value or "\n" in value):
            raise ValueError(f"{name}: a header value may not hold CR or LF")
        return name, value

    def fold_binary(self, name: str, value: Any) -> bytes:
        if (
            type(value) is str
            and value.isascii()
            and len(name) + 2 + len(value) <= self.max_line_length
        ):
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)  # type: ignore[no-any-return]


class _Utf8(charset.Charset):
    """UTF-8 with base64 encoded words, split into lines in linear time.

    `Charset.header_encode_lines` re-encodes the whole line so far after each character, to
    learn its length: quadratic, and most of a long non-ASCII subject's cost. UTF-8 has no
    state between characters and a base64 word's length follows from its byte count, so the
    same lines come from the UTF-8 bytes: a line takes as many bytes as its base64 room holds,
    cut back to the start of a character (a test checks it says what the stdlib says)."""

    def header_encode_lines(self, string: str, maxlengths: Iterator[int]) -> list[str | None]:
        if self.header_encoding != charset.BASE64 or self.output_codec != "utf-8":
            return super().header_encode_lines(string, maxlengths)  # type: ignore[no-any-return]
        data = string.encode("utf-8")  # raises as the stdlib's does (a lone surrogate)
        extra = len("utf-8") + charset.RFC2047_CHROME_LEN
        room = 3 * ((next(maxlengths) - extra) // 4)  # bytes whose base64 fits on this line
        start, stop = 0, _cut(data, 0, room)
        lines: list[str | None] = []
        if start == stop < len(data):  # the first character does not fit beside the name
            lines.append(None)
            stop = _cut(data, 0, 3 * ((next(maxlengths) - extra) // 4), at_least_one=True)
        while stop < len(data):
            lines.append(base64mime.header_encode(data[start:stop], "utf-8"))
            room = 3 * ((next(maxlengths) - extra) // 4)
            start, stop = stop, _cut(data, stop, room, at_least_one=True)
        lines.append(base64mime.header_encode(data[start:], "utf-8"))
        return lines


def _cut(data: bytes, start: int, room: int, at_least_one: bool = False) -> int:
    """Where a line of UTF-8 `data` from `start` ends: the most whole characters that fit in
    `room` bytes, and at least one character if `at_least_one` (the stdlib's lines after the
    first start with a character whatever its width)."""
    stop = start + room
    if stop >= len(data):
        return len(data)
    while stop > start and 0x80 <= data[stop] < 0xC0:  # inside a character: cut before it
        stop -= 1
    if stop <= start:
        if not at_least_one:
            return start
        stop = start + 1
        while stop < len(data) and 0x80 <= data[stop] < 0xC0:
            stop += 1
    return stop


_POLICY = _Policy(linesep="\r\n")
_UTF8 = _Utf8("utf-8")  # our own instance: the global registry is left alone
_UTF8.header_encoding = charset.BASE64  # encoded words; quicker to split than Q, as correct
_UTF8.body_encoding = charset.QP


def _encoded_word(value: str) -> str | None:
    """`value` as one RFC 2047 encoded word if that is short enough to be one (75), else None:
    splitting into several words (Header) is quadratic in the length, and most names fit."""
    word = _UTF8.header_encode(value)
    return word if len(word) <= 75 else None


class _EncodedText:
    """A non-ASCII header value in RFC 2047 encoded words, one per line: what
    `Header(value, _UTF8, header_name=name).encode(...)` writes, made without Header's general
    machinery (chunks, transitions, an accumulator per line), which was most of a long
    subject's cost. compat32 folds any object with Header's `encode`; a test compares both."""

    def __init__(self, value: str, name: str) -> None:
        self.value = value
        self.name = name

    def encode(
        self, splitchars: str = ";, \t", maxlinelen: int | None = None, linesep: str = "\n"
    ) -> str:
        limit = 1000000 if maxlinelen == 0 else maxlinelen or 78  # as Header.encode
        lines = (
            _UTF8.header_encode_lines(self.value, _line_lengths(limit, len(self.name) + 2))
            if self.value.splitlines() == [self.value]
            else [None]
        )
        if lines[0] is None:  # a line break, or nothing fits beside the name: Header itself
            header = Header(self.value, _UTF8, header_name=self.name)
            return header.encode(splitchars, maxlinelen, linesep)  # type: ignore[no-any-return]
        return (linesep + " ").join(lines)  # type: ignore[arg-type]


def _line_lengths(limit: int, first: int) -> Iterator[int]:
    """The room on each line, as Header's formatter gives it to `header_encode_lines`."""
    yield limit - first
    while True:
        yield limit - 1  # the continuation's space


def _text(value: str, name: str) -> str | _EncodedText:
    """A free-text header value: as is when ASCII, else RFC 2047 encoded words."""
    if value.isascii():
        return value
    return _encoded_word(value) or _EncodedText(value, name)


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# local@domain with nothing to quote: what nearly every mail is sent to, written as it is.
_PLAIN_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def _addr_spec(addr_spec: str) -> str:
    """`address(addr_spec).addr_spec`: one addr-spec, its local part quoted if needed; a
    plain one is what Address would write, without making one (a test compares both)."""
    if _PLAIN_ADDRESS.fullmatch(addr_spec):
        return addr_spec
    return address(addr_spec).addr_spec


def _mailbox(addr_spec: str, display_name: str, name: str) -> str | Header:
    spec = _addr_spec(addr_spec)
    shown = _shown_name(display_name)
    if shown is None:  # a name too long for one encoded word: Header splits it
        mailbox = Header(one_line(display_name, 100), _UTF8, header_name=name)
        mailbox.append(f"<{spec}>", "us-ascii")
        return mailbox
    return f"{shown} <{spec}>" if shown else spec


@lru_cache(maxsize=256)
def _shown_name(display_name: str) -> str | None:
    """The display name as a mailbox writes it before " <addr-spec>": quoted when it needs it
    (what formataddr writes), one RFC 2047 encoded word if not ASCII, "" for none, None when
    it needs several words. Kept: the same few names (the company's) on every mail's From
    and Reply-To, whose address differs per ticket."""
    shown = one_line(display_name, 100)
    if not shown:
        return ""
    if shown.isascii():
        return formataddr((shown, "a@b"))[: -len(" <a@b>")]  # quotes the name when it needs it
    return _encoded_word(shown)  # what formataddr(..., charset) writes, or None


def _field(name: str, value: str | Header | _EncodedText) -> bytes:
    """One header line as the generator writes it: refused if a str holds CR or LF (what
    `_Policy.header_store_parse` does when a Message is given it), folded by the policy."""
    if type(value) is str:
        if "\r" in value or "\n" in value:
            raise ValueError(f"{name}: a header value may not hold CR or LF")
        if value.isascii() and len(name) + 2 + len(value) <= _MAX_LINE:
            return f"{name}: {value}\r\n".encode("ascii")  # what _Policy.fold_binary writes
    return _POLICY.fold_binary(name, value)  # type: ignore[no-any-return]


@lru_cache(maxsize=256)
def _sender_field(name: str, addr_spec: str, display_name: str) -> bytes:
    """From and Reply-To: the same few for every mail (the support address, a ticket's)."""
    return _field(name, _mailbox(addr_spec, display_name, name))


_MAX_LINE: int = _POLICY.max_line_length  # 78

# What email.quoprimime writes as is in a body (its _QUOPRI_BODY_ENCODE_MAP): printable ASCII
# but "=", space, tab, CR and LF. Every other byte of the UTF-8 is written "=XX".
_QP_SAFE = bytes(b for b in range(256) if 0x20 <= b <= 0x7E and b != 0x3D) + b"\t\n\r"
_QP_MARK = bytes(b if b in _QP_SAFE else 0x3D for b in range(256))  # unsafe bytes -> "="
_QP_ESCAPE = [b"=%02X" % b for b in range(256)]


def _qp_body(body: str) -> bytes:
    """`body` in quoted-printable UTF-8, lines ending CRLF: the text email.charset's
    `body_encode` gives for it (email.quoprimime.body_encode: escape, then soft line breaks at
    76), with the line ends the generator writes. The escaping is done with bytes.translate
    and split instead of str.translate through a list, most of the stdlib's cost: marking
    each byte to escape with "=" leaves the bytes between them; deleting the safe ones leaves
    the bytes to escape, in order."""
    data = body.encode("utf-8")
    marked = data.translate(_QP_MARK)
    if b"=" in marked:  # something to escape
        between = marked.split(b"=")
        pieces = [b""] * (2 * len(between) - 1)
        pieces[0::2] = between
        pieces[1::2] = map(_QP_ESCAPE.__getitem__, data.translate(None, _QP_SAFE))
        data = b"".join(pieces)
    if not data:
        return data
    lines: list[bytes] = []
    for line in data.splitlines():  # only CR and LF are left to split on: the rest is escaped
        if len(line) <= 76 and line[-1:] not in (b" ", b"\t"):
            lines.append(line)
        else:
            _qp_wrap(line, lines)
    if data[-1:] in (b"\r", b"\n"):
        lines.append(b"")
    return b"\r\n".join(lines)


def _qp_wrap(line: bytes, lines: list[bytes]) -> None:
    """One escaped line too long for 76 columns, or ending in white space: the soft line
    breaks and the last character's quoting email.quoprimime.body_encode writes for it."""
    start = 0
    laststart = len(line) - 1 - 76
    while start <= laststart:
        stop = start + 75
        if line[stop - 2] == 0x3D:  # "=": never break an escape, it goes to the next line
            lines.append(line[start : stop - 1])
            start = stop - 2
        elif line[stop - 1] == 0x3D:
            lines.append(line[start:stop])
            start = stop - 1
        else:
            lines.append(line[start:stop] + b"=")
            start = stop
    if line and line[-1] in b" \t":
        room = start - laststart
        if room >= 3:  # room for the escape
            end = _QP_ESCAPE[line[-1]]
        elif room == 2:  # room for the white space and a soft break
            end = line[-1:] + b"=\r\n"
        else:  # room for a soft break only: the escape alone on the next line
            end = b"=\r\n" + _QP_ESCAPE[line[-1]]
        lines.append(line[start:-1] + end)
    else:
        lines.append(line[start:])


def _text_body(body: str) -> bytes:
    """A text part's body: quoted-printable UTF-8 of text ending at the end of a line (as
    EmailMessage.set_content makes it)."""
    if not body.endswith(("\n", "\r")):
        body += "\n"
    return _qp_body(body)


_TEXT_PART_FIELDS = {
    subtype: f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
    "Content-Transfer-Encoding: quoted-printable\r\n".encode("ascii")
    for subtype in ("plain", "html")
}


def compose_bytes(out: Outgoing) -> bytes:
    """The wire bytes of a mail: the same headers and parts as `compose`, written directly as
    the stdlib's BytesGenerator writes a compat32 Message of them (tests compare the bytes)."""
    if out.attachments or not (
        out.to_addr.isascii() and out.from_addr.isascii() and (out.reply_to or "").isascii()
    ):
        # Attachments, or addresses compat32 cannot write: the reference path.
        return compose(out).as_bytes()
    # In _headers' order (a test compares the bytes with the generator's of _headers).
    head = [
        _sender_field("From", out.from_addr, out.from_name),
        _field("To", _mailbox(out.to_addr, out.to_name, "To")),
        _field("Subject", _text(one_line(out.subject, 250), "Subject")),
        _date_field(out.date.replace(microsecond=0), out.date.utcoffset()),
        _field("Message-ID", f"<{out.message_id}>"),
    ]
    if out.reply_to:
        head.append(_sender_field("Reply-To", out.reply_to, out.from_name))
    if out.in_reply_to or out.references:
        head += [_field(name, value) for name, value in _thread(out)]
    head.append(_fixed_field("X-Mailgate-Kind", out.kind))
    if out.ticket_id is not None:
        head.append(_field("X-Mailgate-Ticket", str(out.ticket_id)))
    head.append(_closing_fields(out.hostname, out.auto_submitted))
    if out.html:
        boundary = boundary_for(out.message_id)
        head.append(_field("Content-Type", f'multipart/alternative; boundary="{boundary}"'))
        head.append(_fixed_field("Content-Language", out.locale))
        delimiter = f"\r\n--{boundary}\r\n".encode("ascii")  # the first ends the header
        head += (
            delimiter,
            _TEXT_PART_FIELDS["plain"],
            b"\r\n",
            _text_body(out.text),
            delimiter,
            _TEXT_PART_FIELDS["html"],
            b"\r\n",
            _text_body(out.html),
            delimiter[:-2] + b"--\r\n",
        )
    else:  # the part's fields are the mail's
        head.append(_TEXT_PART_FIELDS["plain"])
        head.append(_fixed_field("Content-Language", out.locale))
        head += (b"\r\n", _text_body(out.text))
    return b"".join(head)


# Header lines that are the same for many mails (a kind, the host name, the language), made
# once. Every cached value is a pure function of its key.
_fixed_field = lru_cache(maxsize=256)(_field)


@lru_cache(maxsize=256)
def _date_field(date: datetime, utcoffset: object) -> bytes:
    """The Date line, to the second: mails queued in the same second share it. The offset is
    in the key because equal datetimes of other offsets are written differently."""
    return _field("Date", format_datetime(date))


@lru_cache(maxsize=64)
def _closing_fields(hostname: str, auto_submitted: str | None) -> bytes:
    """The loop header, Auto-Submitted and X-Auto-Response-Suppress, and MIME-Version."""
    lines = [_field(LOOP_HEADER, hostname)]
    if auto_submitted:
        lines += _field("Auto-Submitted", auto_submitted), _field("X-Auto-Response-Suppress", "All")
    return b"".join(lines) + b"MIME-Version: 1.0\r\n"
