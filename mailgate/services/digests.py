"""Agent digests: the notifications held back by the per-agent hourly cap (see outbox.py), gathered
into one `agent_digest` mail per agent when they are due.

A held notification is an outbox row (`queued`, nothing to send: no params, no bytes; reason
"digest: held ...") whose `next_attempt_at` says when its digest is due. The job takes every
held row of an agent once one of them is due, lists their tickets (number, subject, link;
several updates of one ticket make one line), queues the digest (its DigestLines are stored in
the digest row's params, as dicts), and marks the held rows `sent` with reason
"digest: sent in outbox #N". It queries by time, so it catches up after downtime; it runs in
the writer's transaction, so a held row is in exactly one digest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, col, select

from mailgate import logs
from mailgate.clock import as_utc
from mailgate.services.outbound_limits import DIGEST_KIND, HELD_FOR_DIGEST, IN_DIGEST
from mailgate.services.outbox import Mailer
from mailgate.store.models import Account, Outbox, Ticket

MAX_TICKETS = 500  # per digest mail: a bigger backlog makes several mails, none huge


@dataclass(frozen=True)
class DigestLine:
    id: int
    subject: str
    status: str
    url: str
    updates: int


class Digests:
    def __init__(self, mailer: Mailer, ticket_url: Callable[[int], str]) -> None:
        self.mailer = mailer
        self.ticket_url = ticket_url

    def send_due(self, session: Session, now: datetime) -> int:
        """Queue the digests that are due; returns how many digest mails were queued."""
        now = as_utc(now)
        held = col(Outbox.reason).startswith(HELD_FOR_DIGEST)
        due = session.exec(
            select(Outbox.to_addr)
            .where(Outbox.status == "queued", held, Outbox.next_attempt_at <= now)
            .distinct()
        ).all()
        queued = 0
        for to_addr in sorted(due):
            rows = session.exec(
                select(Outbox)
                .where(Outbox.to_addr == to_addr, Outbox.status == "queued", held)
                .order_by(col(Outbox.id))
            ).all()
            queued += self._digest(session, to_addr, list(rows), now)
        return queued

    def _digest(self, session: Session, to_addr: str, rows: list[Outbox], now: datetime) -> int:
        agent = session.exec(select(Account).where(Account.email == to_addr)).first()
        updates = Counter(r.ticket_id for r in rows)
        ticket_ids = [t for t in dict.fromkeys(r.ticket_id for r in rows) if t is not None]
        queued = 0
        for start in range(0, max(len(ticket_ids), 1), MAX_TICKETS):
            chunk = ticket_ids[start : start + MAX_TICKETS]
            tickets = {
                t.id: t for t in session.exec(select(Ticket).where(col(Ticket.id).in_(chunk)))
            }
            lines = [
                DigestLine(
                    id=tid,
                    subject=tickets[tid].subject if tid in tickets else "",
                    status=tickets[tid].status if tid in tickets else "",
                    url=self.ticket_url(tid),
                    updates=updates[tid],
                )
                for tid in chunk
            ]
            in_chunk = set(chunk)
            members = [r for r in rows if r.ticket_id in in_chunk]
            if start == 0:  # rows without a ticket (none today) ride in the first digest
                members += [r for r in rows if r.ticket_id is None]
            digest = self.mailer.queue(
                session,
                kind=DIGEST_KIND,
                to_addr=to_addr,
                to_name=agent.name if agent else "",
                locale=agent.locale if agent else None,
                context={
                    "tickets": lines,
                    "notifications": len(members),
                    "per_hour": self.mailer.settings.agent_notifications_per_hour,
                },
            )
            session.execute(
                update(Outbox)
                .where(col(Outbox.id).in_([r.id for r in members]))
                .values(status="sent", sent_at=now, reason=f"{IN_DIGEST}{digest.id}")
            )
            logs.info(
                "outbox.digest", outbox=digest.id, to=to_addr, tickets=len(lines), held=len(members)
            )
            queued += 1
        return queued
