"""Delivery status notifications about mail we sent: suppress the address, tell the agents.

Anyone can write a DSN, so only one naming a mail we sent to that address (its Message-ID is
random) may silence mail to it.
"""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session, select

from mailgate import logs
from mailgate.clock import Clock
from mailgate.core.bounces import Bounce
from mailgate.core.enums import Role
from mailgate.store.models import Message, Outbox, Suppression, Ticket

SUPPRESS_DAYS = 60


class BounceHandler:
    def __init__(self, clock: Clock, hostname: str) -> None:
        self.clock = clock
        self.hostname = hostname

    def handle(self, session: Session, bounce: Bounce) -> None:
        row = None
        if bounce.original_message_id:
            row = session.exec(
                select(Outbox).where(Outbox.message_id == bounce.original_message_id)
            ).first()
        for r in bounce.recipients:
            if not r.permanent:
                logs.info("bounce.temporary", to=r.address, status=r.status)
                continue
            if row is None or row.to_addr != r.address:
                logs.warning("bounce.unmatched", to=r.address, status=r.status)
                continue
            logs.warning("bounce.permanent", to=r.address, status=r.status)
            until = self.clock.now() + timedelta(days=SUPPRESS_DAYS)
            existing = session.get(Suppression, r.address)
            reason = f"{r.status} {r.diagnostic}".strip()
            if existing is None:
                session.add(Suppression(email=r.address, reason=reason, until=until))
            else:
                existing.until, existing.reason = until, reason
                session.add(existing)
            row.status, row.last_error = "failed", f"bounced: {reason}"[:1000]
            session.add(row)
            if row.ticket_id:
                self._note(session, row.ticket_id, r.address, reason, row.kind)

    def _note(self, session: Session, ticket_id: int, address: str, reason: str, kind: str) -> None:
        """An internal note on the ticket: the agents learn their reply did not arrive."""
        ticket = session.get(Ticket, ticket_id)
        if ticket is None:
            return
        now = self.clock.now()
        session.add(
            Message(
                ticket_id=ticket_id,
                role=Role.SYSTEM,
                internal=True,
                body_text=f"Your reply did not reach {address}: {reason}",
                message_id=f"bounce.{ticket_id}.{now.timestamp()}@{self.hostname}",
                matched_by="bounce",
                channel="system",
                created_at=now,
            )
        )
        if kind == "agent_reply":
            ticket.auto_resolve_paused = True  # do not "solve" a ticket the customer never saw
        ticket.updated_at = now
        session.add(ticket)
