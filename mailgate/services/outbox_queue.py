"""The sender's side of the outbox: lease a batch of due rows in one short write transaction,
then record every outcome of that batch in one more.

Two write transactions per batch (not two per mail) is what lets the sender keep up while the
ingest writer holds SQLite's lock most of the time. A leased row (`claimed_until` in the
future) is taken by no other sender; PostgreSQL also skips rows another sender is claiming
right now (`FOR UPDATE SKIP LOCKED`). A lease that runs out (the sender died mid-batch) makes
the row due again: recording a mail as sent must not be lost, or it goes out twice.

Several instances (issue 17): the claim records the claiming instance (`claimed_by`) and
commits before any of the batch is sent: the attempt is on record first. A row taken over
from another instance after its lease ran out was therefore in flight when that instance died:
it may or may not have reached the smarthost (an SMTP client cannot ask). It is sent again
(at least once beats never) and counted as "in doubt" (`taken_over`, the
mailgate_outbound_in_doubt metric, an `outbox.in_doubt` log line). The sender records
outcomes every few mails (Sender's `settle_every`), which keeps that window to the mails
between the smarthost's 250 and the next record.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Integer, bindparam, func, or_, update
from sqlalchemy import select as sa_select
from sqlmodel import Session

from mailgate import logs
from mailgate.clock import Clock
from mailgate.store.compiled import Statement, session_connection
from mailgate.store.models import Outbox

if TYPE_CHECKING:
    from mailgate.services.outbox import MailSettings


def sendable() -> ColumnElement[bool]:
    """THE CLAIM CONDITION: which queued rows hold a mail the sender can put on the wire.

    A row held for an agent digest has no bytes and is never sent as it is."""
    return or_(Outbox.params != "", func.length(Outbox.raw) > 0)  # params, or pre-0003 bytes


_TABLE: Any = Outbox.__table__  # type: ignore[attr-defined]
_NOW = bindparam("now", type_=_TABLE.c.next_attempt_at.type)


def _due() -> Any:
    """The claim's SELECT: due rows, oldest first, `limit` of them."""
    t = _TABLE
    return (
        sa_select(t)
        .where(
            t.c.status == "queued",
            t.c.next_attempt_at <= _NOW,
            sendable(),
            or_(t.c.claimed_until.is_(None), t.c.claimed_until < _NOW),
        )
        .order_by(t.c.id)
        .limit(bindparam("limit", type_=Integer))
    )


# Built once (the sender's claims and records go through serve's single writer): the SELECT
# compiled once per dialect and run on the session's DBAPI connection (store/compiled.py),
# PostgreSQL's skipping rows another sender is claiming; the UPDATEs, whose IN lists
# SQLAlchemy expands per call, kept as statements its compiled cache finds again.
_CLAIM = Statement({"postgresql": _due().with_for_update(skip_locked=True), "sqlite": _due()})
_IDS = _TABLE.c.id.in_(bindparam("ids", expanding=True))
_LEASE = (
    update(_TABLE)
    .where(_IDS)
    .values(claimed_until=bindparam("claimed_until"), claimed_by=bindparam("claimed_by"))
)
# Not twice: a batch recorded again (its first answer lost) keeps its count.
_SENT = (
    update(_TABLE)
    .where(_IDS, _TABLE.c.status != "sent")
    .values(
        status="sent", sent_at=bindparam("now"), claimed_until=None,
        attempts=_TABLE.c.attempts + 1,
    )
)  # fmt: skip
_RELEASED = update(_TABLE).where(_IDS).values(claimed_until=None)
_BY_ID = _TABLE.c.id == bindparam("oid")
_RETRY = (
    update(_TABLE)
    .where(_BY_ID)
    .values(
        attempts=bindparam("attempts"), claimed_until=None, last_error=bindparam("error"),
        next_attempt_at=bindparam("due"),
    )
)  # fmt: skip
_FAIL = (
    update(_TABLE)
    .where(_BY_ID)
    .values(
        status="failed", attempts=bindparam("attempts"), claimed_until=None,
        last_error=bindparam("error"),
    )
)  # fmt: skip


class Delivery(StrEnum):
    """What a transport did with one mail of a batch."""

    SENT = "sent"
    TEMPORARY = "temporary"  # 4xx, network: try again later, with backoff
    PERMANENT = "permanent"  # 5xx: never going to work for this row
    SKIPPED = "skipped"  # not tried (stopping, lease running out): given back, no attempt counted


@dataclass(frozen=True)
class Attempt:
    delivery: Delivery
    error: str = ""


SENT = Attempt(Delivery.SENT)
SKIPPED = Attempt(Delivery.SKIPPED)


@dataclass(frozen=True)
class OutboundMail:
    """What a transport needs to deliver one mail."""

    envelope_from: str
    to_addr: str
    raw: bytes


