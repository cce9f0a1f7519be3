"""Sliding-window rate limits kept in the RateEvent table, so they hold across restarts and
across several instances sharing one database.

Subjects (an address, an IP) are stored hashed: the table says how often, never who.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from mailgate.clock import Clock
from mailgate.store.models import RateEvent


@dataclass(frozen=True)
class Limit:
    name: str
    count: int
    window: timedelta


# What a help centre open to the internet needs; generous for people, costly for scripts.
SIGN_IN_PER_ADDRESS = Limit("signin-fail-addr", 5, timedelta(minutes=15))
SIGN_IN_PER_IP = Limit("signin-fail-ip", 20, timedelta(minutes=15))
RESET_PER_ADDRESS = Limit("reset-addr", 3, timedelta(hours=1))
RESET_PER_IP = Limit("reset-ip", 10, timedelta(hours=1))
SIGN_UP_PER_ADDRESS = Limit("signup-addr", 3, timedelta(hours=1))
SIGN_UP_PER_IP = Limit("signup-ip", 5, timedelta(hours=1))
NEW_TICKET_PER_ACCOUNT = Limit("ticket-new", 20, timedelta(hours=1))


def _key(limit: Limit, subject: str) -> str:
    digest = hashlib.sha256(subject.strip().lower().encode()).hexdigest()[:40]
    return f"{limit.name}:{digest}"


class RateLimiter:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def exceeded(self, session: Session, limit: Limit, subject: str) -> bool:
        since = self.clock.now() - limit.window
        used = session.exec(
            select(func.count())
            .select_from(RateEvent)
            .where(RateEvent.key == _key(limit, subject), RateEvent.created_at > since)
        ).one()
        return used >= limit.count

    def record(self, session: Session, limit: Limit, subject: str) -> None:
        now = self.clock.now()
        key = _key(limit, subject)
        # Rows older than the window count for nothing: prune them as we go.
        session.execute(
            delete(RateEvent).where(
                col(RateEvent.key) == key, col(RateEvent.created_at) <= now - limit.window
            )
        )
        session.add(RateEvent(key=key, created_at=now))
        session.flush()

    def forget(self, session: Session, limit: Limit, subject: str) -> None:
        session.execute(delete(RateEvent).where(col(RateEvent.key) == _key(limit, subject)))

    def take(self, session: Session, limits: list[tuple[Limit, str]]) -> bool:
        """Record one use under every limit, or none if any is used up (then False)."""
        if any(self.exceeded(session, limit, subject) for limit, subject in limits):
            return False
        for limit, subject in limits:
            self.record(session, limit, subject)
        return True
