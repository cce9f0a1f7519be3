"""Issue 11, the sender in batches: a batch is leased in one write transaction and recorded in
one more; SMTP connections are kept from mail to mail (PIPELINING when offered), a refusal
does not end the connection, and a peer that dies mid-batch leaves every mail it did not take
queued, and nothing recorded as sent that it did not receive. Driven with `run_once()`/`drain()`
on an App that is not serving, against real SMTP peers (a sink in another process here, so it
can die as a server does)."""

from __future__ import annotations

import dataclasses
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event

from mailgate import config as config_mod
from mailgate.adapters.sender_process import (
    _COLUMNS,
    WritesThroughServe,
    _receive_frame,
    _send_frame,
)
from mailgate.app import App, build
from mailgate.clock import FixedClock
from mailgate.services.ingest import Envelope
from mailgate.services.outbox_queue import SENT, ClaimedRow, Outcome
from tests.conftest import make_mail
from tests.support.mailflow import mail_bytes, outbox_rows
from tests.support.peers import SmtpSink, write_config

pytestmark = pytest.mark.postgres  # the database engine matters here: run on both

SUPPORT = "support@example.com"

# A real SMTP server (aiosmtpd) in a process of its own. It appends one line per event to a
# record file, flushed before it answers: "EHLO", "MAIL <message-id>", "QUIT".
# argv: record-file port die-after refused-recipient pipelining(0/1). At the DATA of mail number
# die-after + 1 it exits at once, without a reply, as a crashed server does.
PEER = r"""
import asyncio, os, re, sys
from aiosmtpd.smtp import SMTP

record = open(sys.argv[1], "a", buffering=1)
port, die_after, refused, pipelining = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]

class Handler:
    accepted = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        record.write("EHLO\n")
        if pipelining == "1":
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address == refused:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.accepted == die_after:
            os._exit(0)
        found = re.search(rb"(?im)^message-id:\s*(\S+)", envelope.content)
        record.write(f"MAIL {found.group(1).decode()}\n")
        self.accepted += 1
        return "250 OK"

    async def handle_QUIT(self, server, session, envelope):
        record.write("QUIT\n")
        return "221 Bye"

async def main():
    handler = Handler()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler), "127.0.0.1", port)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


class Peer:
    def __init__(
        self, record: Path, port: int = 0, die_after: int = -1, refuse: str = "",
        pipelining: bool = False,
    ) -> None:  # fmt: skip
        self.record = record
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PEER, str(record), str(port), str(die_after), refuse,
             "1" if pipelining else "0"],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())  # printed once it listens

    def events(self) -> list[str]:
        return self.record.read_text().splitlines() if self.record.exists() else []

    def message_ids(self) -> list[str]:
        return [e.split(" ", 1)[1].strip("<>") for e in self.events() if e.startswith("MAIL ")]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


def _app(tmp_path: Path, database_url: str, port: int, clock: FixedClock, **outbound: int) -> App:
    path = write_config(tmp_path, database_url=database_url, sink_port=port)
    cfg = config_mod.load(path)
    cfg = dataclasses.replace(cfg, outbound=dataclasses.replace(cfg.outbound, **outbound))
    app = build(cfg, clock=clock)
    app.db.upgrade()
    return app


def _ingest(app: App, customers: int, first: int = 0) -> None:
    """Each first contact queues two mails (confirmation, activation) to its sender."""
    for i in range(first, first + customers):
        sender = f"client{i}@client.example"
        raw = mail_bytes(make_mail(sender=sender))
        app.ingestor.ingest(raw, Envelope(mail_from=sender, recipients=(SUPPORT,)))


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for peer in started:
        peer.stop()


def test_a_batch_is_leased_in_one_transaction_and_recorded_in_one_more(
    tmp_path: Path, database_url: str, clock: FixedClock, sink: SmtpSink
):
    app = _app(tmp_path, database_url, sink.port, clock)
    try:
        _ingest(app, 15)  # 30 rows
        commits: list[int] = []
        event.listen(app.db.write_engine, "commit", lambda _conn: commits.append(1))
        app.sender.batch_size = app.sender.settle_every = 100
        assert app.sender.run_once() == 30
        assert len(commits) == 2, "one lease, one record, for the whole batch"
        assert {r.status for r in outbox_rows(app.db)} == {"sent"}

        _ingest(app, 10, first=15)  # 20 more rows, in batches of 8: 8, 8, 4
        commits.clear()
        app.sender.batch_size = app.sender.settle_every = 8
        assert app.sender.run_once() == 20
        assert len(commits) == 6

        # Several instances (PostgreSQL): outcomes recorded every `settle_every` mails, so an
        # instance that dies leaves at most that many sent-but-unrecorded (issue 17).
        _ingest(app, 15, first=25)  # 30 rows: one lease, records after 20 and 30
        commits.clear()
        app.sender.batch_size, app.sender.settle_every = 100, 20
        assert app.sender.run_once() == 30
        assert len(commits) == 3
        ids = [str(m.msg["Message-ID"]).strip("<>") for m in sink.wait_for(80)]
        assert sorted(ids) == sorted(r.message_id for r in outbox_rows(app.db))
        assert [(r.status, r.attempts) for r in outbox_rows(app.db)] == [("sent", 1)] * 80
    finally:
        app.db.dispose()


@pytest.mark.parametrize("pipelining", [False, True], ids=["plain", "pipelining"])
def test_one_connection_carries_the_batch_and_survives_a_refusal(
    tmp_path: Path, database_url: str, clock: FixedClock, peers: list[Peer], pipelining: bool
):
    refused = "client3@client.example"
    peers.append(Peer(tmp_path / "record", refuse=refused, pipelining=pipelining))
    app = _app(tmp_path, database_url, peers[0].port, clock, connections=1)
    try:
        _ingest(app, 8)
        assert app.sender.drain() == 16
        rows = outbox_rows(app.db)
        assert {(r.to_addr, r.status) for r in rows if r.status != "sent"} == {
            (refused, "failed")
        }
        assert all("550" in r.last_error for r in rows if r.to_addr == refused)
        assert sorted(peers[0].message_ids()) == sorted(
            r.message_id for r in rows if r.status == "sent"
        )
        assert peers[0].events().count("EHLO") == 1, "a connection per mail"
        assert "QUIT" not in peers[0].events()
        app.sender.transport.idle_seconds = 0  # type: ignore[attr-defined]
        app.sender.close_idle()  # what the sender does when it has been idle
        assert peers[0].events()[-1] == "QUIT"
        _ingest(app, 1, first=8)  # the next mail opens a new connection
        assert app.sender.run_once() == 2
        assert peers[0].events().count("EHLO") == 2
        assert peers[0].events()[-1] == "QUIT", "run_once says goodbye when done"
    finally:
        app.db.dispose()


def test_a_peer_dying_mid_batch_keeps_the_rest_queued_and_nothing_is_sent_twice(
    tmp_path: Path, database_url: str, clock: FixedClock, peers: list[Peer]
):
    peers.append(Peer(tmp_path / "record", die_after=5))
    app = _app(tmp_path, database_url, peers[0].port, clock, connections=1)
    try:
        _ingest(app, 10)  # 20 rows
        assert app.sender.run_once() == 20  # 5 taken; the 6th killed the peer; 14 refused
        peers[0].proc.wait(10)
        rows = outbox_rows(app.db)
        sent = [r for r in rows if r.status == "sent"]
        assert sorted(r.message_id for r in sent) == sorted(peers[0].message_ids())
        assert len(sent) == 5
        waiting = [r for r in rows if r.status != "sent"]
        assert {(r.status, r.attempts) for r in waiting} == {("queued", 1)}
        assert all(r.last_error.startswith("smtp 127.0.0.1") for r in waiting)

        peers.append(Peer(tmp_path / "record", port=peers[0].port))  # back, on the same port
        clock.advance(seconds=app.config.outbound.retry_base_seconds)
        assert app.sender.run_once() == 15
        ids = peers[0].message_ids()
        assert len(ids) == len(set(ids)) == 20, "a mail went out twice, or not at all"
        assert sorted(ids) == sorted(r.message_id for r in outbox_rows(app.db))
        assert {r.status for r in outbox_rows(app.db)} == {"sent"}
    finally:
        app.db.dispose()


def test_a_stop_mid_batch_gives_the_untried_rows_back(
    tmp_path: Path, database_url: str, clock: FixedClock, sink: SmtpSink
):
    app = _app(tmp_path, database_url, sink.port, clock, connections=1)
    try:
        _ingest(app, 5)  # 10 rows, one batch
        # Asked to stop once the first mail has reached the sink: the rest is not tried.
        assert app.sender.run_once(stop=lambda: len(sink.messages) >= 1) == 1
        rows = outbox_rows(app.db)
        assert sum(r.status == "sent" for r in rows) == 1
        untried = [r for r in rows if r.status != "sent"]
        assert {(r.status, r.attempts, r.claimed_until) for r in untried} == {("queued", 0, None)}
        assert app.sender.run_once() == 9  # given back: due now, not after a lease
        assert len(sink.wait_for(10)) == 10
    finally:
        app.db.dispose()


def test_a_smarthost_that_cannot_be_reached_fails_the_batch_fast(
    tmp_path: Path, database_url: str, clock: FixedClock, peers: list[Peer]
):
    peers.append(Peer(tmp_path / "record"))
    port = peers[0].port
    peers[0].stop()  # nothing listens there any more: every connect is refused
    app = _app(tmp_path, database_url, port, clock, connections=2)
    try:
        _ingest(app, 6)
        assert app.sender.run_once() == 12
        rows = outbox_rows(app.db)
        assert {(r.status, r.attempts) for r in rows} == {("queued", 1)}
        assert all(re.search(r"refused|Errno", r.last_error) for r in rows), rows[0].last_error
    finally:
        app.db.dispose()


def test_maildir_batches_write_each_row_once(
    tmp_path: Path, database_url: str, clock: FixedClock
):
    maildir = tmp_path / "sent"
    path = write_config(tmp_path, database_url=database_url, sink_port=1)
    cfg = config_mod.load(path)
    cfg = dataclasses.replace(
        cfg,
        outbound=dataclasses.replace(
            cfg.outbound, transport=f"maildir:{maildir}", connections=3
        ),
    )
    app = build(cfg, clock=clock)
    app.db.upgrade()
    try:
        _ingest(app, 20)
        app.sender.batch_size = 16
        assert app.sender.run_once() == 40
        files = list((maildir / "new").iterdir())
        ids = [
            re.search(rb"(?im)^message-id:\s*<(\S+)>", f.read_bytes()).group(1).decode()  # type: ignore[union-attr]
            for f in files
        ]
        assert sorted(ids) == sorted(r.message_id for r in outbox_rows(app.db))
        assert not list((maildir / "tmp").iterdir())
    finally:
        app.db.dispose()


def test_the_sender_process_records_itself_what_serve_cannot(
    tmp_path: Path, database_url: str, clock: FixedClock, sink: SmtpSink
):
    """In its own process the sender leases and records through serve's group commits; when
    serve is gone the mails already out are recorded directly, once even if recorded twice."""
    app = _app(tmp_path, database_url, sink.port, clock)
    try:
        _ingest(app, 2)
        rows = app.outbox.claim_due()
        gone, ours = socket.socketpair()
        gone.close()  # serve's end: closed, as when it was killed
        queue = WritesThroughServe(app.outbox, ours)
        assert queue.claim_due() == [], "nothing new is started without serve"
        outcomes = [Outcome(r.id or 0, r.attempts, SENT) for r in rows]
        assert set(queue.settle(outcomes).values()) == {"sent"}
        assert app.outbox.settle(outcomes)  # the same batch recorded again: no second count
        assert [(r.status, r.attempts) for r in outbox_rows(app.db)] == [("sent", 1)] * 4
    finally:
        app.db.dispose()


def test_the_sender_process_gets_claimed_rows_as_their_columns_read_only(
    tmp_path: Path, database_url: str, clock: FixedClock, sink: SmtpSink
):
    """The sender's own process gets serve's claim as columns and keeps them in a light
    read-only row (no ORM object per row): every column there, the same bytes assembled."""
    app = _app(tmp_path, database_url, sink.port, clock)
    try:
        _ingest(app, 2)
        stored = {r.id: r for r in outbox_rows(app.db)}
        serve, child = socket.socketpair()

        def answer() -> None:  # serve's side of one claim, as SenderProcess._run_job does it
            _verb, limit = _receive_frame(serve)
            with app.db.write() as session:
                _send_frame(serve, ("ok", app.outbox.claim_columns_in(session, limit)))

        thread = threading.Thread(target=answer)
        thread.start()
        claimed = WritesThroughServe(app.outbox, child).claim_due(10)
        thread.join()
        assert {f.name for f in dataclasses.fields(ClaimedRow)} == set(_COLUMNS)
        assert sorted(r.id for r in claimed) == sorted(stored) and len(claimed) == 4
        for row in claimed:
            orm = stored[row.id]
            leased = {"claimed_until", "claimed_by"}  # set by this claim
            assert {n: getattr(row, n) for n in _COLUMNS if n not in leased} == {
                n: getattr(orm, n) for n in _COLUMNS if n not in leased
            }
            assert row.claimed_until is not None
            assert app.sender.assemble(row) == app.sender.assemble(orm)
            with pytest.raises(dataclasses.FrozenInstanceError):
                row.status = "sent"  # type: ignore[misc]
        serve.close()
        child.close()
    finally:
        app.db.dispose()
