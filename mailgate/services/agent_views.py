"""What the agents' pages show: the queue of every ticket (filters, search, who waits and since
when) and their view of one ticket (every message, notes included, how each mail joined the
ticket and its sender verdict). Keyset pages, as services/portal_views.py's customer pages;
services/portal_agent.py checks the role before calling here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, or_
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from mailgate.clock import as_utc
from mailgate.core.enums import Role, TicketStatus
from mailgate.core.lifecycle import STATUSES
from mailgate.services import keyset
from mailgate.services.keyset import Key, Seek
from mailgate.services.portal_views import (
    MESSAGES_PER_PAGE,
    AttachmentView,
    Pages,
    SafeHtmlCache,
    attachments_by_message,
    cursor_token,
    decode_cursor,
)
from mailgate.store.models import Account, Collaborator, Message, Ticket

# -- the agents' queue -------------------------------------------------------------------------

QUEUE_PER_PAGE = 25
SEARCH_MAX = 200  # characters of a search; more is cut
SEARCH_WORDS = 4  # words of a search that count; each must be found in the ticket
SEARCH_MESSAGES = 30_000  # words are looked for in the latest messages (subject and text)
SEARCH_CAP = 500  # tickets a search shows at most (the newest): 20 pages
SEARCH_ROWS = 4 * SEARCH_CAP  # messages a one-word search reads at most, the newest first
ASSIGNEE_FILTERS = ("mine", "unassigned")
CLOSED_STATES = (TicketStatus.SOLVED, TicketStatus.CLOSED)


@dataclass(frozen=True)
class QueueFilter:
    status: str | None = None
    assignee: str | None = None  # "mine" | "unassigned" | None (anyone)
    category: str | None = None
    search: str = ""

    def query(self) -> dict[str, str]:
        """The filter as URL parameters (kept by the page links)."""
        found = {
            "status": self.status or "",
            "assignee": self.assignee or "",
            "category": self.category or "",
            "q": self.search,
        }
        return {k: v for k, v in found.items() if v}


@dataclass(frozen=True)
class Person:
    name: str
    email: str

    @property
    def label(self) -> str:
        return self.name or self.email


@dataclass(frozen=True)
class QueueRow:
    id: int
    subject: str
    status: str
    requester: Person
    assignee: Person | None
    category: str | None
    last_exchange_at: datetime
    # The customer's oldest message no agent answered publicly yet (None: nobody waits).
    waiting_since: datetime | None
    waiting: timedelta | None
    deleted: bool


@dataclass(frozen=True)
class Queue:
    rows: tuple[QueueRow, ...]
    pages: Pages
    categories: tuple[str, ...] = ()
    capped: bool = False  # the search found more than SEARCH_CAP tickets: the newest shown


class QueueSeek(Seek):
    """Seek, counting in two plain COUNTs instead of one pass with a CASE per row: all the
    matching tickets (an unfiltered COUNT is the b-tree's own count on SQLite, and filters
    count off the covering indexes of migration 0007), then those newer than the page (an
    index range as long as the page is deep). The queue's first page is its busiest."""

    def _counts(self, session: Session, newest: Key) -> tuple[int, int]:
        count = select(func.count()).select_from(self.source).where(*self.where)
        total = int(session.execute(count).scalar_one())
        newer = int(session.execute(count.where(self.newer_than(newest))).scalar_one())
        return total, newer


def _like(sqlite: bool) -> Callable[[Any, str], ColumnElement[bool]]:
    """`column` contains `word`, ignoring case. SQLite: LIKE, which ignores ASCII case by
    itself (lower() on every row would cost more), with % and _ taken literally. PostgreSQL:
    a case-blind regular expression of the word, every other character escaped, which it
    matches several times faster than ILIKE (that one lowercases each whole text first)."""
    if sqlite:
        return lambda column, word: column.contains(word, autoescape=True)
    return lambda column, word: column.regexp_match(_literal(word), flags="i")


