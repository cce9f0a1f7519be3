"""What a service needs of an inbound message, whatever channel it came by (mail, portal)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NewAttachment:
    filename: str
    content_type: str
    payload: bytes


@dataclass(frozen=True)
class Incoming:
    message_id: str
    subject: str
    text: str
    html: str | None
    from_addr: str
    from_name: str
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    cc: tuple[str, ...]
    attachments: tuple[NewAttachment, ...]
    locale: str | None
    raw_sha256: str | None
    channel: str
    automatic: bool = False
    # The sender's address was shown to be theirs (DMARC, or aligned SPF/DKIM, by our MTA or by
    # our own checks): only then may mail to a never-heard-from address echo their text.
    sender_verified: bool = False
    sender_auth: str = ""  # the verdict recorded on the message: pass | fail | none | ""
    detected_locale: str | None = None  # the language of the text they wrote (issue 15)
