"""The customer's side of tickets in the portal: list, read, answer, open, delete.

A customer sees only tickets they requested and have not deleted, and only the public part of
each (no internal notes, no system notes); anything else is "not found", never "forbidden", so
ticket numbers leak nothing. Answers and new tickets go through Conversations exactly as mail
does (channel "portal"): same status changes, same confirmation and agent notifications.
What the pages show, in keyset pages, is read by services/portal_views.py.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlmodel import Session, col, select

from mailgate import logs
from mailgate.clock import Clock
from mailgate.services import portal_views as views
from mailgate.services import ratelimit as rl
from mailgate.services.portal_views import (  # the read side's shapes, named here as before
    AttachmentView,
    MessageView,
    TicketList,
    TicketRow,
    TicketView,
)
from mailgate.services.ratelimit import RateLimiter
from mailgate.services.tickets import Conversations, Incoming, NewAttachment
from mailgate.services.writer import Writer
from mailgate.store.blobs import BlobStore
from mailgate.store.db import Database
from mailgate.store.models import Account, Attachment, Message, Ticket, TicketEvent

if TYPE_CHECKING:
    from mailgate.services.portal_agent import PortalAgent

OTHER = "Other"  # always offered after the configured problem categories
SUBJECT_MAX = 250
TEXT_MAX = 100_000
CUSTOMER_REF_MAX = 64
MAX_FILES = 10


@dataclass(frozen=True)
class TicketRules:
    """The new-ticket form's choices and limits, from [portal] and [inbound]."""

    customer_id_pattern: str
    problems: tuple[str, ...]
    broadcasters: tuple[str, ...]
    max_upload_bytes: int
    hostname: str

    @property
    def problem_choices(self) -> tuple[str, ...]:
        return (*self.problems, OTHER)


@dataclass(frozen=True)
class TicketForm:
    customer_ref: str
    subject: str
    description: str
    problem: str
    broadcaster: str = ""


@dataclass(frozen=True)
class Submitted:
    """status: ok (ticket_id set), invalid (errors), limited, not_found."""

    status: str
    ticket_id: int | None = None
    errors: tuple[str, ...] = ()


