"""The read side of tickets, for the CLI and reports: the JSON shapes CONTRACT.md promises."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from mailgate.clock import as_utc
from mailgate.store.models import Account, Attachment, Collaborator, Message, Outbox, Ticket


def ticket_summary(
    ticket: Ticket, requester: str, message_count: int, assignee: str | None = None
) -> dict[str, Any]:
    return {
        "id": ticket.id,
        "subject": ticket.subject,
        "status": ticket.status,
        "requester": requester,
        "category": ticket.category,
        "created_at": iso(ticket.created_at),
        "updated_at": iso(ticket.updated_at),
        "message_count": message_count,
        "last_exchange_at": iso(ticket.last_exchange_at),
        "assignee": assignee,
        "follow_up_of": ticket.follow_up_of_id,
        "deleted": ticket.customer_deleted_at is not None,
        "fields": {
            "customer_id": ticket.customer_ref,
            "problem": ticket.problem,
            "broadcaster": ticket.broadcaster,
        },
    }


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return as_utc(value).isoformat().replace("+00:00", "Z")


def list_tickets(session: Session, status: str | None = None) -> list[dict[str, Any]]:
    counts = (
        select(Message.ticket_id, func.count().label("n"))
        .group_by(col(Message.ticket_id))
        .subquery()
    )
    assignee = aliased(Account)
    query = (
        select(Ticket, Account.email, counts.c.n, assignee.email)
        .join(Account, col(Account.id) == Ticket.requester_id)
        .join(counts, counts.c.ticket_id == Ticket.id, isouter=True)
        .join(assignee, assignee.id == Ticket.assignee_id, isouter=True)
        .order_by(col(Ticket.id).desc())
    )
    if status:
        query = query.where(Ticket.status == status)
    return [ticket_summary(t, email, n or 0, a) for t, email, n, a in session.exec(query)]


def show_ticket(session: Session, ticket_id: int) -> dict[str, Any] | None:
    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        return None
    requester = session.get(Account, ticket.requester_id)
    messages = list(
        session.exec(
            select(Message).where(Message.ticket_id == ticket_id).order_by(col(Message.id))
        )
    )
    authors = {
        a.id: a.email
        for a in session.exec(
            select(Account).where(
                col(Account.id).in_({m.author_id for m in messages if m.author_id})
            )
        )
    }
    attachments: dict[int, list[dict[str, Any]]] = {}
    if messages:
        for att in session.exec(
            select(Attachment).where(col(Attachment.message_pk).in_([m.id for m in messages]))
        ):
            attachments.setdefault(att.message_pk, []).append(
                {
                    "filename": att.filename,
                    "content_type": att.content_type,
                    "size": att.size,
                    "sha256": att.sha256,
                }
            )
    assignee = session.get(Account, ticket.assignee_id) if ticket.assignee_id else None
    summary = ticket_summary(
        ticket,
        requester.email if requester else "",
        len(messages),
        assignee.email if assignee else None,
    )
    summary["collaborators"] = [
        {"email": c.email, "status": c.status}
        for c in session.exec(select(Collaborator).where(Collaborator.ticket_id == ticket_id))
    ]
    summary["messages"] = [
        {
            "id": m.id,
            "author": authors.get(m.author_id or -1, ""),
            "role": m.role,
            "internal": m.internal,
            "automatic": m.automatic,
            "body_text": m.body_text,
            "full_text": m.full_text,
            "attachments": attachments.get(m.id or -1, []),
            "created_at": iso(m.created_at),
            "message_id": m.message_id,
            "matched_by": m.matched_by,
            # Agents see who could not be shown to be who their From says.
            "unverified_sender": m.unverified_sender,
            "sender_auth": m.sender_auth,
            "channel": m.channel,
        }
        for m in messages
    ]
    summary["outbox"] = [
        {"id": o.id, "kind": o.kind, "to": o.to_addr, "status": o.status}
        for o in session.exec(
            select(Outbox).where(Outbox.ticket_id == ticket_id).order_by(col(Outbox.id))
        )
    ]
    return summary
