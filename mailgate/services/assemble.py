"""Outbound mail as parameters, and the bytes the sender assembles from them.

The writer's transaction records what a mail is (outbox.Mailer.queue): kind, recipient and
Message-ID on the row, and in `Outbox.params` (JSON, `encode_params`) the locale, the template
context and every header fixed at enqueue (Date, names, Reply-To, thread, Auto-Submitted).
Rendering and MIME assembly, most of a mail's cost, happen in the sender: `MailAssembler`
renders the templates and composes the bytes just before sending. A retry assembles the same
bytes again (same Message-ID, Date and multipart boundary, same templates).

A context holds ORM rows and dataclasses (a Ticket, DigestLines, CommandErrors): each is stored
as a dict of its fields, which a template reads as before (Jinja's `ticket.id` reads a dict's
key when there is no attribute). Dates and times are stored as ISO 8601 strings and stay
strings: a template formats one with the renderer's filters (`date_long`, `time_short`,
`zone_name`, services/render.py), which read either. A value JSON cannot hold is refused at
enqueue, in the caller's transaction, not found out by the sender.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlmodel import SQLModel

from mailgate.core.compose import OutAttachment, Outgoing, compose_bytes
from mailgate.services.render import MailRenderer

PARAMS_VERSION = 1


def _plain(value: Any) -> Any:
    """json's `default`: what a context may hold beyond JSON's own types."""
    if isinstance(value, SQLModel):  # an ORM row: its column fields, not its relationships
        return {name: getattr(value, name) for name in type(value).model_fields}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dt.date | dt.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"a mail's context cannot hold {type(value).__name__}")


def encode_params(
    *,
    locale: str,
    context: dict[str, Any],
    date: dt.datetime,
    from_addr: str,
    from_name: str,
    hostname: str,
    to_name: str = "",
    reply_to: str | None = None,
    in_reply_to: str | None = None,
    references: tuple[str, ...] = (),
    auto_submitted: str | None = None,
    attachments: Sequence[FileRef] = (),
) -> str:
    """The JSON of `Outbox.params`: everything but what the row's own columns hold."""
    return json.dumps(
        {
            "v": PARAMS_VERSION,
            "locale": locale,
            "date": date.isoformat(),
            "from_addr": from_addr,
            "from_name": from_name,
            "hostname": hostname,
            "to_name": to_name,
            "reply_to": reply_to,
            "in_reply_to": in_reply_to,
            "references": list(references),
            "auto_submitted": auto_submitted,
            "context": context,
            **(
                {"attachments": [dataclasses.asdict(a) for a in attachments]} if attachments else {}
            ),
        },
        ensure_ascii=False,
        separators=(",", ":"),
        default=_plain,
    )


@dataclass(frozen=True)
class FileRef:
    """A stored file (blob) a mail carries as an attachment: read from the blob store by the
    sender when it assembles the mail, so the outbox row holds its name, not its bytes."""

    sha256: str
    filename: str
    content_type: str


class Suggest(Protocol):
    def __call__(
        self, *, ticket_id: int, subject: str, locale: str, limit: int
    ) -> list[dict[str, str]]: ...


class BlobReader(Protocol):
    def get(self, sha256: str) -> bytes: ...


class StoredMail(Protocol):
    """What assembling reads of an outbox row: an ORM `Outbox`, or the read-only copy the
    sender's own process gets from serve (services/outbox_queue.py ClaimedRow)."""

    @property
    def id(self) -> int | None: ...
    @property
    def kind(self) -> str: ...
    @property
    def to_addr(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def ticket_id(self) -> int | None: ...
    @property
    def message_id(self) -> str: ...
    @property
    def raw(self) -> bytes: ...
    @property
    def params(self) -> str: ...


@dataclass(frozen=True)
class Assembled:
    raw: bytes
    subject: str  # as rendered: the sender may store it on the row (`outbox list` shows it)


class MailAssembler:
    """Row -> the bytes to send. Thread-safe: the renderer's templates are compiled once."""

    def __init__(
        self,
        renderer: MailRenderer,
        blobs: BlobReader | None = None,
        suggest: Suggest | None = None,
    ) -> None:
        self.renderer = renderer
        self.blobs = blobs
        self.suggest = suggest  # help-centre articles for a confirmation (`suggest` in context)

    def assemble(self, row: StoredMail) -> bytes:
        return self._build(row)[0]  # what the sender sends: no Assembled made per mail

    def build(self, row: StoredMail) -> Assembled:
        """Raises ValueError/KeyError/jinja2 errors for a row that can never be assembled (a
        bad address, a template missing): the sender should fail that row, not retry it."""
        raw, subject = self._build(row)
        return Assembled(raw=raw, subject=subject)

    def _build(self, row: StoredMail) -> tuple[bytes, str]:
        """The bytes and the subject as rendered."""
        if not row.params:  # queued before params existed: its bytes were fixed then
            return bytes(row.raw), row.subject
        p = json.loads(row.params)
        if p.get("v") != PARAMS_VERSION:
            raise ValueError(f"outbox #{row.id}: unknown params version {p.get('v')!r}")
        context = p["context"]
        wanted = context.pop("suggest", None)
        if wanted and self.suggest is not None:
            # Looked up now, not at enqueue: a retry may list articles written meanwhile.
            context["articles"] = self.suggest(**wanted)
        rendered = self.renderer.render(row.kind, p["locale"], context)
        attachments = p.get("attachments")
        out = Outgoing(
            kind=row.kind,
            to_addr=row.to_addr,
            to_name=p["to_name"],
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            from_addr=p["from_addr"],
            from_name=p["from_name"],
            message_id=row.message_id,
            date=dt.datetime.fromisoformat(p["date"]),
            hostname=p["hostname"],
            ticket_id=row.ticket_id,
            reply_to=p["reply_to"],
            in_reply_to=p["in_reply_to"],
            references=tuple(p["references"]),
            auto_submitted=p["auto_submitted"],
            locale=self.renderer.locale_for(p["locale"]),
            attachments=tuple(self._attachment(a) for a in attachments) if attachments else (),
        )
        return compose_bytes(out), rendered.subject

    def _attachment(self, ref: dict[str, str]) -> OutAttachment:
        if self.blobs is None:
            raise ValueError("this mail has attachments and the sender has no blob store")
        # A missing blob raises (OSError): the row is retried, the operator sees why.
        return OutAttachment(ref["filename"], ref["content_type"], self.blobs.get(ref["sha256"]))
