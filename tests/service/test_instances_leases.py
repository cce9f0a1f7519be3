"""Several instances on one database (issue 17): leases for the jobs and the IMAP mailboxes,
the fence that keeps a job from running twice, and outbox rows taken over after their lease.

Two `Leases` (two instance ids) on one real database (SQLite, and PostgreSQL when
MAILGATE_TEST_DATABASE_URL is set) stand for two `serve` processes; the test clock moves time.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlmodel import select

from mailgate.adapters.scheduler import Scheduler
from mailgate.services.leases import LeaseKeeper, LeaseLost, Leases
from mailgate.services.outbox_queue import OutboxQueue
from mailgate.store.models import Lease, Outbox, RateEvent
from tests.support.inprocess import InProcess


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def two(service: InProcess, seconds: float = 30.0) -> tuple[Leases, Leases, Monotonic]:
    mono = Monotonic()
    a = Leases(service.app.db, service.clock, "host-a:1", seconds, monotonic=mono)
    b = Leases(service.app.db, service.clock, "host-b:2", seconds, monotonic=mono)
    return a, b, mono


def test_one_holder_at_a_time_and_takeover_after_expiry(service: InProcess) -> None:
    a, b, mono = two(service)
    assert a.acquire(["job:close", "imap:box"]) == {"job:close", "imap:box"}
    assert b.acquire(["job:close", "imap:box"]) == set()
    assert a.holds() == ["imap:box", "job:close"] and b.holds() == []
    # a renews within its lease: still a's, b still waits.
    service.clock.advance(seconds=20)
    mono.now += 20
    assert a.acquire(["job:close"]) == {"job:close"}
    service.clock.advance(seconds=20)
    mono.now += 20
    assert b.acquire(["job:close"]) == set()  # renewed 20 s ago: 10 s left
    # a dies (no more renewals): after the lease, b takes it; the generation moves on.
    service.clock.advance(seconds=11)
    mono.now += 11
    assert not a.held("job:close")  # a's own deadline ran out first
    assert b.acquire(["job:close"]) == {"job:close"}
    with service.app.db.read() as session:
        row = session.get(Lease, "job:close")
        assert row is not None and row.holder == "host-b:2" and row.generation == 2
    # a comes back: it is b's now.
    assert a.acquire(["job:close"]) == set()
    assert not a.held("job:close") and b.held("job:close")


def test_release_hands_over_at_once(service: InProcess) -> None:
    a, b, _ = two(service)
    a.acquire(["job:cleanup"])
    a.release()
    assert a.holds() == []
    assert b.acquire(["job:cleanup"]) == {"job:cleanup"}


def test_the_local_deadline_runs_out_before_the_row(service: InProcess) -> None:
    """A holder that cannot renew (database down) stops counting itself the holder before
    another instance can take the lease over."""
    a, _, mono = two(service, seconds=30)
    a.acquire(["imap:box"])
    mono.now += 27.9
    assert a.held("imap:box")
    mono.now += 0.2  # 28.1 s: the margin (2 s) before the row's 30 s
    assert not a.held("imap:box")


def test_first_takers_racing_get_one_holder(service: InProcess) -> None:
    instances = [Leases(service.app.db, service.clock, f"host:{i}", 30.0) for i in range(4)]
    barrier = threading.Barrier(len(instances))
    got: dict[str, set[str]] = {}

    def take(leases: Leases) -> None:
        barrier.wait()
        got[leases.instance] = leases.acquire(["job:digests"])

    threads = [threading.Thread(target=take, args=(x,)) for x in instances]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(k for k, v in got.items() if v) != []
    assert len([k for k, v in got.items() if v == {"job:digests"}]) == 1


def _old_rate_events(service: InProcess, n: int) -> None:
    with service.app.db.write() as session:
        for i in range(n):
            session.add(RateEvent(key=f"k{i}", created_at=service.clock.now() - timedelta(days=3)))


def _rate_events(service: InProcess) -> int:
    with service.app.db.read() as session:
        return len(session.exec(select(RateEvent)).all())


def test_a_job_under_a_lost_lease_rolls_back(service: InProcess) -> None:
    a, b, mono = two(service)
    a.acquire(["job:cleanup"])
    service.clock.advance(seconds=31)
    mono.now += 31
    b.acquire(["job:cleanup"])
    _old_rate_events(service, 3)
    # a stalled past its lease and still believes it holds the job: the fence says no.
    with pytest.raises(LeaseLost):
        service.app.jobs.run("cleanup", service.clock.now(), lambda s: a.fence(s, "job:cleanup"))
    assert _rate_events(service) == 3
    done = service.app.jobs.run("cleanup", service.clock.now(), lambda s: b.fence(s, "job:cleanup"))
    assert done == 3 and _rate_events(service) == 0


def test_only_the_holder_schedules_and_a_taker_catches_up(service: InProcess) -> None:
    a, b, mono = two(service)
    sched_a = Scheduler(service.app.jobs, service.clock, leases=a)
    sched_b = Scheduler(service.app.jobs, service.clock, leases=b)
    names = sched_a.lease_names()
    LeaseKeeper(a, names).tick()
    LeaseKeeper(b, names).tick()
    _old_rate_events(service, 2)
    assert sched_b.run_job("cleanup") is None  # b holds nothing
    assert _rate_events(service) == 2
    sched_a._catch_up()  # a took every job at its first tick: runs them now
    assert _rate_events(service) == 0
    # a dies; after its lease b takes every job and runs each at once.
    _old_rate_events(service, 2)
    service.clock.advance(seconds=31)
    mono.now += 31
    assert LeaseKeeper(b, names).tick() == set(names)
    sched_b._catch_up()
    assert _rate_events(service) == 0
    assert b.holds() == sorted(names)


def test_outbox_rows_of_a_dead_sender_are_taken_over_in_doubt(service: InProcess) -> None:
    settings = service.app.outbox.settings
    doubts: list[int] = []
    qa = OutboxQueue(service.app.db, settings, service.clock, lease_seconds=10, instance="a")
    qb = OutboxQueue(service.app.db, settings, service.clock, lease_seconds=10, instance="b",
                     on_in_doubt=doubts.append)  # fmt: skip
    from tests.conftest import make_mail
    from tests.support.inprocess import wire_bytes

    for i in range(3):
        mail = make_mail(sender=f"c{i}@client.example", message_id=f"<m{i}@client.example>")
        service.ingest(wire_bytes(mail), ["support@example.com"], f"c{i}@client.example")
    claimed = qa.claim_due()
    assert len(claimed) == 6  # a confirmation and an activation link each
    with service.app.db.read() as session:
        assert {r.claimed_by for r in session.exec(select(Outbox)).all()} == {"a"}
    assert qb.claim_due() == []  # leased to a
    service.clock.advance(seconds=11)  # a died mid-batch: nothing recorded
    taken = qb.claim_due()
    assert sorted(r.id for r in taken) == sorted(r.id for r in claimed)
    assert doubts == [6]
    with service.app.db.read() as session:
        assert {r.claimed_by for r in session.exec(select(Outbox)).all()} == {"b"}
