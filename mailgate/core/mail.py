"""Raw bytes -> InboundMail: the parsed, decoded view of one inbound message.

The stdlib's `email` parser reads the structure (and its defects); bodies, attachments (bytes
from `get_payload(decode=True)`, byte for byte) and header values are read from its parts
here. mail-parser did the parse until it was found to cost half the parse's CPU for nothing
we read: it decodes every body and attachment and parses every address and date header again,
for defect categories of its own that no code reads; a NUL in a charset name made it raise,
so such a mail was quarantined as unparseable.
"""

from __future__ import annotations

import email
import hashlib
import html as html_lib
import re
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.errors import InvalidHeaderDefect, MessageError
from email.header import Header, decode_header, make_header
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from operator import attrgetter
from typing import Any

import nh3

from mailgate.core import limits

# Structural defects that mean we cannot tell body from attachments: quarantine.
FATAL_DEFECTS = frozenset(
    {"NoBoundaryInMultipartDefect", "StartBoundaryNotFoundDefect", "CloseBoundaryNotFoundDefect"}
)
MAX_DEPTH = limits.MAX_DEPTH  # MIME nesting we read; deeper parts are kept in the raw only
MAX_PARTS = limits.MAX_PARTS
_HEADER_LINE = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:")
_MSGID = re.compile(r"<([^<>\s]+)>")
_CRLF = re.compile("\r\n")
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
_BAD_ADDR = re.compile(r"[\x00-\x20\x7f<>]")
# A From value both the strict and the lenient parser can read one way only: plain words (or
# nothing) then one dot-atom address in angle brackets, or the address alone. No "=" or "?"
# (no encoded word), no "." or quotes in the name: nothing for either parser to interpret.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/^_`{|}~-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_PLAIN_FROM = re.compile(
    rf"(?:(?P<name>[A-Za-z0-9_'-]+(?: [A-Za-z0-9_'-]+)*) ?)?<(?P<addr>{_DOT_ATOM}@{_DOT_ATOM})>"
    rf"|(?P<bare>{_DOT_ATOM}@{_DOT_ATOM})"
)


class MailParseError(Exception):
    """The bytes are not a usable mail: no header block, no sender, broken structure."""


@dataclass(frozen=True)
class BlobRef:
    """An attachment's bytes already in the blob store (the parse worker wrote them): what a
    consumer needs of them, the digest and the size, without the bytes. `BlobStore.put` takes
    one as it takes bytes (it returns the digest) and `len()` gives the size, so code written
    for bytes stores and sizes it unchanged; reading the bytes means `BlobStore.get`."""

    sha256: str
    size: int

    def __len__(self) -> int:
        return self.size


@dataclass(frozen=True)
class Attachment:
    filename: str  # for display only: never a path
    content_type: str
    payload: bytes | BlobRef  # a BlobRef only from a parse worker that stores big payloads
    inline: bool
    # Content-Transfer-Encoding as the stdlib read it to decode the payload (core/hollow.py
    # decodes big bodies outside the parser the same way).
    transfer_encoding: str = ""


@dataclass(frozen=True)
class InboundMail:
    message_id: str
    message_id_synthesized: bool
    subject: str
    from_addr: str
    from_name: str
    reply_to: tuple[str, ...]
    to: tuple[str, ...]
    cc: tuple[str, ...]
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    date: datetime | None
    headers: tuple[tuple[str, str], ...]
    text: str
    html: str | None
    attachments: tuple[Attachment, ...]
    locale: str | None
    defects: tuple[str, ...]
    # From could name more than one person (several addresses, several From fields, an
    # address-like display name outside quotes): the mail then counts as from a stranger.
    sender_ambiguous: bool = False
    # The language of the text the writer wrote (core/language.py, in the parse worker), among
    # the configured locales; None when it cannot be told (too short, mixed, not detected).
    detected_locale: str | None = None

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)

    def __reduce__(self) -> tuple[Any, tuple[tuple[Any, ...]]]:
        """Pickled as its values, the date as numbers: a parse worker's reply and an SMTP
        front's frame to serve carry one, and the default form (a datetime, its timezone and
        that one's timedelta, each a class for pickle to look up) cost 6.8 us, this 2."""
        values = _mail_values(self)
        date = values[_DATE]
        if date is not None:
            values = (*values[:_DATE], _pack_date(date), *values[_DATE + 1 :])
        return _rebuild_mail, (values,)


_MAIL_FIELDS = tuple(f.name for f in fields(InboundMail))
_mail_values = attrgetter(*_MAIL_FIELDS)
_DATE = _MAIL_FIELDS.index("date")


