"""Fixtures and helpers for the mail-hygiene tests (issue 4): a helpdesk driven over real SMTP,
outbound mail read from the real sink, state read from the real database, and the mailgate log
read from its own logger. tests/conftest.py loads the fixtures (pytest_plugins).
"""

from __future__ import annotations

import contextlib
import logging
import re
import smtplib
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func
from sqlmodel import SQLModel, col, select

from mailgate.core.compose import AUTOMATIC_KINDS
from mailgate.store.db import Database
from mailgate.store.models import Account, Message, Outbox, Quarantine, Ticket
from tests.conftest import make_mail, send
from tests.support.peers import Mailgate, Received, SmtpSink, wait_until

SUPPORT = "support@example.com"
AGENT = "alice@helpdesk.example"
HOSTNAME = "mg.test"  # write_config's [mailgate] hostname


# -- config --------------------------------------------------------------------------------


def set_inbound(config_path: Path, **keys: Any) -> None:
    """Set keys of the [inbound] table of a config written by peers.write_config."""
    text = config_path.read_text()
    for key, value in keys.items():
        line = f"{key} = {value!r}".replace("'", '"')
        text, n = re.subn(rf"(?m)^{key} = .*$", line, text)
        if n == 0:
            text = text.replace("[inbound]\n", f"[inbound]\n{line}\n", 1)
    config_path.write_text(text)


@pytest.fixture
def roomy_mailgate(config_path: Path) -> Iterator[Mailgate]:
    """mailgate with the production size limit (40 MiB) and a 2 s parse deadline."""
    set_inbound(config_path, max_message_bytes=41943040, parse_timeout_seconds=2.0)
    mg = Mailgate(config_path)
    yield mg
    mg.stop()


@pytest.fixture
def patient_mailgate(config_path: Path) -> Iterator[Mailgate]:
    """The same with an 8 s parse deadline, for tests that time big or deep mail themselves
    (a loaded machine once took over 2 s for the 10,000-deep one)."""
    set_inbound(config_path, max_message_bytes=41943040, parse_timeout_seconds=8.0)
    mg = Mailgate(config_path)
    yield mg
    mg.stop()


# -- SMTP ----------------------------------------------------------------------------------


def smtp_data(
    port: int, raw: bytes, rcpts: list[str] | None = None, mail_from: str = "jean@client.example"
) -> tuple[int, str]:
    """One transaction; the reply to DATA (or to RCPT when that refused), never raising."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
        s.ehlo("client.example")
        code, text = s.mail(mail_from)
        assert code == 250, (code, text)
        for rcpt in rcpts or [SUPPORT]:
            code, text = s.rcpt(rcpt)
            if code != 250:
                return code, text.decode()
        code, text = s.data(raw)
        return code, text.decode()


def crlf(raw: bytes) -> bytes:
    return b"\r\n".join(raw.replace(b"\r\n", b"\n").split(b"\n"))


def msgid(value: object) -> str:
    return str(value or "").strip().strip("<>")


def addr(value: str) -> str:
    return parseaddr(value)[1].lower()


# -- the database --------------------------------------------------------------------------


def rows(db: Database, model: type[SQLModel], *where: Any) -> list[Any]:
    """Rows in insertion order."""
    with db.read() as session:
        query = select(model).where(*where) if where else select(model)
        key = getattr(model, "id", None)
        return list(session.exec(query.order_by(key) if key is not None else query))


def count(db: Database, model: type[SQLModel], *where: Any) -> int:
    with db.read() as session:
        query = select(func.count()).select_from(model)
        return int(session.exec(query.where(*where) if where else query).one())


def ticket(db: Database, ticket_id: int) -> Ticket:
    with db.read() as session:
        found = session.get(Ticket, ticket_id)
        assert found is not None, f"no ticket {ticket_id}"
        return found


def messages(db: Database, ticket_id: int) -> list[Message]:
    return rows(db, Message, Message.ticket_id == ticket_id)


def outbox_to(db: Database, address: str) -> list[Outbox]:
    return rows(db, Outbox, Outbox.to_addr == address)


def account_exists(db: Database, address: str) -> bool:
    return count(db, Account, Account.email == address) > 0


def held(db: Database) -> list[Quarantine]:
    return rows(db, Quarantine, Quarantine.status == "held")


def drained(db: Database) -> bool:
    """Nothing left for the sender: every outbox row was sent or failed."""
    return count(db, Outbox, Outbox.status == "queued") == 0


def wait_drained(mailgate: Mailgate, timeout: float = 30.0) -> None:
    wait_until(lambda: drained(mailgate.app.db), timeout, "the outbox to drain")


def automatic_rows(db: Database, address: str) -> list[Outbox]:
    return rows(
        db, Outbox, Outbox.to_addr == address, col(Outbox.kind).in_(sorted(AUTOMATIC_KINDS))
    )


# -- the mailgate log ----------------------------------------------------------------------


class LogRecorder(logging.Handler):
    """Every event the "mailgate" logger emits while installed: (event, fields)."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, dict[str, Any]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append((record.getMessage(), dict(getattr(record, "fields", {}))))

    def named(self, event: str) -> list[dict[str, Any]]:
        return [f for e, f in self.events if e == event]


