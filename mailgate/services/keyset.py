"""Keyset ("seek") pagination over rows ordered by (a timestamp, the id).

A page is found by where it starts, not by how many rows come before it: "the 25 rows older
than (t, id)" walks an index from that point, so page 400 costs what page 1 costs, and a row
added meanwhile shifts nothing. A cursor is that (t, id) pair, encoded so it reads as one
opaque token in a URL. It grants nothing: the caller always restricts the query to what the
viewer may see, so a forged cursor only moves the viewer within their own rows. Anything
that is not a cursor this module could have made raises BadCursor (a 400, never a 500).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlmodel import Session

from mailgate.clock import as_utc

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_MICROS = -62135596800 * 10**6  # 0001-01-01: what datetime and both databases accept
MAX_MICROS = 253402300799 * 10**6  # 9999-12-31 23:59:59
ID_MAX = 2**31 - 1  # an INTEGER column on PostgreSQL
CURSOR_MAX = 48  # characters; a real one is about 30
_PLAIN = re.compile(r"1\.(-?[0-9]{1,20})\.([0-9]{1,10})")
_TOKEN = re.compile(rf"[A-Za-z0-9_-]{{4,{CURSOR_MAX}}}")

T = TypeVar("T")


class BadCursor(ValueError):
    """A cursor this module did not make (truncated, edited, from another site)."""


@dataclass(frozen=True)
class Key:
    """A row's place in the order: its timestamp (UTC) and its id, the tie-breaker."""

    at: datetime
    id: int


def encode(key: Key) -> str:
    micros = (as_utc(key.at) - EPOCH) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(f"1.{micros}.{key.id}".encode()).decode().rstrip("=")


def decode(token: str) -> Key:
    if not _TOKEN.fullmatch(token):
        raise BadCursor("not a cursor")
    try:
        plain = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BadCursor("not a cursor") from exc
    found = _PLAIN.fullmatch(plain)
    if not found:
        raise BadCursor("not a cursor")
    micros, row_id = int(found.group(1)), int(found.group(2))
    if not (MIN_MICROS <= micros <= MAX_MICROS and 0 <= row_id <= ID_MAX):
        raise BadCursor("cursor out of range")
    return Key(EPOCH + timedelta(microseconds=micros), row_id)


@dataclass(frozen=True)
class Window(Generic[T]):
    """One page of rows in display order, and where it sits among all of them.

    `newer` counts the matching rows newer than the page's newest row, `older` those older
    than its oldest; either is non-zero exactly when there is a page that way."""

    rows: list[T]
    total: int
    newer: int
    older: int
    newest: Key | None  # of the rows shown: where the next page towards them starts
    oldest: Key | None


class Seek:
    """Pages of one query, newest or oldest first, in a constant number of statements: the
    page, and one pass over the index that counts what lies on either side of it."""

    def __init__(
        self,
        source: Any,
        ts: Any,
        row_id: Any,
        where: Sequence[ColumnElement[bool]],
        key_of: Callable[[Any], Key],
    ) -> None:
        self.source, self.ts, self.id = source, ts, row_id
        self.where, self.key_of = list(where), key_of

    def newer_than(self, key: Key) -> ColumnElement[bool]:
        # The first term alone bounds the index range; the second settles the ties.
        return and_(self.ts >= key.at, or_(self.ts > key.at, self.id > key.id))

    def older_than(self, key: Key) -> ColumnElement[bool]:
        return and_(self.ts <= key.at, or_(self.ts < key.at, self.id < key.id))

    def page(
        self,
        session: Session,
        columns: Sequence[Any],
        size: int,
        *,
        older_than: Key | None = None,
        newer_than: Key | None = None,
        newest_first: bool = True,
    ) -> Window[Any]:
        """The `size` rows just older than `older_than`, or just newer than `newer_than`,
        or else the newest `size` rows. A short page of newer rows is topped up to the
        newest page, so every page but the oldest is full."""
        base = select(*columns).select_from(self.source).where(*self.where)
        desc = (self.ts.desc(), self.id.desc())
        if newer_than is not None:  # read upwards from the cursor, then turn it round
            up = base.where(self.newer_than(newer_than)).order_by(self.ts, self.id)
            rows = list(session.execute(up.limit(size)))[::-1]
            if len(rows) < size:
                rows = list(session.execute(base.order_by(*desc).limit(size)))
        elif older_than is not None:
            down = base.where(self.older_than(older_than)).order_by(*desc)
            rows = list(session.execute(down.limit(size)))
        else:
            rows = list(session.execute(base.order_by(*desc).limit(size)))
        if not rows:  # past the end (a stale or forged cursor), or nothing at all
            total = int(
                session.execute(
                    select(func.count()).select_from(self.source).where(*self.where)
                ).scalar_one()
            )
            return Window([], total, total, 0, None, None)
        newest, oldest = self.key_of(rows[0]), self.key_of(rows[-1])
        total, newer = self._counts(session, newest)
        return Window(
            rows=rows if newest_first else rows[::-1],
            total=total,
            newer=newer,
            older=max(0, total - newer - len(rows)),
            newest=newest,
            oldest=oldest,
        )

    def _counts(self, session: Session, newest: Key) -> tuple[int, int]:
        """All matching rows, and those newer than the page: one pass over the index."""
        newer = func.coalesce(func.sum(case((self.newer_than(newest), 1), else_=0)), 0)
        total, count_newer = session.execute(
            select(func.count(), newer).select_from(self.source).where(*self.where)
        ).one()
        return int(total), int(count_newer)
