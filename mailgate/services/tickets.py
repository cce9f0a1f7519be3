"""Tickets and their conversation: create, thread a reply, agent replies and commands, status.

Every method works inside the caller's session (one transaction per use case); nothing here
knows about SMTP, IMAP or HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from mailgate import logs
from mailgate.clock import Clock
from mailgate.core import lifecycle
from mailgate.core.addresses import AddressBook
from mailgate.core.commands import CommandError, ParsedCommands, parse_commands
from mailgate.core.quotes import strip_quotes
from mailgate.core.tokens import make_reply_token
from mailgate.services.accounts import Accounts
from mailgate.services.outbox import Mailer
from mailgate.store.blobs import BlobStore
from mailgate.store.models import (
    Account,
    Attachment,
    Collaborator,
    Message,
    Ticket,
    TicketEvent,
)


@dataclass(frozen=True)
class NewAttachment:
    filename: str
    content_type: str
    payload: bytes


@dataclass(frozen=True)
class Incoming:
    """What a service needs of an inbound message, whatever channel it came by."""

    message_id: str
    subject: str
    text: str
    html: str | None
    from_addr: str
    from_name: str
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    cc: tuple[str, ...]
    attachments: tuple[NewAttachment, ...]
    locale: str | None
    raw_sha256: str | None
    channel: str
    automatic: bool = False
    # The sender's address was shown to be theirs (DMARC, or aligned SPF/DKIM, by our MTA or by
    # our own checks): only then may mail to a never-heard-from address echo their text.
    sender_verified: bool = False
    sender_auth: str = ""  # the verdict recorded on the message: pass | fail | none | ""


class Conversations:
    def __init__(
        self,
        *,
        accounts: Accounts,
        mailer: Mailer,
        blobs: BlobStore,
        addresses: AddressBook,
        reply_key: bytes,
        clock: Clock,
    ) -> None:
        self.accounts = accounts
        self.mailer = mailer
        self.blobs = blobs
        self.addresses = addresses
        self.reply_key = reply_key
        self.clock = clock

    # -- helpers -------------------------------------------------------------------------

    def reply_address(self, ticket_id: int, account_id: int) -> str:
        return self.addresses.reply_address(make_reply_token(self.reply_key, ticket_id, account_id))

    def ticket_url(self, ticket_id: int) -> str:
        return self.mailer.url(f"/tickets/{ticket_id}")

    def thread_ids(self, session: Session, ticket_id: int) -> list[str]:
        """Message-IDs of the ticket in order: the first (the root) and the latest ones."""
        ids = list(
            session.exec(
                select(Message.message_id)
                .where(Message.ticket_id == ticket_id)
                .order_by(col(Message.id))
            )
        )
        return ids[:1] + ids[1:][-9:]

    def _set_status(
        self,
        session: Session,
        ticket: Ticket,
        status: str,
        actor: int | None,
        now: datetime | None = None,
    ) -> None:
        if ticket.status == status:
            return
        # Jobs pass their own `now` (`jobs run --now`): solved_at then counts from that time.
        now = now or self.clock.now()
        old = ticket.status
        ticket.status = status
        ticket.pending_since = now if status == "pending" else None
        ticket.solved_at = now if status == "solved" else None
        ticket.closed_at = now if status == "closed" else None
        if status == "pending":
            ticket.auto_resolve_paused = False
        session.add(
            TicketEvent(
                ticket_id=ticket.id or 0,
                actor_id=actor,
                kind="status",
                detail=f"{old}->{status}",
                created_at=now,
            )
        )
        logs.info("ticket.status", ticket=ticket.id, old=old, new=status)

    def _store_message(
        self,
        session: Session,
        ticket: Ticket,
        incoming: Incoming,
        *,
        author: Account | None,
        role: str,
        internal: bool,
        body_text: str,
        matched_by: str,
        unverified_sender: bool = False,
    ) -> Message:
        now = self.clock.now()
        msg = Message(
            ticket_id=ticket.id or 0,
            author_id=author.id if author else None,
            role=role,
            internal=internal,
            automatic=incoming.automatic,
            subject=incoming.subject,
            body_text=body_text,
            full_text=incoming.text,
            body_html=incoming.html,
            message_id=incoming.message_id,
            in_reply_to=" ".join(incoming.in_reply_to),
            references=" ".join(incoming.references),
            raw_sha256=incoming.raw_sha256,
            matched_by=matched_by,
            channel=incoming.channel,
            sender_auth=incoming.sender_auth,
            unverified_sender=unverified_sender,
            created_at=now,
        )
        session.add(msg)
        session.flush()
        for part in incoming.attachments:
            digest = self.blobs.put(part.payload)
            session.add(
                Attachment(
                    message_pk=msg.id or 0,
                    filename=_display_name(part.filename),
                    content_type=part.content_type[:255],
                    size=len(part.payload),
                    sha256=digest,
                )
            )
        ticket.updated_at = now
        if not internal and not incoming.automatic:
            ticket.last_exchange_at = now
        session.add(ticket)
        return msg

    def _agents_to_notify(self, session: Session, ticket: Ticket) -> Sequence[Account]:
        if ticket.assignee_id is not None:
            agent = session.get(Account, ticket.assignee_id)
            if agent is not None and agent.role == "agent":
                return [agent]
        return list(
            session.exec(select(Account).where(Account.role == "agent").order_by(col(Account.id)))
        )

    def _notify_agents(
        self, session: Session, ticket: Ticket, msg: Message, customer: Account, is_new: bool
    ) -> None:
        refs = tuple(self.thread_ids(session, ticket.id or 0))
        for agent in self._agents_to_notify(session, ticket):
            if agent.id == customer.id:
                continue
            self.mailer.queue(
                session,
                kind="agent_notification",
                to_addr=agent.email,
                to_name=agent.name,
                locale=agent.locale,
                ticket_id=ticket.id,
                reply_to=self.reply_address(ticket.id or 0, agent.id or 0),
                in_reply_to=msg.message_id,
                references=refs,
                context={
                    "ticket": ticket,
                    "customer": f"{customer.name} <{customer.email}>"
                    if customer.name
                    else customer.email,
                    "body": msg.body_text,
                    "ticket_url": self.ticket_url(ticket.id or 0),
                    "is_new": is_new,
                },
            )

    def _record_ccs(self, session: Session, ticket: Ticket, incoming: Incoming) -> None:
        """CCs become *pending* collaborators: they get nothing until an agent accepts them."""
        for addr in incoming.cc:
            if addr == incoming.from_addr or self.addresses.resolve(addr) is not None:
                continue
            exists = session.exec(
                select(Collaborator).where(
                    Collaborator.ticket_id == ticket.id, Collaborator.email == addr
                )
            ).first()
            if exists is None:
                session.add(
                    Collaborator(ticket_id=ticket.id or 0, email=addr, created_at=self.clock.now())
                )

    # -- use cases -----------------------------------------------------------------------

    def open_ticket(
        self,
        session: Session,
        incoming: Incoming,
        *,
        category: str | None,
        send_mail: bool = True,
        follow_up_of: Ticket | None = None,
        extra: dict[str, Any] | None = None,
    ) -> tuple[Ticket, Message]:
        """A new ticket with its customer account (created if needed) and its first message."""
        customer, created = self.accounts.find_or_create_customer(
            session, incoming.from_addr, incoming.from_name, incoming.locale
        )
        now = self.clock.now()
        ticket = Ticket(
            subject=(incoming.subject or "(no subject)")[:1000],
            status="new",
            requester_id=customer.id or 0,
            category=category or (follow_up_of.category if follow_up_of else None),
            locale=customer.locale,
            channel=incoming.channel,
            created_at=now,
            updated_at=now,
            last_exchange_at=now,
            follow_up_of_id=follow_up_of.id if follow_up_of else None,
            **(extra or {}),
        )
        session.add(ticket)
        session.flush()
        body = strip_quotes(incoming.text) if follow_up_of else incoming.text.strip()
        msg = self._store_message(
            session,
            ticket,
            incoming,
            author=customer,
            role="customer",
            internal=False,
            body_text=body,
            matched_by="follow-up" if follow_up_of else "new",
        )
        self._record_ccs(session, ticket, incoming)
        logs.info(
            "ticket.created",
            ticket=ticket.id,
            message_id=incoming.message_id,
            requester=customer.email,
            category=ticket.category,
        )
        if send_mail:
            kind = "follow_up" if follow_up_of else "confirmation"
            # First contact: this mail made the account, so we never heard from the address
            # before. Unless the sender was verified, its From may be forged: the mail must not
            # carry the name or subject they chose to a stranger (no backscatter spam). A ticket
            # opened in the portal was asked for by a signed-in person: not an auto-reply.
            first_contact = created
            echo = not first_contact or incoming.sender_verified
            self.mailer.queue(
                session,
                kind=kind,
                to_addr=customer.email,
                to_name=customer.name if echo else "",
                locale=customer.locale,
                ticket_id=ticket.id,
                reply_to=self.reply_address(ticket.id or 0, customer.id or 0),
                in_reply_to=incoming.message_id,
                references=incoming.references,
                requested=incoming.channel == "portal",
                first_contact=first_contact,
                context={
                    "ticket": ticket,
                    "echo": echo,
                    "customer_name": customer.name if echo else "",
                    "ticket_url": self.ticket_url(ticket.id or 0),
                    "old_ticket_id": follow_up_of.id if follow_up_of else None,
                },
            )
            if created:
                self.accounts.queue_activation(
                    session,
                    customer,
                    ticket.id,
                    incoming.message_id,
                    first_contact=first_contact,
                    echo=echo,
                )
            self._notify_agents(session, ticket, msg, customer, is_new=True)
        return ticket, msg

    def customer_reply(
        self,
        session: Session,
        ticket: Ticket,
        sender: Account,
        incoming: Incoming,
        *,
        matched_by: str,
        send_mail: bool = True,
    ) -> tuple[Ticket, Message]:
        """A reply from the requester or a collaborator. Closed tickets get a follow-up."""
        if ticket.status == "closed" and not incoming.automatic:
            # The same mail to two of our addresses ("reply all") makes one follow-up.
            earlier = session.exec(
                select(Ticket, Message)
                .join(Message, col(Message.ticket_id) == Ticket.id)
                .where(
                    Ticket.follow_up_of_id == ticket.id,
                    Message.message_id == incoming.message_id,
                )
            ).first()
            if earlier is not None:
                return earlier[0], earlier[1]
            return self.open_ticket(
                session, incoming, category=None, send_mail=send_mail, follow_up_of=ticket
            )
        msg = self._store_message(
            session,
            ticket,
            incoming,
            author=sender,
            role="customer",
            internal=False,
            body_text=strip_quotes(incoming.text),
            matched_by=matched_by,
        )
        if incoming.automatic:
            # An out-of-office is kept on the ticket but changes nothing: no reopen, no reset
            # of the auto-resolve clock, no notification.
            logs.info("ticket.automatic_reply", ticket=ticket.id, message_id=incoming.message_id)
            return ticket, msg
        self._set_status(session, ticket, lifecycle.after_customer_reply(ticket.status), sender.id)
        self._record_ccs(session, ticket, incoming)
        logs.info(
            "ticket.customer_reply",
            ticket=ticket.id,
            message_id=incoming.message_id,
            matched_by=matched_by,
        )
        if send_mail:
            self._notify_agents(session, ticket, msg, sender, is_new=False)
        return ticket, msg

    def unverified_agent_mail(
        self, session: Session, ticket: Ticket, sender: Account, incoming: Incoming, matched_by: str
    ) -> Message:
        """Mail with an agent's From but without that agent's token, or whose From could not be
        shown to be theirs (SPF/DKIM/DMARC): From is easy to forge, so it is kept as an internal
        note flagged "unverified sender"; commands in it are text, nothing reaches the customer."""
        logs.warning(
            "ticket.unverified_agent_mail",
            ticket=ticket.id,
            sender=sender.email,
            message_id=incoming.message_id,
            sender_auth=incoming.sender_auth or "unchecked",
        )
        return self._store_message(
            session,
            ticket,
            incoming,
            author=sender,
            role="agent",
            internal=True,
            body_text=strip_quotes(incoming.text),
            matched_by=matched_by,
            unverified_sender=True,
        )

    def agent_mail(
        self,
        session: Session,
        ticket: Ticket,
        agent: Account,
        incoming: Incoming,
        *,
        matched_by: str,
        send_mail: bool = True,
    ) -> Message:
        """Mail from the agent the token was made for: commands, then a reply or a note."""
        parsed = parse_commands(incoming.text)
        errors = list(parsed.errors) + self._check_commands(session, parsed, incoming.text)
        body = strip_quotes(parsed.body, fallback=False)
        if errors:
            msg = self._store_message(
                session,
                ticket,
                incoming,
                author=agent,
                role="agent",
                internal=True,
                body_text=body,
                matched_by=matched_by,
            )
            logs.warning(
                "ticket.command_error", ticket=ticket.id, agent=agent.email, errors=len(errors)
            )
            self.mailer.queue(
                session,
                kind="command_error",
                to_addr=agent.email,
                to_name=agent.name,
                locale=agent.locale,
                ticket_id=ticket.id,
                reply_to=self.reply_address(ticket.id or 0, agent.id or 0),
                in_reply_to=incoming.message_id,
                references=incoming.references,
                context={"ticket": ticket, "errors": errors},
            )
            return msg
        public = not parsed.is_note and bool(body)
        msg = self._store_message(
            session,
            ticket,
            incoming,
            author=agent,
            role="agent",
            internal=not public,
            body_text=body,
            matched_by=matched_by,
        )
        requested_status = self._apply_commands(session, ticket, agent, parsed)
        if public:
            if send_mail:
                self._send_agent_reply(session, ticket, agent, msg)
            self._set_status(session, ticket, lifecycle.after_agent_reply(ticket.status), agent.id)
            if ticket.status == "pending":
                # "7 days without your answer" run from our latest reply, not the first one.
                ticket.pending_since = self.clock.now()
        if requested_status:
            self._set_status(session, ticket, requested_status, agent.id)
        logs.info(
            "ticket.agent_mail",
            ticket=ticket.id,
            agent=agent.email,
            public=public,
            commands=len(parsed.commands),
        )
        return msg

    def _check_commands(
        self, session: Session, parsed: ParsedCommands, text: str
    ) -> list[CommandError]:
        """Errors only known with the database (an unknown agent): nothing is applied then."""
        errors = []
        for command in parsed.commands:
            if command.name == "assign":
                target = self.accounts.find(session, command.argument)
                if target is None or target.role != "agent":
                    number, line = _command_line(text, "#assign")
                    errors.append(
                        CommandError(number, line, f"'{command.argument}' is not an agent")
                    )
        return errors

    def _apply_commands(
        self, session: Session, ticket: Ticket, agent: Account, parsed: ParsedCommands
    ) -> str | None:
        status = None
        now = self.clock.now()
        for command in parsed.commands:
            if command.name == "status":
                status = command.argument
            elif command.name == "assign":
                target = self.accounts.find(session, command.argument)
                ticket.assignee_id = target.id if target else ticket.assignee_id
                session.add(
                    TicketEvent(
                        ticket_id=ticket.id or 0,
                        actor_id=agent.id,
                        kind="assign",
                        detail=command.argument,
                        created_at=now,
                    )
                )
            elif command.name == "category":
                ticket.category = command.argument
                session.add(
                    TicketEvent(
                        ticket_id=ticket.id or 0,
                        actor_id=agent.id,
                        kind="category",
                        detail=command.argument,
                        created_at=now,
                    )
                )
            elif command.name in ("cc_add", "cc_remove"):
                self._set_collaborator(session, ticket, command.argument, command.name == "cc_add")
        session.add(ticket)
        return status

    def _set_collaborator(self, session: Session, ticket: Ticket, email: str, accept: bool) -> None:
        row = session.exec(
            select(Collaborator).where(
                Collaborator.ticket_id == ticket.id, Collaborator.email == email
            )
        ).first()
        if accept:
            if row is None:
                row = Collaborator(
                    ticket_id=ticket.id or 0, email=email, created_at=self.clock.now()
                )
            row.status = "accepted"
            session.add(row)
            # An account lets the collaborator's reply token be bound to them.
            self.accounts.find_or_create_customer(session, email)
        elif row is not None:
            session.delete(row)
        logs.info("ticket.collaborator", ticket=ticket.id, email=email, accepted=accept)

    def accepted_collaborators(self, session: Session, ticket_id: int) -> list[str]:
        return list(
            session.exec(
                select(Collaborator.email).where(
                    Collaborator.ticket_id == ticket_id, Collaborator.status == "accepted"
                )
            )
        )

    def _send_agent_reply(
        self, session: Session, ticket: Ticket, agent: Account, msg: Message
    ) -> None:
        requester = session.get(Account, ticket.requester_id)
        if requester is None:
            return
        last_customer = session.exec(
            select(Message.message_id)
            .where(Message.ticket_id == ticket.id, Message.role == "customer")
            .order_by(col(Message.id).desc())
        ).first()
        refs = tuple(self.thread_ids(session, ticket.id or 0))
        recipients = [requester] + [
            self.accounts.find_or_create_customer(session, email)[0]
            for email in self.accepted_collaborators(session, ticket.id or 0)
        ]
        for person in recipients:
            self.mailer.queue(
                session,
                kind="agent_reply",
                to_addr=person.email,
                to_name=person.name,
                locale=ticket.locale,
                ticket_id=ticket.id,
                reply_to=self.reply_address(ticket.id or 0, person.id or 0),
                in_reply_to=last_customer,
                references=refs,
                from_name=agent.name or None,
                context={
                    "ticket": ticket,
                    "body": msg.body_text,
                    "agent_name": agent.name,
                    "ticket_url": self.ticket_url(ticket.id or 0),
                },
            )

    def set_status(
        self,
        session: Session,
        ticket: Ticket,
        status: str,
        actor: int | None,
        now: datetime | None = None,
    ) -> None:
        now = now or self.clock.now()
        self._set_status(session, ticket, status, actor, now)
        ticket.updated_at = now
        session.add(ticket)

    # -- jobs ----------------------------------------------------------------------------

    def auto_resolve(self, session: Session, ticket: Ticket, days: int, now: datetime) -> None:
        requester = session.get(Account, ticket.requester_id)
        self.set_status(session, ticket, "solved", None, now)
        if requester is None:
            return
        refs = tuple(self.thread_ids(session, ticket.id or 0))
        self.mailer.queue(
            session,
            kind="auto_resolved",
            to_addr=requester.email,
            to_name=requester.name,
            locale=ticket.locale,
            ticket_id=ticket.id,
            reply_to=self.reply_address(ticket.id or 0, requester.id or 0),
            in_reply_to=refs[-1] if refs else None,
            references=refs,
            context={"ticket": ticket, "days": days, "ticket_url": self.ticket_url(ticket.id or 0)},
        )


def _command_line(text: str, word: str) -> tuple[int, str]:
    """The 1-based number and text of the first line starting with a command word."""
    for number, line in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        if line.lower().startswith(word):
            return number, line.strip()
    return 0, word


def _display_name(filename: str) -> str:
    """A sender's file name, kept for display and downloads only (never a path)."""
    cleaned = "".join(c for c in filename if c.isprintable() and c not in "/\\")
    return cleaned.strip().lstrip(".")[:255] or "attachment"
