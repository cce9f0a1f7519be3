"""A support desk driven the way people drive it: mail over real SMTP to the running mailgate,
mail received by the real sink, replies built the way mail clients build them (Reply-To,
In-Reply-To, References, "Re:", quoted history). Reads go to the real database."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_mail, send
from tests.support.peers import Mailgate, Received, SmtpSink

DATA = Path(__file__).resolve().parents[1] / "data"
CUSTOMER = "Jean Dupont <jean@client.example>"
AGENT = "alice@helpdesk.example"
AGENT_NAME = "Alice Martin"


def addr(value: str) -> str:
    return parseaddr(value)[1].lower()


def msgid(received: Received, header: str = "Message-ID") -> str:
    return str(received.msg[header] or "").strip().strip("<>")


@dataclass
class Opened:
    """A ticket as its customer sees it: its id and the confirmation mail."""

    id: int
    message_id: str  # the customer's first mail
    confirmation: Received


class Desk:
    def __init__(self, mailgate: Mailgate, sink: SmtpSink) -> None:
        self.mg = mailgate
        self.sink = sink

    # -- people ----------------------------------------------------------------------------

    def add_agent(self, email: str = AGENT, name: str = AGENT_NAME, cli: bool = False) -> None:
        """`mailgate agent add` (cli=True), or the same service call in-process (faster)."""
        if cli:
            self.mg.cli("agent", "add", email, "--name", name)
            return
        with self.mg.app.db.write() as session:
            self.mg.app.accounts.add_agent(session, email, name)

    # -- mail in ---------------------------------------------------------------------------

    def send(self, msg: EmailMessage, rcpts: list[str] | None = None) -> None:
        to = rcpts or [addr(a) for a in str(msg["To"]).split(",")]
        send(self.mg.smtp_port, msg, rcpts=to, mail_from=addr(str(msg["From"])))

    def mail(
        self,
        sender: str,
        to: str,
        subject: str,
        body: str,
        headers: dict[str, str] | None = None,
    ) -> EmailMessage:
        return make_mail(
            sender=sender,
            to=to,
            subject=subject,
            body=body,
            message_id=f"<{uuid.uuid4().hex}@{addr(sender).split('@')[1]}>",
            headers={"Date": format_datetime(datetime.now(UTC)), **(headers or {})},
        )

    def open_ticket(
        self,
        sender: str = CUSTOMER,
        subject: str = "Imprimante en panne",
        body: str = "Bonjour,\nmon imprimante ne marche plus.\n",
        headers: dict[str, str] | None = None,
        rcpts: list[str] | None = None,
    ) -> Opened:
        msg = self.mail(sender, "support@example.com", subject, body, headers)
        self.send(msg, rcpts or ["support@example.com"])
        first = str(msg["Message-ID"]).strip("<>")
        confirmation = self.wait_mail("confirmation", addr(sender), in_reply_to=first)
        return Opened(int(str(confirmation.msg["X-Mailgate-Ticket"])), first, confirmation)

    def reply(
        self,
        to_mail: Received,
        sender: str,
        text: str,
        *,
        to: str | None = None,
        quote: bool = True,
        headers: dict[str, str] | None = None,
    ) -> EmailMessage:
        """What a mail client sends on "Reply": to the Reply-To, in the thread, history quoted."""
        original = to_mail.msg
        reply_to = addr(str(original["Reply-To"] or original["From"]))
        subject = str(original["Subject"])
        if not subject.lower().startswith("re:"):
            subject = "Re: " + subject
        parent = msgid(to_mail)
        refs = [*str(original["References"] or "").split(), f"<{parent}>"]
        body = text.rstrip("\n") + "\n"
        if quote:
            when = format_datetime(datetime.now(UTC) - timedelta(minutes=5))
            quoted = "\n".join("> " + line if line else ">" for line in to_mail.text().splitlines())
            body += f"\nLe {when}, {original['From']} a écrit :\n{quoted}\n"
        msg = self.mail(
            sender,
            to or reply_to,
            subject,
            body,
            {"In-Reply-To": f"<{parent}>", "References": " ".join(refs), **(headers or {})},
        )
        return msg

    # -- mail out --------------------------------------------------------------------------

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

        def fits(m: Received) -> bool:
            return (
                m.kind == kind
                and to in m.rcpt_tos
                and (in_reply_to is None or msgid(m, "In-Reply-To") == in_reply_to)
                and (ticket is None or str(m.msg["X-Mailgate-Ticket"]) == str(ticket))
                and where(m)
            )

        got = self.sink.wait_for(lambda ms: len([m for m in ms if fits(m)]) >= count)
        return [m for m in got if fits(m)][-1]

    # -- the database ----------------------------------------------------------------------

    def ticket(self, ticket_id: int) -> dict[str, Any]:
        from mailgate.services.ticket_views import show_ticket

        with self.mg.app.db.read() as session:
            data = show_ticket(session, ticket_id)
        assert data is not None, f"no ticket {ticket_id}"
        return data

    def tickets(self) -> list[dict[str, Any]]:
        from mailgate.services.ticket_views import list_tickets

        with self.mg.app.db.read() as session:
            return list_tickets(session)

    def ticket_row(self, ticket_id: int) -> Any:
        """The stored row, for fields the JSON does not show (pending_since, solved_at)."""
        from mailgate.store.models import Ticket

        with self.mg.app.db.read() as session:
            row = session.get(Ticket, ticket_id)
            assert row is not None
            session.expunge(row)
            return row

    def outbox(self, ticket_id: int, kind: str | None = None) -> list[dict[str, Any]]:
        return [o for o in self.ticket(ticket_id)["outbox"] if kind is None or o["kind"] == kind]


@pytest.fixture(name="desk")
def desk_fixture(mailgate: Mailgate, sink: SmtpSink) -> Desk:
    """Import `desk_fixture` into a test module to get the `desk` fixture."""
    return Desk(mailgate, sink)
