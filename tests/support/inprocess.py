"""The service-level test tier: a real App built in process (the one ingest path, the sender,
the jobs) on a real database (SQLite, and PostgreSQL when MAILGATE_TEST_DATABASE_URL is set),
its outbound mail handed to MemoryTransport instead of an SMTP sink. No `serve`, no listener, no
thread: a test ingests, drains the sender with `run_once()`, and reads what went out, with
nothing to wait for. The socket-level tests (tests/integration/) prove the wiring; this tier
tests the behaviour (threading, commands, statuses, caps).

tests/service/conftest.py imports the fixtures: `service` (an InProcess) and `desk` (a
ServiceDesk, the socket-level Desk's API). Time moves with `service.clock.advance(...)`."""

from __future__ import annotations

import copy
import os
import re
import sqlite3
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime
from email.generator import BytesGenerator
from email.message import EmailMessage
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from mailgate.clock import FixedClock
from mailgate.errors import Rejected
from mailgate.services.ingest import Delivery, Envelope
from tests.conftest import DB_KINDS, _pg_database, _pg_drop
from tests.support.conversation import Desk, addr, msgid
from tests.support.peers import Received, run_cli, write_config

SUPPORT = "support@example.com"
# write_config wants a smarthost port; the App is built with MemoryTransport, so nothing ever
# connects to it (and were something to, port 9 on loopback refuses).
UNUSED_SMARTHOST_PORT = 9


class MemoryTransport:
    """Our Transport port (services/outbox.py) kept in memory, as the maildir transport keeps
    it on disk: each mail handed over is recorded as it would reach a sink (envelope sender,
    recipient, bytes). `fail_with` makes every send raise it (TransportTempError: the row is
    retried; TransportPermError: it fails)."""

    def __init__(self) -> None:
        self.sent: list[Received] = []
        self.fail_with: Exception | None = None
        self._lock = threading.Lock()  # a sender may hand mails over from a few threads

    def send(self, envelope_from: str, to_addr: str, raw: bytes) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        with self._lock:
            self.sent.append(Received(envelope_from, [to_addr], bytes(raw)))

    def check(self) -> str:
        if self.fail_with is not None:
            raise self.fail_with
        return f"memory: {len(self.sent)} mails"


def wire_bytes(msg: EmailMessage | bytes) -> bytes:
    """The bytes an SMTP server stores from smtplib (send_message / sendmail): no Bcc, CRLF
    line ends, ending with CRLF. The listener hands exactly these to the ingest path."""
    if isinstance(msg, EmailMessage):
        out = copy.copy(msg)
        del out["Bcc"]
        del out["Resent-Bcc"]
        international = any(not a.isascii() for a in (str(msg["From"]), str(msg["To"])))
        policy = msg.policy.clone(utf8=True) if international else msg.policy
        with BytesIO() as buf:
            BytesGenerator(buf, policy=policy).flatten(out, linesep="\r\n")
            raw = buf.getvalue()
    else:
        raw = msg
    raw = re.sub(rb"(?:\r\n|\n|\r(?!\n))", b"\r\n", raw)
    return raw if raw.endswith(b"\r\n") else raw + b"\r\n"