class PortalTickets:
    def __init__(
        self,
        *,
        db: Database,
        write: Writer,
        conversations: Conversations,
        blobs: BlobStore,
        limiter: RateLimiter,
        clock: Clock,
        rules: TicketRules,
    ) -> None:
        self.db = db
        self.write = write
        self.conversations = conversations
        self.blobs = blobs
        self.limiter = limiter
        self.clock = clock
        self.rules = rules
        self.clean_html = views.SafeHtmlCache()

    # -- reading -------------------------------------------------------------------------

    def listing(
        self,
        account_id: int,
        status: str | None = None,
        after: str | None = None,
        before: str | None = None,
    ) -> TicketList:
        """A page of the customer's tickets, latest exchange first (deleted ones are gone);
        keyset.BadCursor when `after` or `before` is not a cursor."""
        with self.db.read() as session:
            return views.ticket_list(session, account_id, status, after, before)

    def show(
        self,
        account_id: int,
        ticket_id: int,
        after: str | None = None,
        before: str | None = None,
    ) -> TicketView | None:
        """The ticket with a page of its public conversation (the latest by default)."""
        with self.db.read() as session:
            return views.ticket_view(
                session, account_id, ticket_id, self.clean_html, after=after, before=before
            )

    def attachment(
        self, account_id: int, ticket_id: int, attachment_id: int
    ) -> tuple[AttachmentView, Path] | None:
        """A file of a public message on the customer's own ticket, and where its bytes are."""
        with self.db.read() as session:
            if _own_ticket(session, account_id, ticket_id) is None:
                return None
            row = session.exec(
                select(Attachment)
                .join(Message, col(Message.id) == Attachment.message_pk)
                .where(
                    Attachment.id == attachment_id,
                    Message.ticket_id == ticket_id,
                    col(Message.internal).is_(False),
                    col(Message.role).in_(("customer", "agent")),
                )
            ).first()
        if row is None or not self.blobs.exists(row.sha256):
            return None
        return views.attachment_view(row), self.blobs.path(row.sha256)

    # -- writing -------------------------------------------------------------------------

    def check_form(self, form: TicketForm) -> list[str]:
        errors = []
        ref = form.customer_ref.strip()
        if not ref:
            errors.append("customer_ref.required")
        elif len(ref) > CUSTOMER_REF_MAX or not re.fullmatch(self.rules.customer_id_pattern, ref):
            errors.append("customer_ref.invalid")
        if not form.subject.strip():
            errors.append("subject.required")
        elif len(form.subject) > SUBJECT_MAX:
            errors.append("subject.long")
        errors += _text_problems(form.description, "description")
        if not form.problem:
            errors.append("problem.required")
        elif form.problem not in self.rules.problem_choices:
            errors.append("problem.invalid")
        if form.broadcaster and form.broadcaster not in self.rules.broadcasters:
            errors.append("broadcaster.invalid")
        return errors

    def check_uploads(self, uploads: Sequence[NewAttachment]) -> list[str]:
        if len(uploads) > MAX_FILES:
            return ["attachments.too_many"]
        if sum(len(u.payload) for u in uploads) > self.rules.max_upload_bytes:
            return ["attachments.too_big"]
        return []

    def open(
        self, account_id: int, form: TicketForm, uploads: Sequence[NewAttachment], nonce: str
    ) -> Submitted:
        """A new ticket from the form, with its confirmation mail and agent notifications."""
        errors = self.check_form(form) + self.check_uploads(uploads)
        if errors:
            return Submitted("invalid", errors=tuple(errors))
        self.store_blobs(uploads)
        message_id = self.message_id(account_id, nonce)

        def job(session: Session) -> int | str:
            done = self.ticket_of_message(session, message_id)
            if done is not None:  # the same form sent twice (a double click)
                return done
            if not self.limiter.take(session, [(rl.NEW_TICKET_PER_ACCOUNT, str(account_id))]):
                return "limited"
            account = session.get(Account, account_id)
            assert account is not None
            incoming = self.incoming(
                account, message_id, form.subject.strip(), form.description, uploads
            )
            ticket, _ = self.conversations.open_ticket(
                session,
                incoming,
                category=None,
                extra={
                    "customer_ref": form.customer_ref.strip(),
                    "problem": form.problem,
                    "broadcaster": form.broadcaster or None,
                },
            )
            return ticket.id or 0

        result = self.write(job)
        if result == "limited":
            return Submitted("limited")
        logs.info("portal.ticket_opened", ticket=result, account=account_id)
        return Submitted("ok", ticket_id=int(result))

    def reply(
        self,
        account_id: int,
        ticket_id: int,
        text: str,
        uploads: Sequence[NewAttachment],
        nonce: str,
    ) -> Submitted:
        """An answer on the ticket; a closed ticket gets a follow-up, as for mail."""
        errors = self.check_uploads(uploads)
        if not uploads or text.strip():
            errors = _text_problems(text, "body") + errors
        if errors:
            return Submitted("invalid", ticket_id=ticket_id, errors=tuple(errors))
        self.store_blobs(uploads)
        message_id = self.message_id(account_id, nonce)

        def job(session: Session) -> int | None:
            ticket = _own_ticket(session, account_id, ticket_id)
            if ticket is None:
                return None
            done = self.ticket_of_message(session, message_id)
            if done is not None:
                return done
            account = session.get(Account, account_id)
            assert account is not None
            thread = tuple(self.conversations.thread_ids(session, ticket_id))
            incoming = self.incoming(
                account, message_id, f"Re: {ticket.subject}", text, uploads, thread
            )
            ticket, _ = self.conversations.customer_reply(
                session, ticket, account, incoming, matched_by="portal"
            )
            return ticket.id or 0

        result = self.write(job)
        if result is None:
            return Submitted("not_found")
        logs.info("portal.replied", ticket=result, account=account_id)
        return Submitted("ok", ticket_id=result)

    def delete(self, account_id: int, ticket_id: int) -> bool:
        """Soft delete: gone from the customer's view, kept (and recorded) for the agents."""

        def job(session: Session) -> bool:
            ticket = _own_ticket(session, account_id, ticket_id)
            if ticket is None:
                return False
            now = self.clock.now()
            ticket.customer_deleted_at = now
            session.add(ticket)
            session.add(
                TicketEvent(
                    ticket_id=ticket_id,
                    actor_id=account_id,
                    kind="customer_deleted",
                    detail="deleted by the customer in the portal",
                    created_at=now,
                )
            )
            return True

        deleted = self.write(job)
        if deleted:
            logs.info("portal.ticket_deleted", ticket=ticket_id, account=account_id)
        return deleted

    # -- helpers (shared with the agents' side, services/portal_agent.py) ------------------

    @functools.cached_property
    def agents(self) -> PortalAgent:
        """The agents' use cases: the same database, writer, blobs and form helpers."""
        from mailgate.services.portal_agent import PortalAgent  # it imports this module

        return PortalAgent(self)

    @staticmethod
    def ticket_of_message(session: Session, message_id: str) -> int | None:
        return session.exec(
            select(Message.ticket_id).where(Message.message_id == message_id)
        ).first()

    def store_blobs(self, uploads: Sequence[NewAttachment]) -> None:
        # fsync here, in the caller's thread; the writer's transaction then finds them present.
        for upload in uploads:
            self.blobs.put(upload.payload)

    def message_id(self, account_id: int, nonce: str) -> str:
        """Derived from the form's one-time nonce, so a form sent twice is one message."""
        seed = nonce if 16 <= len(nonce) <= 100 else secrets.token_hex(16)
        digest = hashlib.sha256(f"{account_id}:{seed}".encode()).hexdigest()[:32]
        return f"portal.{digest}@{self.rules.hostname}"

    def incoming(
        self,
        account: Account,
        message_id: str,
        subject: str,
        text: str,
        uploads: Sequence[NewAttachment],
        thread: tuple[str, ...] = (),
    ) -> Incoming:
        return Incoming(
            message_id=message_id,
            subject=subject,
            text=text.replace("\r\n", "\n"),
            html=None,
            from_addr=account.email,
            from_name=account.name,
            in_reply_to=thread[-1:],
            references=thread,
            cc=(),
            attachments=tuple(uploads),
            locale=account.locale,
            raw_sha256=None,
            channel="portal",
        )


def _text_problems(text: str, field: str) -> list[str]:
    if not text.strip():
        return [f"{field}.required"]
    if len(text) > TEXT_MAX:
        return [f"{field}.long"]
    return []


def _own_ticket(session: Session, account_id: int, ticket_id: int) -> Ticket | None:
    return views.own_ticket(session, account_id, ticket_id)


__all__ = [
    "OTHER",
    "AttachmentView",
    "MessageView",
    "PortalTickets",
    "Submitted",
    "TicketForm",
    "TicketList",
    "TicketRow",
    "TicketRules",
    "TicketView",
]
