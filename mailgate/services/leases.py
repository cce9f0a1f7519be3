"""Leases: things only one instance may do at a time (each scheduled job, each IMAP mailbox),
kept as rows of the `lease` table so they work on SQLite and PostgreSQL alike and an operator
can read them (`SELECT * FROM lease`).

A lease is held by one instance id until `expires_at`. Its holder renews it well before then
(every third of its length); another instance takes it only once it has run out, so an
instance that dies (SIGKILL, power cut, partition) hands its leases over within one lease
length plus one renewal period. A clean shutdown releases them at once.

Taking and renewing is one conditional UPDATE (holder is me, or the lease ran out) or, for a
name never seen, one INSERT that a concurrent taker's conflict turns into "not mine": no
check-then-write race on either database. The holder also keeps a local deadline on the
monotonic clock (when it last renewed + the length, minus a margin): if renewing fails (the
database is down), it stops counting itself the holder before anyone else can take over.

Work done under a lease may also `fence()` its own write transaction: the row is locked and
checked to still be ours, so a holder that stalled past its lease (a long GC pause, a frozen
VM) cannot commit work its successor is doing too.

Times are the instances' clocks (UTC): hosts must keep them in step (NTP), with a skew well
under the lease length.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, insert, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from mailgate import logs
from mailgate.clock import Clock, as_utc
from mailgate.errors import TempFailure
from mailgate.store.models import Lease


class LeaseLost(Exception):
    """Work under a lease found the lease no longer ours: its transaction must roll back."""


def default_instance_id() -> str:
    """hostname:pid, unique among running processes (a restart is a new instance)."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Holding:
    name: str
    holder: str
    expires_at: datetime
    generation: int