class InProcess:
    """A real App (app.build) without `serve`: ingest, sender and jobs called directly.

    Writes run inline (the group committer's thread is not started) and mail parses in this
    process (no parse workers): what a test checks is the service behaviour, not the wiring."""

    def __init__(
        self, config_path: Path, clock: FixedClock | None = None, *, upgrade: bool = True
    ) -> None:
        from mailgate import config as config_mod
        from mailgate import logs
        from mailgate.app import build

        logs.setup()
        self.config_path = config_path
        self.config = config_mod.load(config_path)
        # Frozen at the real time (mail Date headers are real), moved by the test at will.
        self.clock = clock or FixedClock(datetime.now(UTC))
        self.transport = MemoryTransport()
        self.app = build(self.config, clock=self.clock, transport=self.transport)
        if upgrade:
            self.app.db.upgrade()
        self._drained = 0

    def ingest(
        self, raw: bytes, rcpts: list[str], mail_from: str, channel: str = "smtp"
    ) -> list[Delivery]:
        """The listener's work: RCPT refuses what is not ours (none left: Rejected, 550), then
        the one ingest path; returns once everything is committed (where SMTP says 250)."""
        accepted = [r for r in rcpts if self.app.ingestor.addresses.resolve(r) is not None]
        if not accepted:
            raise Rejected("mailbox unavailable", code=550, status="5.1.1")
        envelope = Envelope(
            mail_from=mail_from, recipients=tuple(accepted), channel=channel,
            peer="127.0.0.1:25", helo="client.example",
        )  # fmt: skip
        return self.app.ingestor.ingest(raw, envelope)

    def run_sender(self) -> int:
        """One pass of the sender over what is due now (at the test clock's time)."""
        return self.app.sender.run_once()

    def drain(self) -> list[Received]:
        """Run the sender, then every mail handed to the transport since the last drain."""
        self.run_sender()
        new = self.transport.sent[self._drained :]
        self._drained = len(self.transport.sent)
        return new

    def run_jobs(self) -> Any:
        """The scheduler's pass (auto-resolve, close, digests) at the clock's time, then the
        sender's, as `serve` would run them."""
        report = self.app.jobs.run_all(self.clock.now())
        self.run_sender()
        return report

    def cli(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        return run_cli(self.config_path, *args, **kwargs)

    def close(self) -> None:
        self.app.db.dispose()  # MemoryTransport holds no connection to close


class ServiceDesk(Desk):
    """The socket-level Desk (tests/support/conversation.py), in process: the same mails and
    replies built the same way, sent through the ingest path instead of SMTP; after each one
    the sender drains into MemoryTransport (as serve wakes its sender after each stored
    mail), so `wait_mail` finds the mail already sent or fails at once.

    `desk.mg` is the InProcess (`.app`, `.cli`, `.config_path`, like peers.Mailgate)."""

    def __init__(self, service: InProcess) -> None:
        super().__init__(service, sink=None)  # type: ignore[arg-type]  # Desk reads .app, .cli
        self.service = service

    def send(  # type: ignore[override]  # also takes raw bytes, returns the deliveries
        self,
        msg: EmailMessage | bytes,
        rcpts: list[str] | None = None,
        *,
        mail_from: str | None = None,
    ) -> list[Delivery]:
        if isinstance(msg, bytes):
            to = rcpts or [SUPPORT]
            sender = mail_from if mail_from is not None else "jean@client.example"
        else:
            to = rcpts or [addr(a) for a in str(msg["To"]).split(",")]
            sender = mail_from if mail_from is not None else addr(str(msg["From"]))
        deliveries = self.service.ingest(wire_bytes(msg), to, sender)
        self.service.run_sender()
        return deliveries

    def reply_to(
        self, received: Received, sender: str, text: str, **kwargs: Any
    ) -> list[Delivery]:
        """Reply as a mail client does (Desk.reply), and send it."""
        return self.send(self.reply(received, sender, text, **kwargs))

    def drain(self) -> list[Received]:
        return self.service.drain()

    def mails(self, kind: str | None = None, to: str | None = None) -> list[Received]:
        """Every mail sent so far, in order, optionally of one kind and/or to one address."""
        return [
            m for m in self.service.transport.sent
            if (kind is None or m.kind == kind) and (to is None or to in m.rcpt_tos)
        ]  # fmt: skip

    def wait_mail(
        self,
        kind: str,
        to: str,
        *,
        in_reply_to: str | None = None,
        ticket: int | None = None,
        where: Callable[[Received], bool] = lambda _r: True,
        count: int = 1,
    ) -> Received:
        """The latest of `count` mails of `kind` to `to` (optionally about one ticket)."""
        self.service.run_sender()
        fits = [
            m for m in self.mails(kind, to)
            if (in_reply_to is None or msgid(m, "In-Reply-To") == in_reply_to)
            and (ticket is None or str(m.msg["X-Mailgate-Ticket"]) == str(ticket))
            and where(m)
        ]  # fmt: skip
        if len(fits) < count:
            sent = [(m.kind, m.rcpt_tos) for m in self.service.transport.sent]
            raise AssertionError(f"{count} {kind} mail(s) to {to} expected; sent: {sent}")
        return fits[-1]


# -- databases ------------------------------------------------------------------------------


class PgSchema:
    """One PostgreSQL database per test module, migrated once; emptied before each test (a
    DELETE per table takes ~1 ms where CREATE DATABASE + migrations take ~0.5 s)."""

    def __init__(self) -> None:
        from sqlalchemy import MetaData, create_engine

        from mailgate.store.db import Database

        self.url, self.name = _pg_database()
        db = Database(self.url)
        db.upgrade()
        db.dispose()
        self.engine = create_engine(self.url)
        meta = MetaData()
        meta.reflect(self.engine)  # every table the migrations made, children first below
        self.tables = [t for t in reversed(meta.sorted_tables) if t.name != "alembic_version"]

    def empty(self) -> None:
        with self.engine.begin() as conn:
            for table in self.tables:
                conn.execute(table.delete())

    def drop(self) -> None:
        self.engine.dispose()
        _pg_drop(self.name)


@pytest.fixture(scope="session")
def sqlite_schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database, copied for each test (saves ~0.12 s of migrations each)."""
    from mailgate.store.db import Database

    path = tmp_path_factory.mktemp("schema") / "mailgate.db"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    db.dispose()
    return path


@pytest.fixture(scope="module")
def pg_schema() -> Iterator[PgSchema]:
    schema = PgSchema()
    yield schema
    schema.drop()


@pytest.fixture
def service_dir(tmp_path: Path) -> Iterator[Path]:
    """Where a test's config, SQLite database and blobs live: in RAM (/dev/shm) when there is
    one. Every fsync is still made, it just costs nothing: under a loaded CI the same tests
    took twice as long on disk. Durability itself is proven by the socket-level kill tests."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(prefix="mailgate-test-", dir=shm) as folder:
        yield Path(folder)


@pytest.fixture(params=DB_KINDS)
def service_database_url(
    request: pytest.FixtureRequest, service_dir: Path, sqlite_schema: Path
) -> str:
    """A migrated, empty database of each kind the run covers."""
    if request.param == "sqlite":
        path = service_dir / "mailgate.db"
        with closing(sqlite3.connect(sqlite_schema)) as src, closing(sqlite3.connect(path)) as dst:
            src.backup(dst)
        return f"sqlite:///{path}"
    schema: PgSchema = request.getfixturevalue("pg_schema")
    schema.empty()
    return schema.url


@pytest.fixture(name="service")
def service_fixture(
    service_dir: Path, service_database_url: str, config_extra: str
) -> Iterator[InProcess]:
    """The App in process, configured as the socket-level tests' (peers.write_config, plus
    the module's `config_extra`)."""
    path = write_config(service_dir, database_url=service_database_url,
                        sink_port=UNUSED_SMARTHOST_PORT, extra=config_extra)  # fmt: skip
    service = InProcess(path, upgrade=False)
    yield service
    service.close()


@pytest.fixture(name="desk")
def service_desk_fixture(service: InProcess) -> ServiceDesk:
    return ServiceDesk(service)
