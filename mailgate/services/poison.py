"""Poison mail: a message whose processing crashes must not be retried for ever by its MTA,
nor block the mail behind it. Each crash is counted per raw message (by sha256); after
MAX_CRASHES the ingest path quarantines it with the error instead of failing again."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from mailgate.store.models import IngestFailure

MAX_CRASHES = 3  # 451 twice (the MTA retries), quarantined and 250 at the third crash


def count_crash(session: Session, sha: str, error: str, now: datetime) -> int:
    """Record one more crash of the message with this sha256; returns the count so far."""
    row = session.get(IngestFailure, sha)
    if row is None:
        row = IngestFailure(raw_sha256=sha, attempts=0, last_error="", updated_at=now)
    row.attempts += 1
    row.last_error = error[:2000]
    row.updated_at = now
    session.add(row)
    session.flush()
    return row.attempts
