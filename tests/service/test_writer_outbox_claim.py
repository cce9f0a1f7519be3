"""OutboxQueue's claim and records, built once (the claim's SELECT run on the DBAPI cursor):
the rows and values SQLAlchemy's own statements, built per call as they were, give; on SQLite
and PostgreSQL (MAILGATE_TEST_DATABASE_URL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import or_
from sqlalchemy import select as sa_select

from mailgate.clock import FixedClock, as_utc
from mailgate.services.outbox import MailSettings
from mailgate.services.outbox_queue import (
    SENT,
    SKIPPED,
    Attempt,
    Delivery,
    OutboxQueue,
    Outcome,
    sendable,
)
from mailgate.store.db import Database, insert_values
from mailgate.store.models import Outbox

NOW = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
TABLE: Any = Outbox.__table__  # type: ignore[attr-defined]


@pytest.fixture
def db(service_database_url: str) -> Iterator[Database]:
    database = Database(service_database_url)
    yield database
    database.dispose()


def _queue(db: Database) -> OutboxQueue:
    settings = MailSettings(
        hostname="mg.test", support_address="support@mg.test", from_name="S", base_url="http://x"
    )
    return OutboxQueue(db, settings, FixedClock(NOW), lease_seconds=300, instance="me:1")


def _rows(db: Database) -> dict[str, int]:
    """Rows in every state the claim tells apart: due or not, held (nothing to send), leased
    (running or run out), sent, failed, a row of bytes from before params."""
    s = timedelta(seconds=1)
    kinds: dict[str, dict[str, Any]] = {
        "due": {},
        "due_later_id": {},
        "not_yet": {"next_attempt_at": NOW + s},
        "due_now_exactly": {"next_attempt_at": NOW},
        "held": {"params": ""},
        "bytes_only": {"params": "", "raw": b"\x00raw"},
        "leased": {"claimed_until": NOW + s, "claimed_by": "other:2"},
        "lease_ran_out": {"claimed_until": NOW - s, "claimed_by": "other:2", "attempts": 3},
        "sent": {"status": "sent", "sent_at": NOW - s},
        "failed": {"status": "failed"},
    }
    ids = {}
    with db.write() as session:
        for i, (name, extra) in enumerate(kinds.items()):
            values = {
                "kind": "confirmation", "to_addr": f"{name}@client.example",
                "message_id": f"mg.{i}@mg.test", "raw": b"", "params": '{"v": "été"}',
                "automatic": True, "next_attempt_at": NOW - s, "created_at": NOW - 2 * s,
                "ticket_id": None, **extra,
            }  # fmt: skip
            ids[name] = insert_values(session, Outbox, **values).id or 0
    return ids


def _as_before(db: Database, limit: int) -> list[dict[str, Any]]:
    """The claim's SELECT as it was built and run through SQLAlchemy on every call."""
    query = (
        sa_select(TABLE)
        .where(
            TABLE.c.status == "queued",
            TABLE.c.next_attempt_at <= NOW,
            sendable(),
            or_(TABLE.c.claimed_until.is_(None), TABLE.c.claimed_until < NOW),
        )
        .order_by(TABLE.c.id)
        .limit(limit)
    )
    with db.read() as session:
        return [dict(r._mapping) for r in session.connection().execute(query)]


def _all(db: Database) -> dict[int, dict[str, Any]]:
    with db.read() as session:
        return {r.id: dict(r._mapping) for r in session.connection().execute(sa_select(TABLE))}


@pytest.mark.parametrize("limit", [100, 2])
def test_the_claim_is_what_sqlalchemy_selected_leased(db: Database, limit: int) -> None:
    ids = _rows(db)
    expected = _as_before(db, limit)
    assert expected  # the test would prove nothing with no row due
    doubts: list[int] = []
    queue = _queue(db)
    queue.on_in_doubt = doubts.append
    with db.write() as session:
        got = queue.claim_columns_in(session, limit)
    until = NOW + timedelta(seconds=300)
    for row in expected:
        row.update(claimed_until=until, claimed_by="me:1")
    assert [list(r) for r in got] == [list(r) for r in expected]  # same columns, same order
    for mine, theirs in zip(got, expected, strict=True):
        for name, value in theirs.items():
            assert mine[name] == value and type(mine[name]) is type(value), name
    claimed = {r["id"] for r in got}
    if limit == 100:
        names = {"due", "due_later_id", "due_now_exactly", "bytes_only", "lease_ran_out"}
        assert claimed == {ids[n] for n in names}
        assert doubts == [1]
    stored = _all(db)
    for row_id, row in stored.items():
        if row_id in claimed:
            assert as_utc(row["claimed_until"]) == until and row["claimed_by"] == "me:1"
        else:
            assert row["claimed_by"] in ("", "other:2")
    with db.write() as session:  # leased now: nothing more to claim until the lease runs out
        again = queue.claim_columns_in(session, 100)
    assert not claimed & {r["id"] for r in again}


def test_records_write_what_the_statements_built_per_call_wrote(db: Database) -> None:
    ids = _rows(db)
    queue = _queue(db)
    with db.write() as session:
        claimed = [r["id"] for r in queue.claim_columns_in(session, 100)]
    sent, skipped, retried, failed, gave_up = claimed
    outcomes = [
        Outcome(sent, 0, SENT),
        Outcome(skipped, 0, SKIPPED),
        Outcome(retried, 0, Attempt(Delivery.TEMPORARY, "451 later")),
        Outcome(failed, 0, Attempt(Delivery.PERMANENT, "550 no")),
        Outcome(gave_up, 11, Attempt(Delivery.TEMPORARY, "451 again")),
        Outcome(ids["sent"], 4, SENT),  # recorded again (an answer lost): counted once
    ]
    before = _all(db)
    with db.write() as session:
        statuses = queue.settle_in(session, outcomes)
    assert statuses == {
        sent: "sent", skipped: "queued", retried: "queued", failed: "failed",
        gave_up: "failed", ids["sent"]: "sent",
    }  # fmt: skip
    # What the statements as they were built on every call write, on a copy of the rows.
    expected = {k: dict(v) for k, v in before.items()}
    expected[sent].update(status="sent", sent_at=NOW, claimed_until=None)
    expected[sent]["attempts"] += 1
    expected[skipped].update(claimed_until=None)
    expected[failed].update(status="failed", attempts=1, claimed_until=None, last_error="550 no")
    expected[gave_up].update(
        status="failed", attempts=12, claimed_until=None,
        last_error="gave up after 12 attempts: 451 again",
    )  # fmt: skip
    after = _all(db)
    due = as_utc(after[retried]["next_attempt_at"])
    assert NOW + timedelta(seconds=30) <= due <= NOW + timedelta(seconds=60)  # backoff, jitter
    expected[retried].update(
        attempts=1, claimed_until=None, last_error="451 later",
        next_attempt_at=after[retried]["next_attempt_at"],
    )  # fmt: skip
    for row_id, row in after.items():
        for name, value in row.items():
            want = expected[row_id][name]
            if isinstance(value, datetime) and isinstance(want, datetime):
                assert as_utc(value) == as_utc(want), (row_id, name)
            else:
                assert value == want, (row_id, name)


def test_an_empty_claim_and_empty_records_write_nothing(db: Database) -> None:
    queue = _queue(db)
    with db.write() as session:
        assert queue.claim_columns_in(session, 100) == []
        assert queue.settle_in(session, []) == {}