@dataclass(frozen=True)
class Outcome:
    """One row's result, as the sender hands it to `settle`."""

    outbox_id: int
    attempts: int  # the row's attempts before this one
    attempt: Attempt


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    """A claimed outbox row: its columns, read-only (the sender only reads them). Building an
    ORM `Outbox` (SQLModel, pydantic, SQLAlchemy state) for each claimed row cost a tenth of
    the sender process's CPU, and serve's writer built one per row too."""

    id: int | None
    kind: str
    to_addr: str
    subject: str
    ticket_id: int | None
    message_id: str
    envelope_from: str
    raw: bytes
    params: str
    automatic: bool
    status: str
    attempts: int
    next_attempt_at: datetime
    claimed_until: datetime | None
    claimed_by: str
    last_error: str
    created_at: datetime
    sent_at: datetime | None
    reason: str
    first_contact: bool


class OutboxQueue:
    """Claiming and settling rows for the sender worker; one short transaction per batch."""

    def __init__(
        self,
        db: Any,
        settings: MailSettings,
        clock: Clock,
        lease_seconds: float = 300,
        instance: str = "",
        on_in_doubt: Callable[[int], None] | None = None,
    ) -> None:
        self.db = db
        self.instance = instance
        # Told how many rows of a claim were leased before and never recorded (metrics).
        self.on_in_doubt = on_in_doubt
        self.settings = settings
        self.clock = clock
        self.lease = timedelta(seconds=lease_seconds)
        self.rng = random.Random()

    def claim_due(self, limit: int = 100) -> list[ClaimedRow]:
        """Rows due now, leased to this worker so no other sender takes them meanwhile."""
        with self.db.write() as session:
            return self.claim_in(session, limit)

    def claim_in(self, session: Session, limit: int) -> list[ClaimedRow]:
        """`claim_due` as a job in the caller's write transaction (e.g. a group commit's)."""
        return [ClaimedRow(**row) for row in self.claim_columns_in(session, limit)]

    def claim_columns_in(self, session: Session, limit: int) -> list[dict[str, Any]]:
        """The claim as plain columns, one Core SELECT and one UPDATE: what serve hands the
        sender's process (no ORM object per row in the single writer's transaction)."""
        now = self.clock.now()
        rows = _CLAIM.mappings(session, {"now": now, "limit": limit})
        # Leased before (claimed_until set) and never recorded: its sender died mid-batch.
        in_doubt = [r for r in rows if r["claimed_until"] is not None]
        for row in in_doubt:
            logs.warning("outbox.in_doubt", outbox=row["id"], to=row["to_addr"], kind=row["kind"],
                         claimed_by=row["claimed_by"], ticket=row["ticket_id"])  # fmt: skip
        if in_doubt and self.on_in_doubt is not None:
            self.on_in_doubt(len(in_doubt))
        if rows:
            lease = {"claimed_until": now + self.lease, "claimed_by": self.instance}
            session_connection(session).execute(_LEASE, {"ids": [r["id"] for r in rows], **lease})
            for row in rows:
                row.update(lease)
        return rows

    def settle(self, outcomes: Sequence[Outcome]) -> dict[int, str]:
        """Record a whole batch in one transaction. Returns each row's new status: "sent",
        "queued" (retried later, or given back untried) or "failed".

        Raises TempFailure when the database is unavailable: nothing is recorded then, and the
        caller retries the same call."""
        with self.db.write() as session:
            return self.settle_in(session, outcomes)

    def settle_in(self, session: Session, outcomes: Sequence[Outcome]) -> dict[int, str]:
        """`settle` as a job in the caller's write transaction (e.g. a group commit's)."""
        now = self.clock.now()
        cfg = self.settings
        sent: list[int] = []
        released: list[int] = []
        retries: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        statuses: dict[int, str] = {}
        for o in outcomes:
            attempts = o.attempts + 1
            kind = o.attempt.delivery
            if kind is Delivery.SENT:
                sent.append(o.outbox_id)
                statuses[o.outbox_id] = "sent"
            elif kind is Delivery.SKIPPED:
                released.append(o.outbox_id)
                statuses[o.outbox_id] = "queued"
            elif kind is Delivery.TEMPORARY and attempts < cfg.max_attempts:
                delay = _backoff(attempts, cfg.retry_base_seconds, cfg.retry_max_seconds, self.rng)
                retries.append(
                    {
                        "oid": o.outbox_id,
                        "attempts": attempts,
                        "error": o.attempt.error[:1000],
                        "due": now + timedelta(seconds=delay),
                    }
                )
                statuses[o.outbox_id] = "queued"
            else:
                error = o.attempt.error
                if kind is Delivery.TEMPORARY:
                    error = f"gave up after {attempts} attempts: {error}"
                failures.append({"oid": o.outbox_id, "attempts": attempts, "error": error[:1000]})
                statuses[o.outbox_id] = "failed"
        conn = session_connection(session)
        if sent:
            conn.execute(_SENT, {"ids": sent, "now": now})
        if released:
            conn.execute(_RELEASED, {"ids": released})
        if retries:
            conn.execute(_RETRY, retries)
        if failures:
            conn.execute(_FAIL, failures)
        return statuses


def _backoff(attempts: int, base: float, cap: float, rng: random.Random) -> float:
    """Capped exponential backoff with full jitter (arq/dramatiq style)."""
    ceiling = min(cap, base * (2 ** max(0, attempts - 1)))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)
