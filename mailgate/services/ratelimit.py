"""Sliding-window rate limits kept in the RateEvent table, so they hold across restarts and
across several instances sharing one database.

Subjects (an address, an IP) are stored hashed: the table says how often, never who.

`take` checks and records in the caller's write transaction, so two racing requests cannot
both see "one left" (the writer runs jobs one at a time; on PostgreSQL, where several
instances may write at once, each limit's key is also locked for the transaction).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, text
from sqlmodel import Session, col, select

from mailgate.clock import Clock, as_utc
from mailgate.store.models import RateEvent


@dataclass(frozen=True)
class Limit:
    name: str
    count: int
    window: timedelta


# What a help centre open to the internet needs; generous for people, costly for scripts.
# Sign-in failures slow down the client that makes them (one IP, or one IP on one address);
# the per-address ceiling only matters for guessing spread over many IPs (see portal.sign_in).
SIGN_IN_PER_CLIENT = Limit("signin-fail-client", 5, timedelta(minutes=15))
SIGN_IN_PER_IP = Limit("signin-fail-ip", 20, timedelta(minutes=15))
SIGN_IN_PER_ADDRESS = Limit("signin-fail-addr", 50, timedelta(hours=1))
# Mails a person asks for: one link per 15 minutes (the last one may be in the spam folder),
# at most 3 an hour per address, and a cap per IP against a script mailing strangers.
RESET_GAP = Limit("reset-gap", 1, timedelta(minutes=15))
RESET_PER_ADDRESS = Limit("reset-addr", 3, timedelta(hours=1))
RESET_PER_IP = Limit("reset-ip", 10, timedelta(hours=1))
SIGN_UP_GAP = Limit("signup-gap", 1, timedelta(minutes=15))
SIGN_UP_PER_ADDRESS = Limit("signup-addr", 3, timedelta(hours=1))
SIGN_UP_PER_IP = Limit("signup-ip", 5, timedelta(hours=1))
NEW_TICKET_PER_ACCOUNT = Limit("ticket-new", 20, timedelta(hours=1))


def _key(limit: Limit, subject: str) -> str:
    digest = hashlib.sha256(subject.strip().lower().encode()).hexdigest()[:40]
    return f"{limit.name}:{digest}"


@dataclass(frozen=True)
class Verdict:
    """The answer of `take`: allowed, or refused until `retry_at`; `last_at` is the latest
    earlier use under the refusing limits (the "we already sent you a link at ..." time)."""

    ok: bool
    refused_by: tuple[Limit, ...] = ()
    retry_at: datetime | None = None
    last_at: datetime | None = None
    event_ids: tuple[int, ...] = ()  # the rows recorded, so a caller can take them back

    def __bool__(self) -> bool:
        return self.ok


class RateLimiter:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def uses(self, session: Session, limit: Limit, subject: str) -> list[datetime]:
        """When the subject used this limit within its window, oldest first."""
        since = self.clock.now() - limit.window
        found = session.exec(
            select(RateEvent.created_at)
            .where(RateEvent.key == _key(limit, subject), RateEvent.created_at > since)
            .order_by(col(RateEvent.created_at))
        ).all()
        return [as_utc(when) for when in found]

    def exceeded(self, session: Session, limit: Limit, subject: str) -> bool:
        since = self.clock.now() - limit.window
        used = session.exec(
            select(func.count())
            .select_from(RateEvent)
            .where(RateEvent.key == _key(limit, subject), RateEvent.created_at > since)
        ).one()
        return used >= limit.count

    def record(self, session: Session, limit: Limit, subject: str) -> int:
        now = self.clock.now()
        key = _key(limit, subject)
        # Rows older than the window count for nothing: prune them as we go.
        session.execute(
            delete(RateEvent).where(
                col(RateEvent.key) == key, col(RateEvent.created_at) <= now - limit.window
            )
        )
        event = RateEvent(key=key, created_at=now)
        session.add(event)
        session.flush()
        return event.id or 0

    def forget(self, session: Session, limit: Limit, subject: str) -> None:
        session.execute(delete(RateEvent).where(col(RateEvent.key) == _key(limit, subject)))

    def take_back(self, session: Session, event_ids: tuple[int, ...]) -> None:
        if event_ids:
            session.execute(delete(RateEvent).where(col(RateEvent.id).in_(event_ids)))

    def lock(self, session: Session, limits: list[tuple[Limit, str]]) -> None:
        """PostgreSQL: serialise check-and-record per key across instances until commit
        (SQLite has one writer at a time already). Sorted, so two takers never deadlock."""
        if session.get_bind().dialect.name != "postgresql":
            return
        for number in sorted({_lock_number(_key(limit, s)) for limit, s in limits}):
            session.execute(text("SELECT pg_advisory_xact_lock(:n)"), {"n": number})

    def check(self, session: Session, limits: list[tuple[Limit, str]]) -> Verdict:
        """Would one more use fit under every limit? Records nothing."""
        refused: list[Limit] = []
        retry: list[datetime] = []
        last: list[datetime] = []
        for limit, subject in limits:
            used = self.uses(session, limit, subject)
            if len(used) >= limit.count:
                refused.append(limit)
                retry.append(used[len(used) - limit.count] + limit.window)
                last.append(used[-1])
        if not refused:
            return Verdict(True)
        return Verdict(False, tuple(refused), max(retry), max(last))

    def take(self, session: Session, limits: list[tuple[Limit, str]]) -> Verdict:
        """Record one use under every limit, or none if any is used up (then a refusal)."""
        self.lock(session, limits)
        verdict = self.check(session, limits)
        if not verdict.ok:
            return verdict
        ids = tuple(self.record(session, limit, subject) for limit, subject in limits)
        return Verdict(True, event_ids=ids)


def _lock_number(key: str) -> int:
    # pg_advisory_xact_lock takes a signed 64-bit number.
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
