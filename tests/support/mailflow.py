"""Helpers for the ingest and outbound integration tests: talk SMTP/LMTP at the command level,
count what the database holds, and make the database or the disk fail for real (a lock held
by another connection, a trigger that refuses inserts, a blob folder that cannot be created).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import smtplib
import socket
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy import func
from sqlalchemy.engine import make_url
from sqlmodel import select

from mailgate.store.db import Database
from mailgate.store.models import (
    Account,
    Attachment,
    Message,
    Outbox,
    Quarantine,
    Receipt,
    Ticket,
)
from tests.support import peers

TABLES = {
    "ticket": Ticket,
    "receipt": Receipt,
    "outbox": Outbox,
    "message": Message,
    "account": Account,
    "attachment": Attachment,
    "quarantine": Quarantine,
}


def crlf(raw: bytes) -> bytes:
    """What an SMTP peer receives: every line ending (CR, LF, CRLF) as CRLF, and a last one."""
    lines = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)


def mail_bytes(msg: EmailMessage) -> bytes:
    return crlf(msg.as_bytes())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_path(data_dir: Path, digest: str) -> Path:
    return data_dir / "blobs" / digest[:2] / digest[2:4] / digest


# -- talking to the listeners -------------------------------------------------------------


@dataclass
class SmtpResult:
    rcpt: dict[str, tuple[int, str]] = field(default_factory=dict)
    data: tuple[int, str] | None = None

    @property
    def data_code(self) -> int:
        assert self.data is not None, "DATA was never sent (no recipient accepted)"
        return self.data[0]


def smtp_transaction(
    port: int,
    raw: bytes,
    rcpts: list[str],
    mail_from: str = "jean@client.example",
    client: smtplib.SMTP | None = None,
) -> SmtpResult:
    """One SMTP transaction at the command level: every reply is returned, none raises."""
    own = client is None
    s = client or smtplib.SMTP("127.0.0.1", port, timeout=30)
    try:
        s.ehlo("client.example")
        code, text = s.mail(mail_from)
        assert code == 250, (code, text)
        result = SmtpResult()
        for r in rcpts:
            c, t = s.rcpt(r)
            result.rcpt[r] = (c, t.decode())
        if any(c == 250 for c, _ in result.rcpt.values()):
            c, t = s.data(raw)
            result.data = (c, t.decode())
        else:
            s.rset()
        return result
    finally:
        if own:
            s.quit()


class LmtpClient:
    """A raw-socket LMTP client: smtplib.LMTP reads a single reply after DATA, RFC 2033 gives
    one per accepted recipient."""

    def __init__(self, port: int, host: str = "127.0.0.1", unix_path: str = "") -> None:
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(30)
            self.sock.connect(unix_path)
        else:
            self.sock = socket.create_connection((host, port), timeout=30)
        self.file = self.sock.makefile("rb")
        assert self.reply()[0] == 220
        assert self.command("LHLO client.example")[0] == 250

    def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("LMTP server closed the connection")
            lines.append(line[4:].decode().rstrip("\r\n"))
            if line[3:4] != b"-":
                return int(line[:3]), "\n".join(lines)

    def command(self, line: str) -> tuple[int, str]:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()

    def deliver(
        self, raw: bytes, rcpts: list[str], mail_from: str = "jean@client.example"
    ) -> tuple[dict[str, tuple[int, str]], list[tuple[int, str]]]:
        """(RCPT replies, the replies read after the final dot: one per accepted RCPT)."""
        assert self.command(f"MAIL FROM:<{mail_from}>")[0] == 250
        at_rcpt = {r: self.command(f"RCPT TO:<{r}>") for r in rcpts}
        accepted = [r for r, (code, _) in at_rcpt.items() if code == 250]
        code, _ = self.command("DATA")
        assert code == 354, code
        body = b"\r\n".join(b"." + ln if ln.startswith(b".") else ln for ln in raw.split(b"\r\n"))
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        self.sock.sendall(body + b".\r\n")
        return at_rcpt, [self.reply() for _ in accepted]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.command("QUIT")
        self.file.close()
        self.sock.close()


# -- looking at what was stored -----------------------------------------------------------


def counts(db: Database) -> dict[str, int]:
    with db.read() as session:
        return {
            name: session.exec(select(func.count()).select_from(model)).one()
            for name, model in TABLES.items()
        }


def outbox_rows(db: Database, ticket_id: int | None = None) -> list[Outbox]:
    with db.read() as session:
        query = select(Outbox).order_by(Outbox.id)  # type: ignore[arg-type]
        if ticket_id is not None:
            query = query.where(Outbox.ticket_id == ticket_id)
        return list(session.exec(query))


def files_under(root: Path) -> list[Path]:
    return [Path(d) / f for d, _, names in os.walk(root) for f in names]


# -- making things fail, for real --------------------------------------------------------


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def sqlite_file(url: str) -> str:
    return url.removeprefix("sqlite:///")


def _pg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def with_lock_timeout(url: str, ms: int) -> str:
    """PostgreSQL waits for a lock forever by default; a test wants the fault in ms."""
    if is_sqlite(url):
        return url
    return make_url(url).update_query_dict({"options": f"-c lock_timeout={ms}"}).render_as_string(
        hide_password=False
    )


@contextlib.contextmanager
def database_locked(url: str, table: str = "receipt") -> Iterator[None]:
    """Another connection holds the write lock: SQLite BEGIN EXCLUSIVE, PostgreSQL LOCK TABLE."""
    if is_sqlite(url):
        conn = sqlite3.connect(sqlite_file(url), isolation_level=None, timeout=1)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            yield
            conn.execute("ROLLBACK")
        finally:
            conn.close()
        return
    import psycopg

    with psycopg.connect(_pg_dsn(url)) as conn:
        conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            conn.rollback()


@contextlib.contextmanager
def inserts_refused(url: str, table: str) -> Iterator[None]:
    """A trigger makes the database refuse every insert into `table`, mid-transaction."""
    name = f"mg_test_refuse_{uuid.uuid4().hex[:8]}"
    if is_sqlite(url):
        conn = sqlite3.connect(sqlite_file(url), isolation_level=None, timeout=10)
        try:
            conn.execute(
                f"CREATE TRIGGER {name} BEFORE INSERT ON {table} "
                "BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
            )
            yield
            conn.execute(f"DROP TRIGGER {name}")
        finally:
            conn.close()
        return
    import psycopg

    with psycopg.connect(_pg_dsn(url), autocommit=True) as conn:
        conn.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'injected fault'; END $$"
        )
        conn.execute(
            f"CREATE TRIGGER {name} BEFORE INSERT ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {name}()"
        )
        try:
            yield
        finally:
            conn.execute(f"DROP TRIGGER {name} ON {table}")
            conn.execute(f"DROP FUNCTION {name}()")


@contextlib.contextmanager
def blob_store_broken(data_dir: Path) -> Iterator[None]:
    """The blob folder cannot be created (a file sits where it should be): as good as a full
    disk for a process running as root, whom permissions do not stop."""
    blobs = data_dir / "blobs"
    aside = data_dir / "blobs.aside"
    data_dir.mkdir(parents=True, exist_ok=True)
    if blobs.exists():
        blobs.rename(aside)
    blobs.write_bytes(b"not a folder")
    try:
        yield
    finally:
        blobs.unlink()
        if aside.exists():
            aside.rename(blobs)


# -- the real command, without a running server ------------------------------------------


def run_cli(
    config_path: Path, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """peers.run_cli, its exit status left to the caller to check."""
    return peers.run_cli(config_path, *args, check=False, stdin=stdin, env=env)


def data_dir_of(config_path: Path) -> Path:
    from mailgate import config as config_mod

    return config_mod.load(config_path).data_dir

