"""Ticket statuses as functions of events and time: new -> open -> pending -> solved -> closed."""

from __future__ import annotations

from datetime import datetime, timedelta

from mailgate.core.enums import TicketStatus

STATUSES = tuple(TicketStatus)
SETTABLE = tuple(s for s in TicketStatus if s is not TicketStatus.NEW)


def after_customer_reply(status: str) -> str:
    """A customer's (human) reply: waiting on us again. A closed ticket is not reopened: the
    caller opens a follow-up ticket instead. A ticket nobody answered yet stays new."""
    if status in ("pending", "solved"):
        return "open"
    return status


def after_agent_reply(status: str) -> str:
    """An agent answered publicly: now we wait for the customer."""
    return "pending" if status != "closed" else status


def due_for_auto_resolve(
    status: str, pending_since: datetime | None, paused: bool, now: datetime, days: int
) -> bool:
    return (
        status == "pending"
        and not paused
        and pending_since is not None
        and now - pending_since >= timedelta(days=days)
    )


def due_for_close(status: str, solved_at: datetime | None, now: datetime, days: int) -> bool:
    return status == "solved" and solved_at is not None and now - solved_at >= timedelta(days=days)