def _literal(word: str) -> str:
    """A regular expression (PostgreSQL's ARE) matching exactly `word`: a backslash before a
    character that is not a letter or digit makes it that very character."""
    return "".join(c if c.isalnum() else "\\" + c for c in word)


def search_ids(session: Session, search: str, sqlite: bool) -> tuple[list[int], bool] | None:
    """The tickets a search finds (None: no search), at most SEARCH_CAP of them, the newest;
    and whether there were more. `#123` is ticket 123. Otherwise each of the first
    SEARCH_WORDS words must be found in the ticket: its number or customer ID (equal), its
    requester's address or name, or the subject or text of one of its messages (notes
    included) among the latest SEARCH_MESSAGES, ignoring case. Each source is read once, here,
    by an index or within that window, so the page and its count then cost what a filter
    costs; a word in an older conversation only is not found (docs/portal.md)."""
    words = " ".join(search.split())[:SEARCH_MAX].split()
    if not words:
        return None
    tag = re.fullmatch(r"#([0-9]{1,10})", words[0])
    if tag and len(words) == 1:
        number = int(tag.group(1))
        return ([number] if number <= keyset.ID_MAX else []), False
    like = _like(sqlite)
    newest = session.execute(select(func.max(Message.id))).scalar_one_or_none() or 0
    found: set[int] | None = None
    more = False  # a common word's messages were read only as far as the newest ones
    for word in words[:SEARCH_WORDS]:
        requesters = select(Account.id).where(
            or_(like(col(Account.email), word), like(col(Account.name), word))
        )
        in_messages = select(Message.ticket_id).where(
            col(Message.id) > newest - SEARCH_MESSAGES,
            or_(like(col(Message.subject), word), like(col(Message.body_text), word)),
        )
        if len(words) == 1:  # alone, a common word need not be read in every message
            in_messages = in_messages.order_by(col(Message.id).desc()).limit(SEARCH_ROWS)
        rows = list(session.execute(in_messages).scalars())
        more = more or (len(words) == 1 and len(rows) >= SEARCH_ROWS)
        ids = set(rows)
        for query in (
            select(Ticket.id).where(col(Ticket.customer_ref) == word[:64]),
            select(Ticket.id).where(col(Ticket.requester_id).in_(requesters)),
        ):
            ids.update(session.execute(query).scalars())
        if word.isdigit() and len(word) <= 10 and int(word) <= keyset.ID_MAX:
            ids.add(int(word))
        found = ids if found is None else found & ids
        if not found:
            break
    ordered = sorted(found or (), reverse=True)
    return ordered[:SEARCH_CAP], len(ordered) > SEARCH_CAP or (more and bool(ordered))


