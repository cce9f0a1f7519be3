"""Read delivery status notifications (RFC 3464) with the stdlib ``email`` package."""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import message_from_bytes
from email.header import Header, decode_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import collapse_rfc2231_value

__all__ = ["Bounce", "BounceRecipient", "parse_dsn"]


@dataclass(frozen=True)
class BounceRecipient:
    address: str
    action: str
    status: str
    permanent: bool
    diagnostic: str


@dataclass(frozen=True)
class Bounce:
    recipients: tuple[BounceRecipient, ...]
    original_message_id: str | None


# Enhanced status code (RFC 3463); Exchange uses three-digit details such as 5.1.10.
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_COMMENT = re.compile(r"\([^()]*\)")
# RFC 6533 utf-8 address type may escape non-ASCII as \x{HEX}.
_EMBEDDED_UNICODE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
_ANGLE_ID = re.compile(r"<([^<>\s]+)>")
# Every inbound mail is asked; the full parse is kept for those that can be a report.
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_REPORT_TYPE = re.compile(rb"multipart\s*/\s*report", re.IGNORECASE)
_DSN_TYPES = ("message/delivery-status", "message/global-delivery-status")
_RETURNED_TYPES = (
    "message/rfc822",
    "message/global",
    "text/rfc822-headers",
    "message/global-headers",
)


def parse_dsn(raw: bytes) -> Bounce | None:
    """None unless the mail is multipart/report; report-type=delivery-status.

    Never raises: the stdlib parser is not documented to be total on hostile input
    (fuzzing found no failure in _parse), so an unreadable report counts as none.
    """
    try:
        return _parse(raw)
    except Exception:
        return None


def _parse(raw: bytes) -> Bounce | None:
    # The header block by index, not split(): split() copied the whole body (34 MB for a
    # 25 MB attachment) just to look at the header.
    head_end = _HEAD_END.search(raw)
    if not _REPORT_TYPE.search(raw, 0, head_end.start() if head_end else len(raw)):
        return None
    msg = message_from_bytes(raw)
    if msg.get_content_type() != "multipart/report":
        return None
    report_type = msg.get_param("report-type")
    if report_type is None or _text(collapse_rfc2231_value(report_type)).lower() not in (
        "delivery-status",
        "global-delivery-status",
    ):
        return None

    parts = msg.get_payload()
    if not isinstance(parts, list):
        return Bounce((), None)

    recipients: list[BounceRecipient] = []
    original_id: str | None = None
    # Only direct children: the returned message may itself be a (double) bounce.
    for part in parts:
        if not isinstance(part, Message):
            continue
        ctype = part.get_content_type()
        if ctype in _DSN_TYPES and not recipients:
            # The per-message block has no recipient fields, so _recipient skips it.
            recipients = [r for block in _field_blocks(part) if (r := _recipient(block))]
        elif ctype in _RETURNED_TYPES and original_id is None:
            original_id = _returned_message_id(part)
    return Bounce(tuple(recipients), original_id)


def _field_blocks(part: Message) -> list[Message]:
    """Per-message block first, then one block per recipient."""
    payload = part.get_payload()
    if part.get_content_type() == "message/delivery-status" and isinstance(payload, list):
        # The stdlib parser already splits message/delivery-status into header blocks.
        return [block for block in payload if isinstance(block, Message)]
    # message/global-delivery-status (RFC 6533) is parsed like message/rfc822: the first
    # block becomes the headers of one nested message and the rest its body.
    blocks: list[Message] = []
    body: object = None
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        blocks.append(payload[0])
        body = payload[0].get_payload(decode=True)
    else:
        body = part.get_payload(decode=True)
    if isinstance(body, bytes):
        parser = BytesHeaderParser()
        text = body.replace(b"\r\n", b"\n")
        for chunk in re.split(rb"\n[ \t]*\n", text):
            if chunk.strip():
                blocks.append(parser.parsebytes(chunk.strip(b"\n") + b"\n"))
    return blocks


def _recipient(block: Message) -> BounceRecipient | None:
    # Original-Recipient is the address we actually sent to; Final-Recipient may be an
    # alias target we have never heard of, so it is only the fallback.
    address = _address(block.get("Original-Recipient")) or _address(block.get("Final-Recipient"))
    if not address:
        return None
    action = _COMMENT.sub(" ", _text(block.get("Action"))).strip().lower()
    action = action.split()[0] if action else ""
    diagnostic = _typed_text(_text(block.get("Diagnostic-Code")))
    status = _status(_text(block.get("Status"))) or _status(diagnostic)
    return BounceRecipient(
        address=address,
        action=action,
        status=status,
        permanent=status.startswith("5."),
        diagnostic=diagnostic,
    )


def _address(value: object) -> str:
    """'rfc822; <User@Example.com>' -> 'user@example.com'; '' when unusable."""
    text = _typed_text(_text(value)).strip().strip("<>").strip()
    text = _EMBEDDED_UNICODE.sub(_unescape, text)
    if "@" not in text or any(c.isspace() for c in text):
        return ""
    return text.lower()


def _unescape(match: re.Match[str]) -> str:
    code = int(match.group(1), 16)
    return chr(code) if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"


def _typed_text(text: str) -> str:
    """Drop the 'type;' prefix of address and diagnostic fields ('smtp; 550 ...')."""
    head, sep, rest = text.partition(";")
    if sep and head.strip() and " " not in head.strip():
        text = rest
    return " ".join(text.split())


def _status(text: str) -> str:
    match = _STATUS.search(text)
    return ".".join(match.groups()) if match else ""


def _returned_message_id(part: Message) -> str | None:
    if part.get_content_maintype() == "message":
        inner = part.get_payload()
        headers = inner[0] if isinstance(inner, list) and inner else None
    else:
        # text/rfc822-headers may be transfer-encoded; decode before reading it.
        body = part.get_payload(decode=True)
        headers = BytesHeaderParser().parsebytes(body) if isinstance(body, bytes) else None
    if not isinstance(headers, Message):
        return None
    value = " ".join(_text(headers.get("Message-ID")).split())
    if not value:
        return None
    match = _ANGLE_ID.search(value)
    if match:
        return match.group(1)
    # Some MTAs drop the brackets; anything else left (e.g. "<>") is not an id.
    return value if not any(c in value for c in " <>") else None


def _text(value: object) -> str:
    """Header value as str, reading raw 8-bit (RFC 6533 UTF-8) values as UTF-8."""
    if value is None:
        return ""
    if isinstance(value, Header):
        # compat32 wraps undecodable 8-bit values in a Header whose str() is U+FFFD
        # soup; decode_header hands back the original bytes instead.
        raw = b"".join(
            chunk if isinstance(chunk, bytes) else chunk.encode("utf-8", "replace")
            for chunk, _ in decode_header(value)
        )
        return raw.decode("utf-8", "replace")
    return str(value)