class Leases:
    """Takes, renews and releases leases for one instance."""

    def __init__(
        self,
        db: object,
        clock: Clock,
        instance: str,
        seconds: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.clock = clock
        self.instance = instance
        self.length = timedelta(seconds=seconds)
        self.seconds = seconds
        self.monotonic = monotonic
        self._until: dict[str, float] = {}  # name -> local monotonic deadline while held
        self._lock = threading.Lock()

    # -- the local view -------------------------------------------------------------------

    def held(self, name: str) -> bool:
        """Do we hold `name` now (by the local deadline, which errs on the safe side)?"""
        with self._lock:
            until = self._until.get(name)
        return until is not None and self.monotonic() < until

    def holds(self) -> list[str]:
        """The names this instance holds now, sorted (for /healthz and /metrics)."""
        now = self.monotonic()
        with self._lock:
            return sorted(n for n, until in self._until.items() if now < until)

    # -- the database ---------------------------------------------------------------------

    def acquire(self, names: Iterable[str]) -> set[str]:
        """Take or renew every name we can, in one transaction; the names we hold after it.

        Raises TempFailure when the database is unavailable (then nothing changed locally:
        the local deadlines run out by themselves)."""
        names = list(dict.fromkeys(names))
        started = self.monotonic()
        got: set[str] = set()
        with self.db.write() as session:  # type: ignore[attr-defined]
            for name in names:
                if self._take(session, name):
                    got.add(name)
        # Counted from before the transaction began: the row's expiry is at least that late.
        margin = min(2.0, self.seconds / 10)
        deadline = started + self.seconds - margin
        with self._lock:
            for name in names:
                was = name in self._until and started < self._until[name]
                if name in got:
                    self._until[name] = deadline
                    if not was:
                        logs.info("lease.taken", name=name, instance=self.instance)
                elif name in self._until:
                    del self._until[name]
                    if was:
                        logs.warning("lease.lost", name=name, instance=self.instance)
        return got

    def _take(self, session: Session, name: str) -> bool:
        now = self.clock.now()
        expires = now + self.length
        table = Lease.__table__  # type: ignore[attr-defined]
        conn = session.connection()
        mine = table.c.holder == self.instance
        changed = conn.execute(
            update(table)
            .where(table.c.name == name, mine | (table.c.expires_at < now))
            .values(
                holder=self.instance,
                expires_at=expires,
                acquired_at=case((mine, table.c.acquired_at), else_=now),
                generation=case((mine, table.c.generation), else_=table.c.generation + 1),
            )
        ).rowcount
        if changed:
            return True
        exists = conn.execute(select(table.c.name).where(table.c.name == name)).first()
        if exists is not None:
            return False  # someone else's, still running
        try:
            with conn.begin_nested():  # a concurrent first taker wins; we then hold nothing
                row = {"name": name, "holder": self.instance, "expires_at": expires}
                conn.execute(insert(table).values(**row, acquired_at=now, generation=1))
        except IntegrityError:
            return False
        return True

    def release(self, names: Iterable[str] | None = None) -> None:
        """Give leases back at once (clean shutdown): another instance takes them on its next
        renewal instead of waiting for them to run out."""
        with self._lock:
            chosen = list(self._until) if names is None else list(names)
            for name in chosen:
                self._until.pop(name, None)
        if not chosen:
            return
        table = Lease.__table__  # type: ignore[attr-defined]
        past = self.clock.now() - timedelta(seconds=1)
        try:
            with self.db.write() as session:  # type: ignore[attr-defined]
                session.connection().execute(
                    update(table)
                    .where(col(table.c.name).in_(chosen), table.c.holder == self.instance)
                    .values(expires_at=past)
                )
        except TempFailure as exc:  # they run out by themselves
            logs.warning("lease.release_failed", error=str(exc))
            return
        for name in chosen:
            logs.info("lease.released", name=name, instance=self.instance)

    def fence(self, session: Session, name: str) -> None:
        """Inside a write transaction doing work under `name`: lock the lease row and check it
        is still ours and running; raise LeaseLost otherwise (the caller rolls back)."""
        table = Lease.__table__  # type: ignore[attr-defined]
        query = select(table.c.holder, table.c.expires_at).where(table.c.name == name)
        if session.get_bind().dialect.name != "sqlite":  # SQLite: the write lock is global
            query = query.with_for_update()
        row = session.connection().execute(query).first()
        if row is None or row.holder != self.instance or as_utc(row.expires_at) <= self.clock.now():
            raise LeaseLost(name)

    def table(self) -> list[Holding]:
        """Every lease row (who holds what, until when): `mailgate` operators' view."""
        with self.db.read() as session:  # type: ignore[attr-defined]
            rows = session.exec(select(Lease).order_by(col(Lease.name))).all()
        return [Holding(r.name, r.holder, as_utc(r.expires_at), r.generation) for r in rows]


class LeaseKeeper:
    """A thread that keeps trying to take, and keeps renewing, a set of names; `on_taken(name)`
    is called (in this thread) each time one becomes ours, e.g. to run a job at once."""

    def __init__(
        self,
        leases: Leases,
        names: Iterable[str],
        on_taken: Callable[[str], None] | None = None,
        every: float | None = None,
    ) -> None:
        self.leases = leases
        self.names = list(names)
        self.on_taken = on_taken
        self.every = every if every is not None else max(0.05, leases.seconds / 3)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> set[str]:
        """One round: take/renew; tell `on_taken` about names newly held."""
        before = set(self.leases.holds())
        try:
            got = self.leases.acquire(self.names)
        except TempFailure as exc:
            logs.warning("lease.renew_failed", error=str(exc))
            return set(self.leases.holds())
        if self.on_taken is not None:
            for name in sorted(got - before):
                try:
                    self.on_taken(name)
                except Exception:  # fault barrier: the lease stays, the next run catches up
                    logs.error("lease.on_taken_failed", name=name, exc_info=True)
        return got

    def start(self) -> None:
        if not self.names:
            return
        self.tick()  # before serve says ready: what we can hold, we hold from the start
        self._thread = threading.Thread(target=self._run, name="leases", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.tick()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self.leases.release(self.names)