def queue(
    session: Session,
    agent_id: int,
    wanted: QueueFilter,
    now: datetime,
    after: str | None = None,
    before: str | None = None,
    *,
    sqlite: bool,
    size: int = QUEUE_PER_PAGE,
) -> Queue:
    """Every ticket (deleted by their customer too), latest exchange first, filtered."""
    older_than, newer_than = decode_cursor(after), decode_cursor(before)
    if older_than and newer_than:
        raise keyset.BadCursor("after and before together")
    where: list[ColumnElement[bool]] = []
    if wanted.status in STATUSES:
        where.append(col(Ticket.status) == wanted.status)
    if wanted.assignee == "mine":
        where.append(col(Ticket.assignee_id) == agent_id)
    elif wanted.assignee == "unassigned":
        where.append(col(Ticket.assignee_id).is_(None))
    if wanted.category:
        where.append(col(Ticket.category) == wanted.category)
    searched = search_ids(session, wanted.search, sqlite)
    if searched is not None:
        where.append(col(Ticket.id).in_(searched[0]))
    seek = QueueSeek(
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
        col(Ticket.requester_id),
        col(Ticket.assignee_id),
        col(Ticket.category),
        col(Ticket.last_exchange_at),
        col(Ticket.customer_deleted_at),
    ]
    window = seek.page(session, columns, size, older_than=older_than, newer_than=newer_than)
    people = _people(
        session, {r.requester_id for r in window.rows} | {r.assignee_id or 0 for r in window.rows}
    )
    waiting = waiting_since(session, [r.id for r in window.rows if r.status not in CLOSED_STATES])
    rows = tuple(
        QueueRow(
            id=r.id,
            subject=r.subject,
            status=r.status,
            requester=people.get(r.requester_id, Person("", "?")),
            assignee=people.get(r.assignee_id) if r.assignee_id else None,
            category=r.category or None,
            last_exchange_at=as_utc(r.last_exchange_at),
            waiting_since=waiting.get(r.id),
            waiting=now - waiting[r.id] if r.id in waiting else None,
            deleted=r.customer_deleted_at is not None,
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
    return Queue(rows, pages, capped=searched is not None and searched[1])


def waiting_since(session: Session, ticket_ids: list[int]) -> dict[int, datetime]:
    """For each ticket, when the customer's oldest message that no agent's public reply
    followed arrived (internal notes answer nothing; out-of-office replies do not count).
    Tickets whose latest public word is an agent's are absent. One query for the page."""
    if not ticket_ids:
        return {}
    mine, reply = aliased(Message), aliased(Message)
    answered = (
        select(reply.id)
        .where(
            reply.ticket_id == mine.ticket_id,
            reply.role == Role.AGENT,
            col(reply.internal).is_(False),
            col(reply.id) > mine.id,
        )
        .exists()
    )
    query = (
        select(mine.ticket_id, func.min(mine.created_at))
        .where(
            col(mine.ticket_id).in_(ticket_ids),
            mine.role == Role.CUSTOMER,
            col(mine.internal).is_(False),
            col(mine.automatic).is_(False),
            ~answered,
        )
        .group_by(mine.ticket_id)
    )
    return {tid: as_utc(at) for tid, at in session.execute(query) if at is not None}


def _people(session: Session, ids: set[int]) -> dict[int, Person]:
    found: dict[int, Person] = {}
    ids.discard(0)
    if ids:
        query = select(Account.id, Account.name, Account.email).where(col(Account.id).in_(ids))
        for account_id, name, email in session.exec(query):
            found[account_id or 0] = Person(name, email)
    return found


# -- the agent's view of one ticket ------------------------------------------------------------


@dataclass(frozen=True)
class AgentMessageView:
    id: int
    role: str  # customer | agent | system
    internal: bool
    automatic: bool
    author: Person | None
    mine: bool  # written by the agent looking at it
    text: str
    html: str | None  # already sanitised
    created_at: datetime
    attachments: tuple[AttachmentView, ...]
    channel: str  # smtp, lmtp, imap, deliver, portal…
    matched_by: str  # how an inbound mail joined the ticket: token, in-reply-to, …
    sender_auth: str  # pass | fail | none | "" (not checked)
    unverified_sender: bool


@dataclass(frozen=True)
class CollaboratorView:
    email: str
    status: str  # pending | accepted


@dataclass(frozen=True)
class AgentTicketView:
    id: int
    subject: str
    status: str
    created_at: datetime
    last_exchange_at: datetime
    customer_ref: str | None
    problem: str | None
    broadcaster: str | None
    follow_up_of: int | None
    category: str | None
    requester: Person
    assignee: Person | None
    customer_deleted_at: datetime | None
    collaborators: tuple[CollaboratorView, ...]
    messages: tuple[AgentMessageView, ...]
    pages: Pages
    agents: tuple[Person, ...]  # whom the ticket can be assigned to
    categories: tuple[str, ...]  # configured categories, the ticket's own included


def agent_ticket(
    session: Session,
    agent_id: int,
    ticket_id: int,
    clean_html: SafeHtmlCache,
    *,
    categories: tuple[str, ...] = (),
    after: str | None = None,
    before: str | None = None,
    size: int = MESSAGES_PER_PAGE,
) -> AgentTicketView | None:
    """Any ticket and a page of all its messages, oldest first (the latest by default)."""
    earlier_than, later_than = decode_cursor(before), decode_cursor(after)
    if earlier_than and later_than:
        raise keyset.BadCursor("after and before together")
    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        return None
    seek = Seek(
        Message,
        col(Message.created_at),
        col(Message.id),
        [col(Message.ticket_id) == ticket_id],
        key_of=lambda r: Key(as_utc(r.created_at), r.id),
    )
    columns = [
        col(Message.id),
        col(Message.author_id),
        col(Message.role),
        col(Message.internal),
        col(Message.automatic),
        col(Message.body_text),
        col(Message.body_html),
        col(Message.created_at),
        col(Message.channel),
        col(Message.matched_by),
        col(Message.sender_auth),
        col(Message.unverified_sender),
    ]
    window = seek.page(
        session, columns, size, older_than=earlier_than, newer_than=later_than, newest_first=False
    )
    attachments = attachments_by_message(session, [m.id for m in window.rows])
    people = _people(
        session,
        {m.author_id or 0 for m in window.rows} | {ticket.requester_id, ticket.assignee_id or 0},
    )
    messages = tuple(
        AgentMessageView(
            id=m.id,
            role=m.role,
            internal=bool(m.internal),
            automatic=bool(m.automatic),
            author=people.get(m.author_id) if m.author_id else None,
            mine=m.author_id == agent_id,
            text=m.body_text,
            html=clean_html(m.body_html) if m.body_html else None,
            created_at=as_utc(m.created_at),
            attachments=tuple(attachments.get(m.id, ())),
            channel=m.channel,
            matched_by=m.matched_by,
            sender_auth=m.sender_auth,
            unverified_sender=bool(m.unverified_sender),
        )
        for m in window.rows
    )
    pages = Pages(
        total=window.total,
        first=window.older + 1 if messages else 0,
        last=window.older + len(messages),
        previous=cursor_token(window.oldest, window.older > 0),
        next=cursor_token(window.newest, window.newer > 0),
    )
    collaborators = session.exec(
        select(Collaborator.email, Collaborator.status)
        .where(Collaborator.ticket_id == ticket_id)
        .order_by(col(Collaborator.id))
    )
    own = (ticket.category,) if ticket.category else ()
    return AgentTicketView(
        id=ticket.id or 0,
        subject=ticket.subject,
        status=ticket.status,
        created_at=as_utc(ticket.created_at),
        last_exchange_at=as_utc(ticket.last_exchange_at),
        customer_ref=ticket.customer_ref,
        problem=ticket.problem,
        broadcaster=ticket.broadcaster,
        follow_up_of=ticket.follow_up_of_id,
        category=ticket.category or None,
        requester=people.get(ticket.requester_id, Person("", "?")),
        assignee=people.get(ticket.assignee_id) if ticket.assignee_id else None,
        customer_deleted_at=(
            as_utc(ticket.customer_deleted_at) if ticket.customer_deleted_at else None
        ),
        collaborators=tuple(CollaboratorView(e, s) for e, s in collaborators),
        messages=messages,
        pages=pages,
        agents=agents(session),
        categories=tuple(dict.fromkeys(categories + own)),
    )


def agents(session: Session) -> tuple[Person, ...]:
    """Every agent who can be assigned a ticket, by name."""
    # (`mailgate agent remove` makes the account a customer again: it is not offered.)
    query = select(Account.name, Account.email).where(Account.role == Role.AGENT)
    people = [Person(name, email) for name, email in session.exec(query)]
    return tuple(sorted(people, key=lambda p: (p.label.lower(), p.email)))
