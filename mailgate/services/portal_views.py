"""What the customer's pages show: "My activities" and one ticket's public conversation (the
agents' queue and their view of a ticket are in services/agent_views.py).

All are keyset pages (services/keyset.py) read off the indexes of migrations 0004 and 0007: a
page costs the same on page 1 and page 400, in a fixed number of statements (the page, one
count, then each page's people, attachments and waiting times in one query each, never one
per row). A customer's queries are restricted to their own visible tickets and public
messages before any cursor is applied, so a cursor can only move them within what they may
see. Agents see every ticket; services/portal_agent.py checks the role before calling here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement
from sqlmodel import Session, col, select

from mailgate.clock import as_utc
from mailgate.core.html import safe_html
from mailgate.core.lifecycle import STATUSES
from mailgate.services import keyset
from mailgate.services.keyset import Key, Seek
from mailgate.store.models import Account, Attachment, Message, Ticket

TICKETS_PER_PAGE = 25
MESSAGES_PER_PAGE = 50  # a usual ticket fits on one page; a mail loop's thousands do not
PUBLIC_ROLES = ("customer", "agent")


@dataclass(frozen=True)
class TicketRow:
    id: int
    subject: str
    status: str
    created_at: datetime
    last_exchange_at: datetime


@dataclass(frozen=True)
class Pages:
    """Where a page sits: `first`..`last` of `total` (1-based, in display order) and the
    cursors of the pages on either side (None: there is none that way)."""

    total: int
    first: int
    last: int
    previous: str | None
    next: str | None


@dataclass(frozen=True)
class TicketList:
    rows: tuple[TicketRow, ...]
    pages: Pages


@dataclass(frozen=True)
class AttachmentView:
    id: int
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True)
class MessageView:
    id: int
    mine: bool
    from_support: bool
    author: str
    text: str
    html: str | None  # already sanitised
    created_at: datetime
    attachments: tuple[AttachmentView, ...]


@dataclass(frozen=True)
class TicketView:
    id: int
    subject: str
    status: str
    created_at: datetime
    last_exchange_at: datetime
    customer_ref: str | None
    problem: str | None
    broadcaster: str | None
    follow_up_of: int | None
    messages: tuple[MessageView, ...]
    pages: Pages  # of the conversation, oldest first: previous = earlier messages


class SafeHtmlCache:
    """Sanitised HTML by its source text. A message's HTML never changes once stored, and
    sanitising it is most of a long ticket's page, so each is cleaned once, not per view.
    Bounded by entries and skips very large bodies, so memory stays small."""

    def __init__(self, entries: int = 2000, max_chars: int = 200_000) -> None:
        self.entries, self.max_chars = entries, max_chars
        self._done: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()  # pages are read on several threads

    def __call__(self, html: str) -> str:
        with self._lock:
            found = self._done.get(html)
            if found is not None:
                self._done.move_to_end(html)
                return found
        clean = safe_html(html)
        if len(html) <= self.max_chars:
            with self._lock:
                self._done[html] = clean
                if len(self._done) > self.entries:
                    self._done.popitem(last=False)
        return clean


def cursor_token(key: Key | None, present: bool) -> str | None:
    return keyset.encode(key) if key is not None and present else None


def decode_cursor(token: str | None) -> Key | None:
    return keyset.decode(token) if token else None


def ticket_list(
    session: Session,
    account_id: int,
    status: str | None,
    after: str | None = None,
    before: str | None = None,
    size: int = TICKETS_PER_PAGE,
) -> TicketList:
    """The customer's visible tickets, latest exchange first: the page after the cursor
    `after` (older), before `before` (newer), or the first. keyset.BadCursor if malformed."""
    older_than, newer_than = decode_cursor(after), decode_cursor(before)
    if older_than and newer_than:
        raise keyset.BadCursor("after and before together")
    where: list[ColumnElement[bool]] = [
        col(Ticket.requester_id) == account_id,
        col(Ticket.customer_deleted_at).is_(None),
    ]
    if status in STATUSES:
        where.append(col(Ticket.status) == status)
    seek = Seek(
        Ticket,
        col(Ticket.last_exchange_at),
        col(Ticket.id),
        where,
        key_of=lambda r: Key(as_utc(r.last_exchange_at), r.id),
    )
    columns = [
        col(Ticket.id),
        col(Ticket.subject),
        col(Ticket.status),
        col(Ticket.created_at),
        col(Ticket.last_exchange_at),
    ]
    window = seek.page(session, columns, size, older_than=older_than, newer_than=newer_than)
    rows = tuple(
        TicketRow(
            id=r.id,
            subject=r.subject,
            status=r.status,
            created_at=as_utc(r.created_at),
            last_exchange_at=as_utc(r.last_exchange_at),
        )
        for r in window.rows
    )
    pages = Pages(
        total=window.total,
        first=window.newer + 1 if rows else 0,
        last=window.newer + len(rows),
        previous=cursor_token(window.newest, window.newer > 0),
        next=cursor_token(window.oldest, window.older > 0),
    )
    return TicketList(rows, pages)


def own_ticket(session: Session, account_id: int, ticket_id: int) -> Ticket | None:
    ticket = session.get(Ticket, ticket_id)
    if ticket is None or ticket.requester_id != account_id or ticket.customer_deleted_at:
        return None
    return ticket


def ticket_view(
    session: Session,
    account_id: int,
    ticket_id: int,
    clean_html: SafeHtmlCache,
    after: str | None = None,
    before: str | None = None,
    size: int = MESSAGES_PER_PAGE,
) -> TicketView | None:
    """One of the customer's tickets and a page of its public conversation, oldest first:
    the latest messages, or those before `before` (earlier) or after `after` (later)."""
    earlier_than, later_than = decode_cursor(before), decode_cursor(after)
    if earlier_than and later_than:
        raise keyset.BadCursor("after and before together")
    ticket = own_ticket(session, account_id, ticket_id)
    if ticket is None:
        return None
    seek = Seek(
        Message,
        col(Message.created_at),
        col(Message.id),
        [
            col(Message.ticket_id) == ticket_id,
            col(Message.internal).is_(False),
            col(Message.role).in_(PUBLIC_ROLES),
        ],
        key_of=lambda r: Key(as_utc(r.created_at), r.id),
    )
    columns = [
        col(Message.id),
        col(Message.author_id),
        col(Message.role),
        col(Message.body_text),
        col(Message.body_html),
        col(Message.created_at),
    ]
    window = seek.page(
        session,
        columns,
        size,
        older_than=earlier_than,
        newer_than=later_than,
        newest_first=False,
    )
    attachments = attachments_by_message(session, [m.id for m in window.rows])
    authors = _authors(session, {m.author_id for m in window.rows if m.author_id})
    messages = tuple(
        MessageView(
            id=m.id,
            mine=m.author_id == account_id,
            from_support=m.role == "agent",
            author=authors.get(m.author_id or 0, ""),
            text=m.body_text,
            html=clean_html(m.body_html) if m.body_html else None,
            created_at=as_utc(m.created_at),
            attachments=tuple(attachments.get(m.id, ())),
        )
        for m in window.rows
    )
    # Oldest first on the page: the earlier messages are those "older" than the page.
    pages = Pages(
        total=window.total,
        first=window.older + 1 if messages else 0,
        last=window.older + len(messages),
        previous=cursor_token(window.oldest, window.older > 0),
        next=cursor_token(window.newest, window.newer > 0),
    )
    return TicketView(
        id=ticket.id or 0,
        subject=ticket.subject,
        status=ticket.status,
        created_at=as_utc(ticket.created_at),
        last_exchange_at=as_utc(ticket.last_exchange_at),
        customer_ref=ticket.customer_ref,
        problem=ticket.problem,
        broadcaster=ticket.broadcaster,
        follow_up_of=ticket.follow_up_of_id,
        messages=messages,
        pages=pages,
    )


def attachment_view(row: Attachment) -> AttachmentView:
    return AttachmentView(
        id=row.id or 0, filename=row.filename, content_type=row.content_type, size=row.size
    )


def attachments_by_message(
    session: Session, message_ids: list[int]
) -> dict[int, list[AttachmentView]]:
    found: dict[int, list[AttachmentView]] = {}
    if message_ids:
        query = (
            select(Attachment)
            .where(col(Attachment.message_pk).in_(message_ids))
            .order_by(col(Attachment.id))
        )
        for row in session.exec(query):
            found.setdefault(row.message_pk, []).append(attachment_view(row))
    return found


def _authors(session: Session, ids: set[int]) -> dict[int, str]:
    """Display names: an agent's name (never their address), a customer's name or address."""
    names: dict[int, str] = {}
    if ids:
        query = select(Account.id, Account.name, Account.email, Account.role).where(
            col(Account.id).in_(ids)
        )
        for account_id, name, email, role in session.exec(query):
            names[account_id or 0] = name or ("" if role == "agent" else email)
    return names
