"""Scheduled jobs. Each one queries by time, so it is idempotent and catches up after downtime
(it never counts on having run every minute).

With several instances each job is run by the one holding its lease ("job:NAME",
services/leases.py); `fence` (Leases.fence) then checks, inside the job's own transaction, that
the lease is still ours, so a run by an instance that lost it rolls back instead of doing the
work a second time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from mailgate import logs
from mailgate.clock import as_utc
from mailgate.core import lifecycle
from mailgate.services.digests import Digests
from mailgate.services.tickets import Conversations
from mailgate.store.db import Database
from mailgate.store.models import RateEvent, Ticket

Fence = Callable[[Session], None]  # raises (LeaseLost) when the job's lease is not ours

# The scheduled jobs by name: each is held by one instance at a time (lease "job:NAME").
JOB_NAMES = ("auto_resolve", "close", "cleanup", "digests")


def _check(session: Session, fence: Fence | None) -> None:
    if fence is not None:
        fence(session)


@dataclass(frozen=True)
class JobReport:
    auto_resolved: int
    closed: int
    rate_events_pruned: int
    digests: int = 0


class Jobs:
    def __init__(
        self, db: Database, conversations: Conversations, auto_resolve_days: int, close_days: int
    ) -> None:
        self.db = db
        self.conversations = conversations
        self.auto_resolve_days = auto_resolve_days
        self.close_days = close_days
        self.digests = Digests(conversations.mailer, conversations.ticket_url)

    def run(self, name: str, now: datetime, fence: Fence | None = None) -> int:
        """One job by name (JOB_NAMES); what it did (tickets, rows, digests)."""
        job = {
            "auto_resolve": self.auto_resolve,
            "close": self.close_solved,
            "cleanup": self.prune_rate_events,
            "digests": self.send_digests,
        }[name]
        return job(now, fence)

    def auto_resolve(self, now: datetime, fence: Fence | None = None) -> int:
        # SQLite keeps naive UTC: a cutoff in another offset would compare wrongly there.
        now = as_utc(now)
        cutoff = now - timedelta(days=self.auto_resolve_days)
        done = 0
        with self.db.write() as session:
            _check(session, fence)
            due = session.exec(
                select(Ticket).where(
                    Ticket.status == "pending",
                    col(Ticket.pending_since) <= cutoff,
                    col(Ticket.auto_resolve_paused).is_(False),
                )
            ).all()
            for ticket in due:
                pending = as_utc(ticket.pending_since) if ticket.pending_since else None
                if lifecycle.due_for_auto_resolve(
                    ticket.status, pending, ticket.auto_resolve_paused, now, self.auto_resolve_days
                ):
                    self.conversations.auto_resolve(session, ticket, self.auto_resolve_days, now)
                    logs.info("job.auto_resolved", ticket=ticket.id)
                    done += 1
        return done

    def close_solved(self, now: datetime, fence: Fence | None = None) -> int:
        now = as_utc(now)
        cutoff = now - timedelta(days=self.close_days)
        done = 0
        with self.db.write() as session:
            _check(session, fence)
            due = session.exec(
                select(Ticket).where(Ticket.status == "solved", col(Ticket.solved_at) <= cutoff)
            ).all()
            for ticket in due:
                self.conversations.set_status(session, ticket, "closed", None, now)
                logs.info("job.closed", ticket=ticket.id)
                done += 1
        return done

    def prune_rate_events(self, now: datetime, fence: Fence | None = None) -> int:
        now = as_utc(now)
        with self.db.write() as session:
            _check(session, fence)
            old = session.exec(
                select(RateEvent).where(RateEvent.created_at < now - timedelta(days=2))
            )
            rows = list(old)
            for row in rows:
                session.delete(row)
        return len(rows)

    def send_digests(self, now: datetime, fence: Fence | None = None) -> int:
        """Agent notifications held back by the hourly cap, one digest mail per agent."""
        with self.db.write() as session:
            _check(session, fence)
            return self.digests.send_due(session, now)

    def run_all(self, now: datetime) -> JobReport:
        return JobReport(
            auto_resolved=self.auto_resolve(now),
            closed=self.close_solved(now),
            rate_events_pruned=self.prune_rate_events(now),
            digests=self.send_digests(now),
        )
