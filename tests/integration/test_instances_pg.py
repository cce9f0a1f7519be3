"""Issue 17: two `mailgate serve` processes on one real PostgreSQL and one S3-compatible object
store (moto's server on loopback). 300 messages (the issue's 1,000 is `make bench`'s job:
bench/instances_bench.py) split across both, over SMTP and LMTP, 30 of them delivered to both;
instance A is killed with SIGKILL halfway and restarted, its mail meanwhile going to B as an
MTA's next MX would. Then:

- every message acknowledged with 250 is stored once (one receipt, one ticket per message);
- every confirmation reaches the SMTP sink once — at most the rows B logged as taken over "in
  doubt" may arrive twice (the one window docs/operations.md describes), and their count is
  read from B's metrics, not assumed;
- the jobs' leases pass from A to B within the bound after the SIGKILL, and each job is held
  by exactly one instance at any time (B's and the restarted A's /healthz never overlap).

Runs only with PostgreSQL (MAILGATE_TEST_DATABASE_URL); in a database of its own.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import select

from mailgate.store.db import Database
from mailgate.store.models import Receipt, Ticket
from tests.conftest import PG_URL, make_mail
from tests.support.instances import Instance, deliver, pg_url_fixture  # noqa: F401 (fixture)
from tests.support.peers import SmtpSink, wait_until
from tests.support.s3 import S3Server, s3_fixture, s3_server  # noqa: F401 (fixtures)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not PG_URL, reason="needs PostgreSQL: set MAILGATE_TEST_DATABASE_URL (issue 17)"
    ),
]

MESSAGES = 300
TO_BOTH = 30  # every tenth message is delivered to both instances
LEASE = 3  # [instance] lease_seconds: jobs' leases renewed every second
JOBS = ["job:auto_resolve", "job:cleanup", "job:close", "job:digests"]


def test_two_instances_one_killed_store_and_send_everything_once(
    tmp_path: Path, pg_url: str, s3: S3Server
) -> None:
    blobs = s3.url()
    s3.create(blobs)
    sink = SmtpSink()
    a = Instance("a", tmp_path, pg_url, sink.port, lease_seconds=LEASE, blobs=blobs)
    b = Instance("b", tmp_path, pg_url, sink.port, lease_seconds=LEASE, blobs=blobs)
    try:
        a.start()
        b.start()
        wait_until(lambda: a.holds() == JOBS, 10, "A to hold the jobs")
        assert b.holds() == []
        acked: Counter[int] = Counter()
        lock = threading.Lock()

        def send_one(i: int) -> None:
            sender = f"c{i}@client.example"
            raw = make_mail(sender=sender, message_id=f"<inst-{i}@client.example>",
                            subject=f"Demande {i}").as_bytes()  # fmt: skip
            targets = [a, b] if i % 10 == 0 else [(a, b)[i % 2]]
            for target in targets:
                other = b if target is a else a
                for attempt in range(40):  # an MTA: retry, the other MX when one is down
                    inst = (target, other)[attempt % 2]
                    if deliver(inst, raw, sender, lmtp=bool(i % 3 == 1)):
                        with lock:
                            acked[i] += 1
                        break
                    time.sleep(0.2)

        def worker(ids: list[int]) -> None:
            for i in ids:
                send_one(i)

        half = MESSAGES // 2
        threads = [threading.Thread(target=worker, args=(list(range(k, half, 4)),))
                   for k in range(4)]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        # Halfway: A dies with its leases, and mail in its sender's hands.
        a.kill()
        killed_at = time.monotonic()
        wait_until(lambda: b.holds() == JOBS, 3 * LEASE, "B to take the jobs over")
        takeover = time.monotonic() - killed_at
        assert takeover < LEASE + LEASE / 3 + 2, takeover
        threads = [threading.Thread(target=worker, args=(list(range(half + k, MESSAGES, 4)),))
                   for k in range(4)]  # fmt: skip
        for t in threads:
            t.start()
        a.start()  # restarted while the second half arrives
        for t in threads:
            t.join(300)
        # One holder per job, never both.
        held_a, held_b = set(a.holds()), set(b.holds())
        assert not (held_a & held_b) and held_a | held_b == set(JOBS)

        assert sorted(acked) == list(range(MESSAGES))  # every message got its 250
        db = Database(pg_url)
        try:
            with db.read() as session:
                tickets = session.exec(select(func.count()).select_from(Ticket)).one()
                receipts = session.exec(select(Receipt.message_id)).all()
        finally:
            db.dispose()
        assert tickets == MESSAGES
        assert sorted(Counter(receipts).values()) == [1] * MESSAGES  # stored once each

        def confirmed() -> Counter[str]:
            return Counter(m.rcpt_tos[0] for m in sink.of_kind("confirmation"))

        wait_until(lambda: len(confirmed()) == MESSAGES, 120, "every confirmation at the sink")
        twice = sum(n - 1 for n in confirmed().values())
        in_doubt = b.metric("mailgate_outbound_in_doubt_total") + a.metric(
            "mailgate_outbound_in_doubt_total"
        )
        assert twice <= in_doubt, (twice, in_doubt)
        print(f"takeover {takeover:.1f}s, confirmations twice {twice}, in doubt {in_doubt:.0f}")
    finally:
        a.stop()
        b.stop()
        sink.close()
