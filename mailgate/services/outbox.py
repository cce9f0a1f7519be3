"""The transactional outbox: mail is rendered, composed and stored in the caller's transaction,
then a sender worker delivers the fixed bytes (a retry keeps its Message-ID).

Automatic mail is capped per recipient (kept in the database, so caps survive restarts): at
most `auto_per_hour` an hour (more is dropped until the hour has passed) and `auto_per_day` a
day (UTC), then one `limit_reached` notice and silence until the next day: at most 11 a day
with the defaults. Agents are exempt: they must see every ticket.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import case, func, or_, update
from sqlmodel import Session, col, select

from mailgate import logs
from mailgate.clock import Clock, as_utc
from mailgate.core.compose import AUTOMATIC_KINDS, Outgoing, compose
from mailgate.services.render import MailRenderer
from mailgate.store.models import Outbox, Suppression


class TransportTempError(Exception):
    """Delivery failed for now (4xx, network): the row is retried with backoff."""


class TransportPermError(Exception):
    """Delivery will never work for this row (5xx): it is marked failed."""


class Transport(Protocol):
    """Where the sender hands mail (adapters/transports.py implements maildir and SMTP)."""

    def send(self, envelope_from: str, to_addr: str, raw: bytes) -> None: ...

    def check(self) -> str: ...


UNCAPPED_KINDS = frozenset({"agent_notification", "command_error", "agent_reply"})


@dataclass(frozen=True)
class MailSettings:
    hostname: str
    support_address: str
    from_name: str
    base_url: str
    auto_per_hour: int = 5
    auto_per_day: int = 10
    max_attempts: int = 12
    retry_base_seconds: float = 60.0
    retry_max_seconds: float = 3600.0


def new_message_id(hostname: str) -> str:
    return f"mg.{secrets.token_hex(12)}@{hostname}"


class Mailer:
    """Renders and queues mail inside the caller's session (same transaction as the ticket)."""

    def __init__(self, settings: MailSettings, renderer: MailRenderer, clock: Clock) -> None:
        self.settings = settings
        self.renderer = renderer
        self.clock = clock

    def url(self, path: str) -> str:
        return self.settings.base_url.rstrip("/") + path

    def _capped(self, session: Session, to_addr: str, now: datetime) -> str | None:
        """None if allowed; "limit" if the day's notice is due; "silent" when over a cap."""
        suppressed = session.get(Suppression, to_addr)
        if suppressed is not None and as_utc(suppressed.until) > now:
            return "silent"
        day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        hour_ago = now - timedelta(hours=1)
        # One query for the three counts: this runs for every automatic mail we queue.
        today, hour, limited = session.exec(
            select(
                func.count(),
                func.coalesce(func.sum(case((Outbox.created_at >= hour_ago, 1), else_=0)), 0),
                func.coalesce(func.sum(case((Outbox.kind == "limit_reached", 1), else_=0)), 0),
            ).where(
                Outbox.to_addr == to_addr,
                col(Outbox.automatic).is_(True),
                col(Outbox.kind).not_in(UNCAPPED_KINDS),
                Outbox.created_at >= day_start,
            )
        ).one()
        if limited:
            return "silent"
        if today >= self.settings.auto_per_day:
            return "limit"
        if hour >= self.settings.auto_per_hour:
            return "silent"  # no notice: this sender hears from us again next hour
        return None

    def queue(
        self,
        session: Session,
        *,
        kind: str,
        to_addr: str,
        locale: str | None,
        context: dict[str, Any],
        to_name: str = "",
        ticket_id: int | None = None,
        reply_to: str | None = None,
        in_reply_to: str | None = None,
        references: tuple[str, ...] = (),
        from_name: str | None = None,
        auto_submitted: str | None = None,
    ) -> Outbox | None:
        now = self.clock.now()
        automatic = kind in AUTOMATIC_KINDS
        if automatic and kind not in UNCAPPED_KINDS:
            verdict = self._capped(session, to_addr, now)
            if verdict == "silent":
                logs.info("outbox.capped", to=to_addr, kind=kind, ticket=ticket_id)
                return None
            if verdict == "limit":
                logs.warning("outbox.limit_reached", to=to_addr, kind=kind, ticket=ticket_id)
                kind, ticket_id, reply_to = "limit_reached", None, None
        ctx = {"company": self.settings.from_name, "portal_url": self.url("/"), **context}
        rendered = self.renderer.render(kind, locale, ctx)
        message_id = new_message_id(self.settings.hostname)
        if automatic:
            auto_submitted = auto_submitted or ("auto-replied" if in_reply_to else "auto-generated")
        out = Outgoing(
            kind=kind,
            to_addr=to_addr,
            to_name=to_name,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            from_addr=self.settings.support_address,
            from_name=from_name or self.settings.from_name,
            message_id=message_id,
            date=now,
            hostname=self.settings.hostname,
            ticket_id=ticket_id,
            reply_to=reply_to,
            in_reply_to=in_reply_to,
            references=references,
            auto_submitted=auto_submitted if automatic else None,
            locale=self.renderer.locale_for(locale),
        )
        raw = compose(out).as_bytes()
        row = Outbox(
            kind=kind,
            to_addr=to_addr,
            subject=rendered.subject,
            ticket_id=ticket_id,
            message_id=message_id,
            # Automatic mail goes out with the null sender (RFC 3834): a bounce of a bounce,
            # or an autoresponder answering it, can never come back to us.
            envelope_from="" if automatic else self.settings.support_address,
            raw=raw,
            automatic=automatic,
            next_attempt_at=now,
            created_at=now,
        )
        session.add(row)
        session.flush()
        logs.info("outbox.queued", outbox=row.id, kind=kind, to=to_addr, ticket=ticket_id)
        return row