@pytest.fixture
def mailgate_log(mailgate: Mailgate) -> Iterator[LogRecorder]:
    recorder = LogRecorder()
    logger = logging.getLogger("mailgate")
    logger.addHandler(recorder)
    yield recorder
    logger.removeHandler(recorder)


# -- a helpdesk conversation ---------------------------------------------------------------


@dataclass
class Pending:
    """A ticket an agent answered: it waits on the customer, the auto-resolve clock runs."""

    ticket_id: int
    customer: str
    agent_reply: Received  # what the customer got: its Reply-To carries their token


class Desk:
    """Drives mailgate the way people do: mail in over SMTP, mail out read from the sink."""

    def __init__(self, mailgate: Mailgate, sink: SmtpSink) -> None:
        self.mg = mailgate
        self.sink = sink
        self.db = mailgate.app.db

    def add_agent(self, email: str = AGENT, name: str = "Alice Martin") -> None:
        with self.db.write() as session:
            self.mg.app.accounts.add_agent(session, email, name)

    def open(self, customer: str, subject: str = "Imprimante en panne") -> tuple[int, str]:
        """A customer's first mail; returns (ticket id, its Message-ID)."""
        mid = f"{uuid.uuid4().hex}@client.example"
        send(self.mg.smtp_port, make_mail(sender=customer, subject=subject, message_id=f"<{mid}>"),
             mail_from=addr(customer))
        found = rows(self.db, Message, Message.message_id == mid)
        assert len(found) == 1, f"the first mail of {customer} was not ticketed"
        return found[0].ticket_id, mid

    def answer(self, ticket_id: int, agent: str = AGENT, body: str = "Essayez de la redémarrer.",
               ) -> Received:
        """The agent answers the notification of this ticket by mail; returns the reply the
        customer received."""
        notes = self.sink.wait_for(
            lambda ms: any(kind_of(m) == "agent_notification" and _ticket_of(m) == ticket_id
                           and agent in m.rcpt_tos for m in ms))
        note = next(m for m in notes if kind_of(m) == "agent_notification"
                    and _ticket_of(m) == ticket_id and agent in m.rcpt_tos)
        reply = EmailMessage()
        reply["From"] = f"Alice Martin <{agent}>"
        reply["To"] = str(note.msg["Reply-To"])
        reply["Subject"] = f"Re: {note.msg['Subject']}"
        reply["Message-ID"] = f"<{uuid.uuid4().hex}@helpdesk.example>"
        reply["In-Reply-To"] = str(note.msg["Message-ID"])
        reply["References"] = str(note.msg["Message-ID"])
        reply.set_content(f"{body}\n")
        send(self.mg.smtp_port, reply, rcpts=[addr(str(note.msg["Reply-To"]))], mail_from=agent)
        customer = ticket_requester(self.db, ticket_id)
        got = self.sink.wait_for(
            lambda ms: any(kind_of(m) == "agent_reply" and _ticket_of(m) == ticket_id for m in ms))
        return next(m for m in got if kind_of(m) == "agent_reply" and _ticket_of(m) == ticket_id
                    and customer in m.rcpt_tos)

    def pending(self, customer: str) -> Pending:
        ticket_id, _ = self.open(customer)
        reply = self.answer(ticket_id)
        assert ticket(self.db, ticket_id).status == "pending"
        return Pending(ticket_id, addr(customer), reply)


def ticket_requester(db: Database, ticket_id: int) -> str:
    with db.read() as session:
        t = session.get(Ticket, ticket_id)
        assert t is not None
        account = session.get(Account, t.requester_id)
        assert account is not None
        return account.email


_TICKET_HEADER = re.compile(rb"(?im)^X-Mailgate-Ticket: *(\d+)\r?$")
_KIND_HEADER = re.compile(rb"(?im)^X-Mailgate-Kind: *([a-z_]+)\r?$")


