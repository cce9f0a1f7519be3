"""Issue 17: PostgreSQL connections killed (`pg_terminate_backend`) during a flood of SMTP
messages into one running `mailgate serve` (in-process, real listener, its own database).

What must hold, whatever connection the kill catches (the writer's mid-transaction, the
sender's, the leases', idle ones in the pool):

- a client is answered 250 or 451, never a 5xx, and never a 250 for something not stored;
- the instance recovers by itself (pool pre-ping, reconnect): every message, retried on 451
  as an MTA would, ends with a 250 — after five kills, and after an outage of the whole
  database (connections refused for a while, as during a restart);
- every message answered 250 is stored once (one receipt, one ticket), and its confirmation
  reaches the sink once (the sender survived the kills too).

Runs only with PostgreSQL (MAILGATE_TEST_DATABASE_URL).
"""

from __future__ import annotations

import smtplib
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func
from sqlalchemy.engine import make_url
from sqlmodel import select

from mailgate.errors import TempFailure
from mailgate.store.models import Receipt, Ticket
from tests.conftest import PG_URL, make_mail
from tests.support.instances import pg_url_fixture  # noqa: F401 (fixture)
from tests.support.peers import Mailgate, SmtpSink, wait_until, write_config

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not PG_URL, reason="needs PostgreSQL: set MAILGATE_TEST_DATABASE_URL (issue 17)"
    ),
]

MESSAGES = 240
CLIENTS = 4
KILLS = 6  # one every MESSAGES / (KILLS + 1) acknowledged messages; the last is an outage
PATIENCE = 60.0  # seconds a client keeps retrying one message on 451, as an MTA would


def attempt(port: int, sender: str, raw: bytes) -> int:
    """One SMTP delivery; the reply code to the whole transaction (0: connection lost)."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.sendmail(sender, ["support@example.com"], raw)
        return 250
    except smtplib.SMTPRecipientsRefused as exc:
        return int(next(iter(exc.recipients.values()))[0])
    except smtplib.SMTPResponseException as exc:  # MAIL, DATA (and the sender refused)
        return int(exc.smtp_code)
    except (OSError, smtplib.SMTPServerDisconnected):
        return 0


def terminate(admin: psycopg.Connection, database: str) -> tuple[int, int]:
    """Kill every backend of mailgate's database; (killed, of them busy in a statement or a
    transaction at that moment)."""
    row = admin.execute(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)),"
        " count(*) FILTER (WHERE state <> 'idle')"
        " FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_killed_connections_answer_451_then_recover_and_lose_nothing(
    tmp_path: Path, pg_url: str
) -> None:
    sink = SmtpSink()
    config = write_config(tmp_path, database_url=pg_url, sink_port=sink.port)
    text = config.read_text().replace(
        "retry_base_seconds = 60", "retry_base_seconds = 1\nfirst_contact_per_hour = 100000"
    )
    config.write_text(text)
    mg = Mailgate(config)
    url = make_url(pg_url)
    database = str(url.database)
    admin_dsn = url.set(drivername="postgresql", database="postgres")
    admin = psycopg.connect(admin_dsn.render_as_string(hide_password=False), autocommit=True)
    codes: Counter[int] = Counter()
    acked: Counter[int] = Counter()
    lock = threading.Lock()

    def deliver(i: int) -> None:
        sender = f"c{i}@client.example"
        raw = make_mail(sender=sender, message_id=f"<outage-{i}@client.example>",
                        subject=f"Demande {i}").as_bytes()  # fmt: skip
        give_up = time.monotonic() + PATIENCE
        while time.monotonic() < give_up:  # a 451 is retried at once: recovery, not time
            code = attempt(mg.smtp_port, sender, raw)
            with lock:
                codes[code] += 1
                if code == 250:
                    acked[i] += 1
            if code != 451:  # 250 is done; anything else is a failure the asserts report
                return

    def client(ids: list[int]) -> None:
        for i in ids:
            deliver(i)

    try:
        threads = [threading.Thread(target=client, args=(list(range(k, MESSAGES, CLIENTS)),))
                   for k in range(CLIENTS)]  # fmt: skip
        for t in threads:
            t.start()
        kills: list[tuple[int, int]] = []
        for n in range(1, KILLS + 1):  # a kill each time the flood got that far
            wait_until(lambda n=n: sum(acked.values()) >= n * MESSAGES // (KILLS + 1), 60,
                       f"{n * MESSAGES // (KILLS + 1)} messages acknowledged")  # fmt: skip
            if n < KILLS:
                kills.append(terminate(admin, database))
                continue
            # The last one is an outage, as a restart is: no connection at all for a while.
            admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            try:
                kills.append(terminate(admin, database))
                refused = codes[451]
                wait_until(lambda refused=refused: codes[451] >= refused + 2 * CLIENTS, 30,
                           "clients to be answered 451 during the outage")  # fmt: skip
                with pytest.raises(TempFailure):  # nor can the pool: /healthz says 503
                    mg.app.db.ping()
            finally:
                admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)

        print(f"replies {dict(codes)}, kills (killed, busy) {kills}")
        assert set(codes) <= {250, 451}, codes  # never a 5xx, never a dropped connection
        assert sorted(acked) == list(range(MESSAGES)), "a message never got its 250"
        assert set(acked.values()) == {1}
        assert sum(k for k, _ in kills) > 0  # the kills did hit mailgate's connections

        with mg.app.db.read() as session:  # the pool reconnected: this read works too
            tickets = session.exec(select(func.count()).select_from(Ticket)).one()
            receipts = session.exec(select(Receipt.message_id)).all()
        assert tickets == MESSAGES
        assert sorted(Counter(receipts).values()) == [1] * MESSAGES  # stored once each

        def confirmed() -> Counter[str]:
            return Counter(m.rcpt_tos[0] for m in sink.of_kind("confirmation"))

        wait_until(lambda: len(confirmed()) == MESSAGES, 60, "every confirmation at the sink")
        assert set(confirmed().values()) == {1}, "a confirmation was sent twice"
    finally:
        mg.stop()
        admin.close()
        sink.close()
