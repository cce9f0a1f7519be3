"""What /healthz and /metrics read from the database: a few cheap aggregate queries."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from mailgate.clock import Clock, as_utc
from mailgate.services.outbound_limits import outbox_figures
from mailgate.store.db import Database
from mailgate.store.models import Outbox, Quarantine, Ticket


class HealthProbe:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def figures(self) -> dict[str, Any]:
        """Raises TempFailure when the database cannot be reached."""
        with self.db.read() as session:
            # max(id), not count(*): O(1) on the primary key, and it never goes down.
            tickets = session.exec(select(func.max(Ticket.id))).one()
            queued, oldest = session.exec(
                select(func.count(col(Outbox.id)), func.min(Outbox.created_at)).where(
                    Outbox.status == "queued"
                )
            ).one()
            held = session.exec(
                select(func.count(col(Quarantine.id))).where(Quarantine.status == "held")
            ).one()
            limits = outbox_figures(session, self.clock.now())  # delayed and not-sent mail
        age = None
        if oldest is not None:
            age = max(0.0, (self.clock.now() - as_utc(oldest)).total_seconds())
        return {
            "tickets_created": float(tickets or 0),
            "outbound_queued": float(queued),
            "outbound_oldest_queued_seconds": age,
            "quarantine_held": float(held),
            **limits,
        }
