"""The help centre's use cases for the portal in one place (issue 13): articles, search, and
the customer closing their own request ("my question is answered", "this article solved my
problem"). Built once by app.py; nothing here knows about HTTP."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from mailgate import logs
from mailgate.clock import Clock
from mailgate.core.enums import TicketStatus
from mailgate.services.articles import Articles
from mailgate.services.helpcentre_search import (
    SOLVED_BY_ARTICLE,
    SOLVED_BY_CUSTOMER,
    HelpCentre,
    bump,
)
from mailgate.services.portal_views import own_ticket
from mailgate.services.tickets import Conversations
from mailgate.services.writer import Writer
from mailgate.store.blobs import BlobStore
from mailgate.store.db import Database
from mailgate.store.models import Ticket, TicketEvent


class TicketSolver:
    """A customer marks their own ticket solved. Someone else's ticket, a deleted one, or one
    already solved or closed: nothing changes (the caller answers 404 or shows the ticket)."""

    def __init__(
        self, db: Database, write: Writer, conversations: Conversations, clock: Clock
    ) -> None:
        self.db = db
        self.write = write
        self.conversations = conversations
        self.clock = clock

    def may_solve(self, account_id: int, ticket_id: int) -> bool:
        """Whether the page asking "is your question answered?" may show: their own ticket."""
        with self.db.read() as session:
            return own_ticket(session, account_id, ticket_id) is not None

    def solve(self, account_id: int, ticket_id: int, article_slug: str | None = None) -> str:
        """ "solved", "already" (solved or closed) or "not_found"."""

        def job(session: Session) -> str:
            ticket = session.get(Ticket, ticket_id)
            if (
                ticket is None
                or ticket.requester_id != account_id
                or ticket.customer_deleted_at is not None
            ):
                return "not_found"
            if ticket.status in (TicketStatus.SOLVED, TicketStatus.CLOSED):
                return "already"
            now = self.clock.now()
            self.conversations.move_status(session, ticket, TicketStatus.SOLVED, account_id, now)
            ticket.updated_at = now
            session.add(ticket)
            session.add(
                TicketEvent(
                    ticket_id=ticket_id,
                    actor_id=account_id,
                    kind="solved_by_customer",
                    detail=f"article:{article_slug}" if article_slug else "",
                    created_at=now,
                )
            )
            bump(session, SOLVED_BY_ARTICLE if article_slug else SOLVED_BY_CUSTOMER, "", now)
            return "solved"

        outcome: str = self.write(job)
        logs.info(
            "helpcentre.ticket_solved", ticket=ticket_id, outcome=outcome, article=article_slug
        )
        return outcome


@dataclass(frozen=True)
class HelpServices:
    articles: Articles
    search: HelpCentre
    solver: TicketSolver


def build_help(
    db: Database,
    write: Writer,
    conversations: Conversations,
    clock: Clock,
    blobs: BlobStore | None = None,
) -> HelpServices:
    return HelpServices(
        articles=Articles(db, write, clock, blobs),
        search=HelpCentre(db, write, clock),
        solver=TicketSolver(db, write, conversations, clock),
    )