def backoff_seconds(attempts: int, base: float, cap: float, rng: random.Random) -> float:
    """Capped exponential backoff with full jitter (arq/dramatiq style)."""
    ceiling = min(cap, base * (2 ** max(0, attempts - 1)))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


class OutboxQueue:
    """Claiming and settling rows for the sender worker; one short transaction per step."""

    def __init__(self, db: Any, settings: MailSettings, clock: Clock, lease_seconds: int = 300):
        self.db = db
        self.settings = settings
        self.clock = clock
        self.lease = timedelta(seconds=lease_seconds)
        self.rng = random.Random()

    def claim_due(self, limit: int = 20) -> list[Outbox]:
        """Rows due now, leased to this worker so no other sender takes them meanwhile."""
        now = self.clock.now()
        with self.db.write() as session:
            query = (
                select(Outbox)
                .where(
                    Outbox.status == "queued",
                    Outbox.next_attempt_at <= now,
                    or_(col(Outbox.claimed_until).is_(None), Outbox.claimed_until < now),
                )
                .order_by(col(Outbox.id))
                .limit(limit)
            )
            if not self.db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            rows = list(session.exec(query))
            for row in rows:
                session.execute(
                    update(Outbox)
                    .where(col(Outbox.id) == row.id)
                    .values(claimed_until=now + self.lease)
                )
            return rows

    def mark_sent(self, outbox_id: int) -> None:
        now = self.clock.now()
        with self.db.write() as session:
            session.execute(
                update(Outbox)
                .where(col(Outbox.id) == outbox_id)
                .values(
                    status="sent", sent_at=now, claimed_until=None, attempts=Outbox.attempts + 1
                )
            )

    def mark_failed(self, outbox_id: int, error: str) -> None:
        with self.db.write() as session:
            session.execute(
                update(Outbox)
                .where(col(Outbox.id) == outbox_id)
                .values(
                    status="failed",
                    claimed_until=None,
                    last_error=error[:1000],
                    attempts=Outbox.attempts + 1,
                )
            )

    def mark_retry(self, row: Outbox, error: str) -> str:
        """Schedule another attempt, or give up after max_attempts. Returns the new status."""
        attempts = row.attempts + 1
        if attempts >= self.settings.max_attempts:
            self.mark_failed(row.id or 0, f"gave up after {attempts} attempts: {error}")
            return "failed"
        delay = backoff_seconds(
            attempts, self.settings.retry_base_seconds, self.settings.retry_max_seconds, self.rng
        )
        with self.db.write() as session:
            session.execute(
                update(Outbox)
                .where(col(Outbox.id) == row.id)
                .values(
                    attempts=attempts,
                    claimed_until=None,
                    last_error=error[:1000],
                    next_attempt_at=self.clock.now() + timedelta(seconds=delay),
                )
            )
        return "queued"
