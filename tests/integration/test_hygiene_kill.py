"""Issue 4, crash safety: `mailgate serve` killed with SIGKILL at random points while clients
send 500 messages, restarted each time, the unacknowledged messages sent again as an MTA
would: every message that got a 250 is stored exactly once, none twice, and every ticket has
its confirmation queued. The kill points are drawn from a seed printed on failure."""

from __future__ import annotations

import os
import queue
import random
import smtplib
import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import select

from mailgate.store.db import Database
from mailgate.store.models import Message, Outbox, Receipt, Ticket
from tests.conftest import make_mail
from tests.support.hygiene import SUPPORT, count, crlf, rows, set_inbound
from tests.support.peers import ServeProcess, SmtpSink, free_port, write_config

pytestmark = pytest.mark.postgres  # the database engine matters here: run on both

MESSAGES = 500
CLIENTS = 4
KILLS = 5


class Clients:
    """MTAs with mail to deliver: a message is done when it got a 250; anything else (451,
    a dropped connection) puts it back in the queue for the next try."""

    def __init__(self, port: int, mails: dict[str, bytes]) -> None:
        self.port = port
        self.todo: queue.Queue[str] = queue.Queue()
        for mid in mails:
            self.todo.put(mid)
        self.mails = mails
        self.acked: set[str] = set()
        self.cond = threading.Condition()
        self.up = threading.Event()
        self.up.set()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        client: smtplib.SMTP | None = None
        while True:
            with self.cond:
                if len(self.acked) == len(self.mails):
                    return
            try:
                mid = self.todo.get(timeout=1)
            except queue.Empty:
                continue
            try:
                self.up.wait()
                if client is None:
                    client = smtplib.SMTP("127.0.0.1", self.port, timeout=30)
                client.sendmail(f"sender-{mid[:8]}@client.example", [SUPPORT], self.mails[mid])
            except (OSError, smtplib.SMTPException):
                self.todo.put(mid)  # not acknowledged: try again, as an MTA does
                if client is not None:
                    try:
                        client.close()
                    finally:
                        client = None
                continue
            with self.cond:
                self.acked.add(mid)
                self.cond.notify_all()

    def wait_acked(self, n: int, timeout: float = 60) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.acked) >= n, timeout), (
                f"stuck at {len(self.acked)} acknowledged"
            )


def test_kill_9_under_load_loses_and_duplicates_nothing(
    tmp_path: Path, database_url: str, sink: SmtpSink
):
    kill_9_under_load(tmp_path, database_url, sink, smtp_processes=0)


def test_kill_9_with_smtp_fronts_loses_and_duplicates_nothing(tmp_path: Path, sink: SmtpSink):
    """The default: sessions in a child process of serve, which dies with it (its control
    socket ends) and lets go of the port for the restart."""
    database_url = f"sqlite:///{tmp_path / 'fronts.db'}"
    kill_9_under_load(tmp_path, database_url, sink, smtp_processes=1, messages=200, kills=3)


def kill_9_under_load(
    tmp_path: Path,
    database_url: str,
    sink: SmtpSink,
    *,
    smtp_processes: int,
    messages: int = MESSAGES,
    kills: int = KILLS,
) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    port = free_port()
    config = write_config(tmp_path, database_url=database_url, sink_port=sink.port)
    set_inbound(
        config, smtp_listen=f"127.0.0.1:{port}", lmtp_listen="", smtp_processes=smtp_processes
    )
    mails = {}
    for i in range(messages):
        mid = f"{uuid.uuid4().hex}@client.example"
        msg = make_mail(sender=f"Client {i} <client{i}@client.example>", subject=f"Panne {i}",
                        message_id=f"<{mid}>")
        mails[mid] = crlf(msg.as_bytes())
    server = ServeProcess(config, port, tmp_path / "serve.log")
    server.start()
    killed_at: list[int] = []
    try:
        clients = Clients(port, mails)
        clients.start()
        for _ in range(kills):
            # Kill once a random number more of the messages were acknowledged: the other
            # connections are then anywhere in their transactions.
            target = min(messages - 1, len(clients.acked) + rng.randint(10, 80))
            clients.wait_acked(target)
            clients.up.clear()
            server.kill()
            killed_at.append(len(clients.acked))
            server.start()
            clients.up.set()
        clients.wait_acked(messages, timeout=120)
    finally:
        server.kill()  # never left running, even when the test fails

    where = f"(seed {seed}, killed after {killed_at} acknowledgements)"
    db = Database(database_url)
    try:
        with db.read() as session:
            stored = dict(
                session.exec(
                    select(Message.message_id, func.count()).group_by(Message.message_id)
                ).all()
            )
        assert set(stored) == set(mails), f"messages lost {where}"
        assert set(stored.values()) == {1}, f"messages stored twice {where}"
        assert count(db, Ticket) == messages and count(db, Receipt) == messages, where
        confirmations = [o.ticket_id for o in rows(db, Outbox, Outbox.kind == "confirmation")]
        assert sorted(confirmations) == sorted(t.id for t in rows(db, Ticket)), where
    finally:
        db.dispose()

