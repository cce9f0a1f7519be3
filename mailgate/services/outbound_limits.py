"""The outbound limits' queries: each one answers "may this mail go now?" from the outbox rows
(so limits survive restarts), and the figures /metrics shows of them. outbox.py decides what a
verdict does to the row (see its docstring for the rules and their defaults).

A row "not sent" was recorded without ever being handed to the sender: `status="failed"` and
`attempts=0` (a delivery failure always has attempts >= 1). Such rows never count towards a
cap: the caps count mail we put on the wire.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, or_
from sqlmodel import Session, col, select

from mailgate.clock import as_utc
from mailgate.store.models import Outbox, Suppression

DIGEST_KIND = "agent_digest"
# Exempt from the per-address caps: agents must hear of every ticket (their own limit is the
# digest), and the digest itself is that limit's outcome.
UNCAPPED_KINDS = frozenset({"agent_notification", "command_error", "agent_reply", DIGEST_KIND})

# Reason prefixes: what `outbox list` shows, what /metrics groups by, what queries select on.
AUTO_CAP = "auto-reply cap"
SUPPRESSED = "suppressed"
FIRST_CONTACT_CAP = "first-contact cap"
HELD_FOR_DIGEST = "digest: held"
IN_DIGEST = "digest: sent in outbox #"


def not_sent(status: str, attempts: int) -> bool:
    """A row recorded without ever being handed to the sender (over a cap, suppressed)."""
    return status == "failed" and attempts == 0


# not_sent() negated, in SQL.
WAS_QUEUED = or_(Outbox.status != "failed", Outbox.attempts > 0)

# A row the sender may claim: it has something to send, parameters to assemble it from
# (services/assemble.py) or the fixed bytes of a row queued before parameters existed. A row
# held for a digest or recorded not sent has neither, and is never sent as it is.
SENDABLE = or_(Outbox.params != "", func.length(Outbox.raw) > 0)


def auto_cap(
    session: Session, to_addr: str, now: datetime, per_hour: int, per_day: int
) -> tuple[str, str] | None:
    """RFC 3834 per-recipient caps. None if allowed; ("limit", "") when the day's notice is
    due; ("silent", reason) when suppressed or over a cap."""
    suppressed = session.get(Suppression, to_addr)
    if suppressed is not None and as_utc(suppressed.until) > now:
        until = as_utc(suppressed.until)
        return "silent", f"{SUPPRESSED}: bounced {suppressed.reason} until {until:%Y-%m-%d}"
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
            WAS_QUEUED,  # a mail we did not send is not one more mail to that address
        )
    ).one()
    if limited:
        return "silent", f"{AUTO_CAP}: {per_day}/day, limit notice sent"
    if today >= per_day:
        return "limit", ""
    if hour >= per_hour:
        return "silent", f"{AUTO_CAP}: {per_hour}/hour"  # no notice: heard from next hour
    return None


def first_contact_slot(session: Session, now: datetime, per_hour: int) -> datetime | None:
    """None to send now; else when the first-contact window has room again. The window counts
    rows by when they go out (`next_attempt_at`), so the rows it delays are spaced out too.

    One query, answered from ix_outbox_first_contact_due alone: the per_hour-th latest row of
    the window, if there is one. It walks min(per_hour, rows in the window) index entries: cheap
    at the default 200, but linear in the window if per_hour is set to hundreds of thousands."""
    nth_latest = session.exec(
        select(Outbox.next_attempt_at)
        .where(
            col(Outbox.first_contact).is_(True),
            Outbox.next_attempt_at > now - timedelta(hours=1),
            WAS_QUEUED,
        )
        .order_by(col(Outbox.next_attempt_at).desc())
        .offset(per_hour - 1)
        .limit(1)
    ).first()
    if nth_latest is None:
        return None
    # The per_hour-th latest row leaves the window an hour after it goes out.
    return max(now, as_utc(nth_latest) + timedelta(hours=1))


class FirstContactWindow:
    """`first_contact_slot` without a walk of the window for every mail.

    The rows in the window are counted once (a walk of at most `per_hour` index entries), and
    the room left is then spent mail by mail for `REFRESH` at most: rows only leave the window
    as time passes and a rolled-back mail gives its unit back to nobody, so the kept count can
    only be higher than the truth, never lower, and the cap holds. When no room is left, the
    exact query answers. With several instances sharing one database each keeps its own
    count: the cap may then be passed by what the others queued within `REFRESH`.
    Without this, raising the cap (say to 100,000 for a bulk import) made every first
    contact walk the whole window: quadratic work in the writer."""

    REFRESH = timedelta(seconds=5)

    def __init__(self, per_hour: int) -> None:
        self.per_hour = per_hour
        self._room = 0
        self._until: datetime | None = None
        self._lock = threading.Lock()

    def slot(self, session: Session, now: datetime) -> datetime | None:
        with self._lock:
            if self._until is not None and now < self._until and self._room > 0:
                self._room -= 1
                return None
            in_window = session.exec(
                select(func.count()).select_from(
                    select(Outbox.id)
                    .where(
                        col(Outbox.first_contact).is_(True),
                        Outbox.next_attempt_at > now - timedelta(hours=1),
                        WAS_QUEUED,
                    )
                    .limit(self.per_hour)
                    .subquery()
                )
            ).one()
            room = self.per_hour - in_window
            if room > 0:
                self._room, self._until = room - 1, now + self.REFRESH
                return None
            self._until = None
        return first_contact_slot(session, now, self.per_hour)


def digest_due(
    session: Session, to_addr: str, now: datetime, per_hour: int, wait_minutes: int
) -> datetime | None:
    """None to notify this agent now; else when the digest this notification joins is due."""
    alone = session.exec(
        select(func.count()).where(
            Outbox.to_addr == to_addr,
            Outbox.kind == "agent_notification",
            Outbox.created_at >= now - timedelta(hours=1),
            Outbox.reason == "",  # composed and sent one by one, not held for a digest
        )
    ).one()
    if alone < per_hour:
        return None
    pending = session.exec(
        select(func.min(Outbox.next_attempt_at)).where(
            Outbox.to_addr == to_addr,
            Outbox.status == "queued",
            col(Outbox.reason).startswith(HELD_FOR_DIGEST),
        )
    ).one()
    if pending is not None:
        return as_utc(pending)  # join the digest already on its way
    return now + timedelta(minutes=wait_minutes)


def outbox_figures(session: Session, now: datetime) -> dict[str, dict[str, float]]:
    """For /metrics (metrics.LABELLED_FIGURES): rows waiting, and rows never sent, by why."""
    reason = col(Outbox.reason)

    def when(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    first_contact, digest = session.exec(
        select(
            when(reason.startswith(FIRST_CONTACT_CAP) & (Outbox.next_attempt_at > now)),
            when(reason.startswith(HELD_FOR_DIGEST)),
        ).where(Outbox.status == "queued", reason != "")
    ).one()
    auto_reply_cap, suppressed = session.exec(
        select(when(reason.startswith(AUTO_CAP)), when(reason.startswith(SUPPRESSED))).where(
            Outbox.status == "failed", Outbox.attempts == 0
        )
    ).one()
    return {
        "outbox_delayed": {"first_contact": float(first_contact), "digest": float(digest)},
        "outbox_not_sent": {
            "auto_reply_cap": float(auto_reply_cap),
            "suppressed": float(suppressed),
        },
    }
