"""Receipts: one row per accepted delivery under a unique dedupe key.

Claimed with one `INSERT ... ON CONFLICT DO NOTHING RETURNING id` (SQLite >= 3.35 and
PostgreSQL): no look-up first, no savepoint, and two writers racing on the same key (an MTA
retry, another instance) can never both win: the unique constraint decides.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from mailgate.core.enums import Outcome, Step
from mailgate.store.compiled import Statement
from mailgate.store.models import RawMail, Receipt

_TABLE: Any = Receipt.__table__  # type: ignore[attr-defined]
_RAW: Any = RawMail.__table__  # type: ignore[attr-defined]


_CLAIMED = (
    "dedupe_key",
    "message_id",
    "recipient",
    "envelope_from",
    "channel",
    "raw_sha256",
    "outcome",
    "decided_by",
    "received_at",
)
# Compiled once and run on the session's DBAPI connection (store/compiled.py): the writer
# runs these three for every delivery.
_CLAIM = Statement(
    {
        name: dialect.insert(_TABLE)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(_TABLE.c.id)
        for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
    },
    column_keys=_CLAIMED,
)
# The same raw mail to several of our addresses (or claimed again after a crash) is one row.
_STORE_RAW = Statement(
    {
        name: dialect.insert(_RAW).on_conflict_do_nothing(index_elements=["sha256"])
        for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
    },
    column_keys=("sha256", "data"),
)
_READ_RAW = select(_RAW.c.data).where(_RAW.c.sha256 == bindparam("sha256"))
_DECIDE = Statement(
    update(_TABLE)
    .where(_TABLE.c.id == bindparam("receipt_id"))
    .values(
        outcome=bindparam("outcome"),
        ticket_id=bindparam("ticket_id"),
        decided_by=bindparam("decided_by"),
    )
)


def claim_receipt(
    session: Session,
    *,
    key: str,
    message_id: str,
    recipient: str,
    envelope_from: str,
    channel: str,
    sha: str,
    now: datetime,
) -> int | None:
    """The new receipt's id, or None when this key was already recorded: create nothing."""
    values = {
        "dedupe_key": key,
        "message_id": message_id[:998],
        "recipient": recipient,
        "envelope_from": envelope_from[:320],
        "channel": channel,
        "raw_sha256": sha,
        "outcome": Outcome.PENDING.value,
        "decided_by": "",
        "received_at": now,
    }
    return _CLAIM.scalar(session, values)


def record_decision(
    session: Session, receipt_id: int, outcome: Outcome, ticket_id: int | None, step: Step
) -> None:
    _DECIDE.rows(
        session,
        {
            "receipt_id": receipt_id,
            "outcome": outcome.value,
            "ticket_id": ticket_id,
            "decided_by": step.value,
        },
    )


def store_raw(session: Session, sha: str, raw: bytes) -> None:
    """Keep a small raw message in this transaction: durable with the receipt's commit."""
    _STORE_RAW.rows(session, {"sha256": sha, "data": raw})


def stored_raw(session: Session, sha: str) -> bytes | None:
    """The raw message kept by store_raw, or None (a big one: it is a blob)."""
    found = session.connection().execute(_READ_RAW, {"sha256": sha}).scalar()
    return None if found is None else bytes(found)