def _pack_date(date: datetime) -> datetime | tuple[int, ...]:
    """A datetime with a plain fixed offset (what _date gives) as numbers; any other as it is."""
    tz = date.tzinfo
    if type(date) is not datetime or type(tz) is not timezone or date.fold:
        return date
    offset = tz.utcoffset(None)
    if tz is not UTC and tz.tzname(None) != timezone(offset).tzname(None):
        return date  # a named zone: its name would be lost
    return (date.year, date.month, date.day, date.hour, date.minute, date.second,
            date.microsecond, offset.days, offset.seconds, offset.microseconds)  # fmt: skip


def _rebuild_mail(values: tuple[Any, ...]) -> InboundMail:
    date = values[_DATE]
    if type(date) is tuple:
        tz = timezone(timedelta(*date[7:])) if any(date[7:]) else UTC
        values = (*values[:_DATE], datetime(*date[:7], tzinfo=tz), *values[_DATE + 1 :])
    mail = object.__new__(InboundMail)
    mail.__dict__.update(zip(_MAIL_FIELDS, values, strict=True))
    return mail


def synthesize_message_id(raw: bytes) -> str:
    """A stable id for a mail that has none: the same bytes always get the same id."""
    return f"{hashlib.sha256(raw).hexdigest()[:32]}@mailgate.invalid"


def decode_value(value: object) -> str:
    """Decode RFC 2047 words; undecodable bytes become U+FFFD instead of raising."""
    if isinstance(value, Header):  # compat32 wraps raw 8-bit (UTF-8) header values
        value = "".join(
            b.decode("utf-8", "replace") if isinstance(b, bytes) else b
            for b, _ in decode_header(value)
        )
    text = str(value)
    if "=?" in text:  # without it, decode_header finds no word and gives the text back
        try:
            text = str(make_header(decode_header(text)))
        except (ValueError, LookupError, UnicodeError, AssertionError, MessageError):
            pass  # e.g. CharsetError: an encoded word naming a charset that does not exist
    if not text.isascii():  # 8-bit bytes the parser kept as surrogates
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return " ".join(text.split()) if "\n" in text or "\r" in text else text


def _addresses(values: list[str]) -> list[tuple[str, str]]:
    # Split on the undecoded header, then decode only the names: an encoded word holding
    # "support@ours" must never become the address.
    plain = [_plain_address(v) for v in values]
    if all(pair is not None for pair in plain):  # most mail: the parse below reads the same
        return plain  # type: ignore[return-value]
    raw = [decode_value(v) if isinstance(v, Header) else str(v) for v in values]
    pairs = []
    for name, addr in getaddresses(raw):
        addr = addr.strip().lower()
        local, at, domain = addr.rpartition("@")
        # One addr-spec we can write back: no controls, spaces, brackets or second "@".
        if at and local and domain and not _BAD_ADDR.search(addr) and "@" not in local:
            pairs.append((decode_value(name).strip(), addr))
    return pairs


def strict_sender(values: list[object]) -> tuple[str, str] | None:
    """(name, address) of the one person in From, read as RFC 5322 says; None if ambiguous.

    The address is the one in angle brackets: a display name that looks like an address
    (`"boss@ours" <x@evil>`) is only a name, and is dropped so nobody is shown it as one.
    Several addresses, several From fields, or a value the strict parser had to guess at
    (`boss@ours <x@evil>`, which lenient parsers read as two addresses) give None."""
    if len(values) != 1:
        return None
    return _plain_sender(values) or _parsed_sender(values[0])


def _parsed_sender(value: object) -> tuple[str, str] | None:
    """strict_sender of one From value, by the strict parser."""
    if isinstance(value, Header):  # raw 8-bit: keep the bytes' text, names decode later
        value = "".join(
            b.decode("utf-8", "replace") if isinstance(b, bytes) else b
            for b, _ in decode_header(value)
        )
    # The structure is read with encoded words blanked out: they may only hold names, and a
    # name that decodes to CR/LF or an address must not make the strict parser guess.
    plain = _ENCODED_WORD.sub("encoded", " ".join(str(value).split()))
    try:
        header = policy.default.header_factory("From", plain)
        addresses = header.addresses  # type: ignore[attr-defined]
    except Exception:  # the strict parser refuses it outright: nobody we can name
        return None
    if len(addresses) != 1 or any(isinstance(d, InvalidHeaderDefect) for d in header.defects):
        return None
    addr = str(addresses[0].addr_spec).strip().lower()
    local, at, domain = addr.rpartition("@")
    if not (at and local and domain) or _BAD_ADDR.search(addr) or "@" in local:
        return None
    return _sender_name(value, addr), addr


def _plain_sender(values: list[object]) -> tuple[str, str] | None:
    """(name, address) of a From field in the plain form most mail has (`Jean Dupont
    <jean@example.com>`), without the strict parser (a tenth of a millisecond); None for any
    other form. The strict and the lenient parser read such a value the same way."""
    return _plain_address(values[0]) if len(values) == 1 else None