def kind_of(m: Received) -> str:
    found = _KIND_HEADER.search(m.raw.split(b"\r\n\r\n", 1)[0])
    return found.group(1).decode() if found else ""


def _ticket_of(m: Received) -> int | None:
    # Read from the bytes: sink predicates run over every message at every arrival.
    found = _TICKET_HEADER.search(m.raw.split(b"\r\n\r\n", 1)[0])
    return int(found.group(1)) if found else None


@pytest.fixture
def desk(mailgate: Mailgate, sink: SmtpSink) -> Desk:
    return Desk(mailgate, sink)


def reply_to(received: Received, sender: str, body: str, headers: dict[str, str] | None = None,
             subject: str | None = None) -> EmailMessage:
    """What a mail client (or an autoresponder) sends back to one of our mails."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = str(received.msg["Reply-To"] or received.msg["From"])
    msg["Subject"] = subject if subject is not None else f"Re: {received.msg['Subject']}"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@client.example>"
    msg["In-Reply-To"] = str(received.msg["Message-ID"])
    msg["References"] = str(received.msg["Message-ID"])
    msg.set_content(body)
    for k, v in (headers or {}).items():
        msg[k] = v
    return msg


def utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# -- two helpdesks that write to each other ------------------------------------------------


def peer_config(tmp: Path, *, hostname: str, support: str, smtp_port: int, relay_port: int) -> Path:
    """A mailgate whose outbound mail goes to another mailgate's SMTP listener."""
    folder = tmp / hostname
    folder.mkdir()
    cfg = folder / "mailgate.toml"
    cfg.write_text(
        f"""
[mailgate]
hostname = "{hostname}"
data_dir = "data"
secret_key = "secret-of-{hostname}-that-is-long-enough-to-sign"
warm_commands = false

[database]
url = "sqlite:///{folder / 'mailgate.db'}"

[inbound]
smtp_listen = "127.0.0.1:{smtp_port}"
lmtp_listen = ""
smtp_processes = 0

[addresses]
support = "{support}"

[outbound]
transport = "smtp://127.0.0.1:{relay_port}"
from_name = "Support {hostname}"

[portal]
listen = ""

[security]
verify_sender = "off"
"""
    )
    return cfg


# -- bounces -------------------------------------------------------------------------------


def dsn(original: Received, recipient: str, status: str, action: str = "failed") -> bytes:
    """A delivery status notification (RFC 3464) about one of our mails, as Postfix writes it."""
    head = original.raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    code = "550" if status.startswith("5") else "450"
    text = f"""From: Mail Delivery System <MAILER-DAEMON@mx.client.example>
To: support@example.com
Subject: Undelivered Mail Returned to Sender
Message-ID: <{uuid.uuid4().hex}@mx.client.example>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="dsn-b"

--dsn-b
Content-Type: text/plain; charset=us-ascii

I'm sorry to have to inform you that your message could not be delivered.

--dsn-b
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.client.example
Arrival-Date: Mon,  5 Jan 2026 09:00:00 +0000 (UTC)

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Diagnostic-Code: smtp; {code} {status} <{recipient}>: Recipient address rejected

--dsn-b
Content-Type: text/rfc822-headers

{head}
--dsn-b--
"""
    return crlf(text.encode())


# -- a poison message ----------------------------------------------------------------------


@contextlib.contextmanager
def poison_trigger(url: str, marker: str = "poison") -> Iterator[None]:
    """The database refuses any ticket whose subject holds `marker`: processing that mail
    crashes every time, mid-transaction, as a bug would; every other mail goes through."""
    name = f"mg_poison_{uuid.uuid4().hex[:8]}"
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, timeout=10)
        try:
            conn.execute(
                f"CREATE TRIGGER {name} BEFORE INSERT ON ticket WHEN NEW.subject LIKE "
                f"'%{marker}%' BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
            )
            yield
            conn.execute(f"DROP TRIGGER {name}")
        finally:
            conn.close()
        return
    import psycopg
    from sqlalchemy.engine import make_url

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'injected fault' USING ERRCODE = 'check_violation'; END $$"
        )
        conn.execute(
            f"CREATE TRIGGER {name} BEFORE INSERT ON ticket FOR EACH ROW "
            f"WHEN (NEW.subject LIKE '%{marker}%') EXECUTE FUNCTION {name}()"
        )
        try:
            yield
        finally:
            conn.execute(f"DROP TRIGGER {name} ON ticket")
            conn.execute(f"DROP FUNCTION {name}()")