def _plain_address(value: object) -> tuple[str, str] | None:
    """(name, address) of one address field value in the plain form, else None."""
    if not isinstance(value, str):
        return None
    found = _PLAIN_FROM.fullmatch(" ".join(value.split()))
    if found is None:
        return None
    return found["name"] or "", (found["addr"] or found["bare"]).lower()


def _sender_name(value: object, addr: str) -> str:
    """The display name alone (decoded, undecodable bytes as U+FFFD); "" if it looks like an
    address, so nobody is shown it as one."""
    lenient = _addresses([value])
    name = lenient[0][0] if len(lenient) == 1 and lenient[0][1] == addr else ""
    if _ENCODED_WORD.search(name):  # bad bytes inside: let the registry decode with U+FFFD
        try:
            found = policy.default.header_factory("From", str(value)).addresses  # type: ignore[attr-defined]
            name = str(found[0].display_name) if len(found) == 1 else ""
        except Exception:
            name = ""
    name = " ".join(name.split())
    return "" if "@" in name else name


def message_ids(value: object) -> tuple[str, ...]:
    if not value:
        return ()
    text = value if isinstance(value, str) else decode_value(value)  # 8-bit: a Header
    return tuple(dict.fromkeys(_MSGID.findall(text)))


def html_to_text(markup: str) -> str:
    """Plain text of an HTML body, for mails that have no text/plain part."""
    markup = re.sub(r"(?i)<br\s*/?>|</p\s*>|</div\s*>|</li\s*>|</tr\s*>|</h\d\s*>", "\n", markup)
    text = html_lib.unescape(nh3.clean(markup, tags=set(), clean_content_tags={"style", "script"}))
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _locale(msg: Message) -> str | None:
    for header in ("Content-Language", "Accept-Language"):
        for part in msg.walk():
            value = part.get(header)
            if not value:
                continue
            for item in str(value).split(","):
                lang = item.split(";")[0].strip().lower()[:2]
                if lang in ("fr", "en"):
                    return lang
    return None


def _date(value: object) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(decode_value(value))  # 8-bit values come as a Header
    except (TypeError, ValueError, IndexError, OverflowError):  # e.g. a 14-digit year
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _filename(part: Message) -> str:
    if not any(
        "name" in str(value).lower()
        for field, value in part.raw_items()
        if field.lower() in ("content-type", "content-disposition")
    ):
        return ""  # no filename or name parameter (even RFC 2231 ones): none to parse for
    try:
        name = part.get_filename() or part.get_param("name") or ""
    except (ValueError, LookupError, UnicodeError):
        return ""
    if isinstance(name, tuple):  # RFC 2231 value that collapse did not handle
        name = name[2]
    return decode_value(name).replace("\x00", "").strip()


def _text_of(part: Message) -> str:
    payload = part.get_payload(decode=True) or b""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except (LookupError, ValueError):  # unknown charset, or a name with a NUL in it
        return payload.decode("utf-8", "replace")


def leaf_parts(msg: Message, max_depth: int = MAX_DEPTH, max_parts: int = MAX_PARTS):
    """The parts we read, depth first, without recursion: an attached message is one part (not
    walked into); structure deeper than max_depth stays only in the raw message."""
    stack: list[tuple[Message, int]] = [(msg, 0)]
    seen = 0
    while stack and seen < max_parts:
        node, depth = stack.pop()
        seen += 1
        if node.get_content_type() == limits.TRUNCATED_TYPE:
            continue  # structure below MAX_DEPTH: in the raw message only
        if node is not msg and node.get_content_type() == "message/rfc822":
            yield node
        elif node.is_multipart():
            if depth < max_depth:
                children = node.get_payload()
                if isinstance(children, list):
                    stack.extend(
                        (c, depth + 1) for c in reversed(children) if isinstance(c, Message)
                    )
        else:
            yield node


def _message_bytes(inner: Message) -> bytes:
    """An attached message as a file. The generator refuses some hostile headers (a value that
    looks like it holds another header): then a plain copy of its headers and text."""
    try:
        return inner.as_bytes()
    except Exception:
        head = "".join(f"{k}: {v}\n" for k, v in inner.raw_items())
        text = head + "\n" + ("" if inner.is_multipart() else str(inner.get_payload()))
        try:
            return text.encode("utf-8", "surrogateescape")  # 8-bit bytes as they came
        except UnicodeEncodeError:
            return text.encode("utf-8", "replace")


def _bodies_and_attachments(msg: Message) -> tuple[str, str | None, tuple[Attachment, ...]]:
    texts: list[str] = []
    htmls: list[str] = []
    attachments: list[Attachment] = []
    for part in leaf_parts(msg):
        ctype = part.get_content_type().lower()
        disposition = (part.get_content_disposition() or "").lower()
        filename = _filename(part)
        is_body = (
            ctype in ("text/plain", "text/html") and disposition != "attachment" and not filename
        )
        if is_body:
            (texts if ctype == "text/plain" else htmls).append(_text_of(part))
            continue
        if ctype == "message/rfc822" or part.get_content_maintype() == "multipart":
            inner = part.get_payload(0) if ctype == "message/rfc822" else None
            payload = _message_bytes(inner) if isinstance(inner, Message) else b""
            encoding = ""
        else:
            payload = part.get_payload(decode=True) or b""
            encoding = str(part.get("content-transfer-encoding", "")).lower()  # as decoded
        attachments.append(
            Attachment(
                filename=filename,
                content_type=ctype,
                payload=payload,
                inline=disposition == "inline"
                or (not disposition and bool(part.get("Content-ID"))),
                transfer_encoding=encoding,
            )
        )
    html = "\n".join(htmls) if htmls else None
    text = "\n\n".join(_unix_lines(t).strip("\n") for t in texts) if texts else ""
    if not text.strip() and html:
        text = html_to_text(html)
    return _unix_lines(text), html, tuple(attachments)


def _unix_lines(text: str) -> str:
    """text.replace("\r\n", "\n"): the regex does it in 2/3 of the time on mail text, and a
    text without a CR (the second call, mostly) is not searched for a two-character string."""
    return _CRLF.sub("\n", text) if "\r" in text else text


def message_from_bytes(data: bytes) -> Message:
    """email.message_from_bytes(data), the same Message, with the body of a single-part mail
    not read line by line (the feed parser's loop over a 5 KB body was a sixth of a parse):
    the header block alone goes through the parser, then the rest is the payload, as the
    parser makes it (the lines that follow the blank line, joined). Only when the parser
    ended that header block at our blank line (nothing after it, no defect) and the type is
    not one it parses the body of (multipart, message); else the whole mail is parsed."""
    cut = limits.body_start(data)
    if cut < len(data):
        head = email.message_from_bytes(data[:cut])
        if (
            not head.defects
            and head.get_payload() == ""
            and head.get_content_maintype() not in ("multipart", "message")
        ):
            head.set_payload(data[cut:].decode("ascii", "surrogateescape"))
            return head
    return email.message_from_bytes(data)


def parse_mail(raw: bytes) -> InboundMail:
    first_line = raw.lstrip(b"\r\n").split(b"\n", 1)[0]
    if not _HEADER_LINE.match(first_line) and not first_line.startswith(b"From "):
        raise MailParseError("no header block")
    try:
        view = limits.bounded_view(raw)  # before the parser: size, fields, parts, depth
    except limits.OverLimit as exc:
        raise MailParseError(f"over a limit: {exc}") from exc
    try:
        msg: Message = message_from_bytes(view)
        defects = sorted({type(d).__name__ for part in msg.walk() for d in part.defects})
    except Exception as exc:  # no known case: bounded_view keeps the nesting shallow
        raise MailParseError(f"unparseable: {type(exc).__name__}") from exc
    fatal = [d for d in defects if d in FATAL_DEFECTS]
    if fatal:
        raise MailParseError(f"broken MIME structure: {', '.join(fatal)}")
    if not msg.keys():
        raise MailParseError("no header fields")
    # Each field's values, as msg.get/get_all give them (they scan every field each time).
    items = msg.items()
    fields: dict[str, list[Any]] = {}
    for name, value in items:
        fields.setdefault(name.lower(), []).append(value)
    first = {name: values[0] for name, values in fields.items()}
    from_values = fields.get("from", [])
    strict = _plain_sender(from_values)  # most mail: no parser needed, and none can disagree
    if strict is None:
        senders = _addresses(from_values)
        if not senders:
            raise MailParseError("no From address")
        strict = strict_sender(from_values)
    from_name, from_addr = strict if strict is not None else ("", senders[0][1])
    raw_id = message_ids(first.get("message-id"))
    message_id = raw_id[0] if raw_id else ""
    text, html, attachments = _bodies_and_attachments(msg)
    headers = tuple((str(k), decode_value(v)) for k, v in items)
    return InboundMail(
        message_id=message_id or synthesize_message_id(raw),
        message_id_synthesized=not message_id,
        subject=decode_value(first.get("subject", "")).strip(),
        from_addr=from_addr,
        from_name=from_name,
        reply_to=tuple(a for _, a in _addresses(fields.get("reply-to", []))),
        to=tuple(a for _, a in _addresses(fields.get("to", []))),
        cc=tuple(a for _, a in _addresses(fields.get("cc", []))),
        in_reply_to=message_ids(first.get("in-reply-to")),
        references=message_ids(first.get("references")),
        date=_date(first.get("date")),
        headers=headers,
        text=text,
        html=html,
        attachments=attachments,
        locale=_locale(msg),
        defects=tuple(defects),
        sender_ambiguous=strict is None,
    )
