"""Tickets and their conversation: create, thread a reply, agent replies and commands, status.

Every method works inside the caller's session (one transaction per use case); nothing here
knows about SMTP, IMAP or HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from mailgate import logs
from mailgate.clock import Clock, as_utc
from mailgate.core import lifecycle
from mailgate.core.addresses import AddressBook
from mailgate.core.enums import Role, TicketStatus
from mailgate.core.language import best_evidence
from mailgate.core.quotes import strip_quotes
from mailgate.core.tokens import make_reply_token
from mailgate.services.accounts import UNSET, Accounts, Unset
from mailgate.services.agent_mail import AgentDesk
from mailgate.services.assemble import FileRef
from mailgate.services.file_links import make_file_token
from mailgate.services.incoming import Incoming, NewAttachment
from mailgate.services.outbox import Mailer
from mailgate.store.blobs import BlobStore
from mailgate.store.compiled import Statement
from mailgate.store.db import insert_values
from mailgate.store.models import (
    Account,
    Attachment,
    Collaborator,
    Message,
    Outbox,
    Ticket,
    TicketEvent,
)

__all__ = ["Conversations", "Incoming", "NewAttachment"]

# Compiled once, run on the session's DBAPI connection (store/compiled.py): every new ticket
# and reply looks the agents up.
_ACCOUNT: Any = Account.__table__  # type: ignore[attr-defined]
_AGENTS = Statement(
    select(*_ACCOUNT.columns).where(_ACCOUNT.c.role == Role.AGENT).order_by(_ACCOUNT.c.id)
)


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
        articles_in_confirmation: int = 0,  # [helpcentre] suggest_in_confirmation
    ) -> None:
        self.accounts = accounts
        self.mailer = mailer
        self.blobs = blobs
        self.addresses = addresses
        self.reply_key = reply_key
        self.clock = clock
        self.articles_in_confirmation = articles_in_confirmation
        self.agents = AgentDesk(self)  # mail from agents: services/agent_mail.py

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

    def mail_about(
        self,
        session: Session,
        ticket: Ticket,
        person: Account,
        kind: str,
        *,
        locale: str | None,
        context: dict[str, Any] | None = None,
        in_reply_to: str | None = None,
        references: tuple[str, ...] = (),
        **options: Any,
    ) -> Outbox:
        """Queue one mail about `ticket` to `person`: to their reply address on it (a reply
        threads back by token), with the ticket and its link in the template context."""
        tid = ticket.id or 0
        options.setdefault("to_name", person.name)
        return self.mailer.queue(
            session,
            kind=kind,
            to_addr=person.email,
            locale=locale,
            ticket_id=ticket.id,
            reply_to=self.reply_address(tid, person.id or 0),
            in_reply_to=in_reply_to,
            references=references,
            # tz: times in the mail on the person's clock (issue 15; "" -> default_timezone).
            context={
                "ticket": ticket,
                "ticket_url": self.ticket_url(tid),
                "tz": person.timezone,
                **(context or {}),
            },
            **options,
        )

    def move_status(
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
        ticket.pending_since = now if status == TicketStatus.PENDING else None
        ticket.solved_at = now if status == TicketStatus.SOLVED else None
        ticket.closed_at = now if status == TicketStatus.CLOSED else None
        if status == TicketStatus.PENDING:
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

    def store_message(
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
        """A message on a ticket of the session's (its times move with it)."""
        now = self.clock.now()
        msg = self.insert_message(
            session,
            ticket.id or 0,
            incoming,
            author=author,
            role=role,
            internal=internal,
            body_text=body_text,
            matched_by=matched_by,
            unverified_sender=unverified_sender,
            now=now,
        )
        ticket.updated_at = now
        if not internal and not incoming.automatic:
            ticket.last_exchange_at = now
        session.add(ticket)
        return msg

    def insert_message(
        self,
        session: Session,
        ticket_id: int,
        incoming: Incoming,
        *,
        author: Account | None,
        role: str,
        internal: bool,
        body_text: str,
        matched_by: str,
        now: datetime,
        unverified_sender: bool = False,
    ) -> Message:
        """The message and its attachments' rows, one Core INSERT each (every message goes
        through here); the ticket's times are the caller's to move."""
        msg = insert_values(
            session,
            Message,
            ticket_id=ticket_id,
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
        for part in incoming.attachments:
            insert_values(
                session,
                Attachment,
                message_pk=msg.id or 0,
                filename=_display_name(part.filename),
                content_type=part.content_type[:255],
                size=len(part.payload),
                sha256=self.blobs.put(part.payload),
            )
        return msg

    def _agents_to_notify(self, session: Session, ticket: Ticket) -> Sequence[Account]:
        if ticket.assignee_id is not None:
            agent = session.get(Account, ticket.assignee_id)
            if agent is not None and agent.role == Role.AGENT:
                return [agent]
        # Read-only snapshots from one SELECT: a notification only reads its agent.
        return [Account.model_construct(**row) for row in _AGENTS.mappings(session)]

    def _notify_agents(
        self,
        session: Session,
        ticket: Ticket,
        msg: Message,
        customer: Account,
        is_new: bool,
        *,
        was_deleted: bool = False,
    ) -> None:
        """Everything an agent needs to answer without opening anything: who wrote (and
        whether their From was shown to be theirs), the form's fields, the new text, and the
        customer's files, attached up to `notification_attachment_bytes` in all, beyond that
        as signed download links."""
        agents = [a for a in self._agents_to_notify(session, ticket) if a.id != customer.id]
        if not agents:
            return
        refs = tuple(self.thread_ids(session, ticket.id or 0))
        who = f"{customer.name} <{customer.email}>" if customer.name else customer.email
        attached, listed = self._files_for_agents(session, msg)
        fields = {
            "customer_id": ticket.customer_ref,
            "problem": ticket.problem,
            "broadcaster": ticket.broadcaster,
        }
        for agent in agents:
            self.mail_about(
                session,
                ticket,
                agent,
                "agent_notification",
                locale=agent.locale,
                in_reply_to=msg.message_id,
                references=refs,
                attachments=attached,
                context={
                    "customer": who,
                    "customer_email": customer.email,
                    "customer_name": customer.name,
                    "sender_auth": msg.sender_auth or "unchecked",
                    "channel": msg.channel,
                    "fields": {k: v for k, v in fields.items() if v},
                    "category": ticket.category,
                    "body": msg.body_text,
                    "files": listed,
                    "is_new": is_new,
                    "was_deleted": was_deleted,
                },
            )

    def _files_for_agents(
        self, session: Session, msg: Message
    ) -> tuple[list[FileRef], list[dict[str, Any]]]:
        """The message's files: those attached to the agent's mail (in order, while the
        total stays within the limit), and every file as a line (name, size, link or not)."""
        budget = self.mailer.settings.notification_attachment_bytes
        attached: list[FileRef] = []
        listed: list[dict[str, Any]] = []
        rows = session.exec(
            select(Attachment).where(Attachment.message_pk == msg.id).order_by(col(Attachment.id))
        )
        for row in rows:
            line: dict[str, Any] = {"filename": row.filename, "size": row.size, "url": None}
            if row.size <= budget:
                budget -= row.size
                attached.append(FileRef(row.sha256, row.filename, row.content_type))
            else:
                token = make_file_token(self.accounts.links, row)
                line["url"] = self.mailer.url(f"/files/{token}")
            listed.append(line)
        return attached, listed

    def message_files(self, session: Session, msg: Message) -> list[FileRef]:
        """Every file of a message, to ride on the mail that carries it (an agent's reply)."""
        rows = session.exec(
            select(Attachment).where(Attachment.message_pk == msg.id).order_by(col(Attachment.id))
        )
        return [FileRef(r.sha256, r.filename, r.content_type) for r in rows]

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

    def _requester(
        self, session: Session, incoming: Incoming, requester: Account | Unset | None
    ) -> tuple[Account, bool]:
        """(the sender's account, made just now?). A new one is one INSERT (a read-only
        snapshot: nothing changes it in the transaction that made it); a known one is the
        session's row, which may learn the sender's name and language."""
        locale, source = best_evidence(incoming.locale, incoming.detected_locale)
        found = (
            self.accounts.find(session, incoming.from_addr)
            if isinstance(requester, Unset)
            else requester
        )
        if found is None:
            made = self.accounts.create_customer(
                session, incoming.from_addr, incoming.from_name, locale, locale_source=source
            )
            return made, True
        return self.accounts.find_or_create_customer(
            session,
            incoming.from_addr,
            incoming.from_name,
            locale,
            found=found,
            locale_source=source,
        )

    def open_ticket(
        self,
        session: Session,
        incoming: Incoming,
        *,
        category: str | None,
        send_mail: bool = True,
        follow_up_of: Ticket | None = None,
        extra: dict[str, Any] | None = None,
        requester: Account | Unset | None = UNSET,
    ) -> tuple[Ticket, Message]:
        """A new ticket with its customer account (created if needed) and its first message.
        `requester`: the sender's account as the caller already found it (None: none)."""
        customer, created = self._requester(session, incoming, requester)
        now = self.clock.now()
        # A follow-up carries on the closed ticket: its subject (not "Re: [#3] ..."), its
        # category and the agent who had it.
        subject = follow_up_of.subject if follow_up_of else incoming.subject
        # One Core INSERT each for the ticket and its first message: neither changes again in
        # this transaction (a snapshot, not a tracked object; see store.db.insert_values).
        ticket = insert_values(
            session,
            Ticket,
            subject=(subject or "(no subject)")[:1000],
            status=TicketStatus.NEW,
            requester_id=customer.id or 0,
            category=category or (follow_up_of.category if follow_up_of else None),
            locale=customer.locale,
            channel=incoming.channel,
            created_at=now,
            updated_at=now,
            last_exchange_at=now,
            follow_up_of_id=follow_up_of.id if follow_up_of else None,
            assignee_id=follow_up_of.assignee_id if follow_up_of else None,
            **(extra or {}),
        )
        body = strip_quotes(incoming.text) if follow_up_of else incoming.text.strip()
        msg = self.insert_message(
            session,
            ticket.id or 0,
            incoming,
            author=customer,
            role=Role.CUSTOMER,
            internal=False,
            body_text=body,
            matched_by="follow-up" if follow_up_of else "new",
            now=now,
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
            self.mail_about(
                session,
                ticket,
                customer,
                kind,
                locale=customer.locale,
                in_reply_to=incoming.message_id,
                references=incoming.references,
                to_name=customer.name if echo else "",
                requested=incoming.channel == "portal",
                first_contact=first_contact,
                context={
                    "echo": echo,
                    "customer_name": customer.name if echo else "",
                    "old_ticket_id": follow_up_of.id if follow_up_of else None,
                    **self._articles_request(ticket, kind),
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

    def _articles_request(self, ticket: Ticket, kind: str) -> dict[str, Any]:
        """What the sender needs to list help-centre articles in a new ticket's confirmation
        (issue 13). The search runs when the mail is assembled, in the sender's process: on
        the single writer's path it cost more than the rest of a first contact."""
        if kind != "confirmation" or self.articles_in_confirmation <= 0:
            return {}
        return {
            "suggest": {
                "ticket_id": ticket.id or 0,
                "subject": ticket.subject,
                "locale": ticket.locale,
                "limit": self.articles_in_confirmation,
            }
        }

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
        if ticket.status == TicketStatus.CLOSED and not incoming.automatic:
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
        msg = self.store_message(
            session,
            ticket,
            incoming,
            author=sender,
            role=Role.CUSTOMER,
            internal=False,
            body_text=strip_quotes(incoming.text),
            matched_by=matched_by,
        )
        if incoming.automatic:
            # An out-of-office is kept on the ticket but changes nothing: no reopen, no reset
            # of the auto-resolve clock, no notification.
            logs.info("ticket.automatic_reply", ticket=ticket.id, message_id=incoming.message_id)
            return ticket, msg
        was_deleted = ticket.customer_deleted_at is not None
        if was_deleted:  # the customer writes again: back in their list, and the agents told
            ticket.customer_deleted_at = None
            session.add(
                TicketEvent(
                    ticket_id=ticket.id or 0,
                    actor_id=sender.id,
                    kind="customer_restored",
                    detail="the customer wrote on the ticket they had deleted",
                    created_at=self.clock.now(),
                )
            )
        self.move_status(session, ticket, lifecycle.after_customer_reply(ticket.status), sender.id)
        self._record_ccs(session, ticket, incoming)
        logs.info(
            "ticket.customer_reply",
            ticket=ticket.id,
            message_id=incoming.message_id,
            matched_by=matched_by,
        )
        if send_mail:
            self._notify_agents(session, ticket, msg, sender, is_new=False, was_deleted=was_deleted)
        return ticket, msg

    def set_status(
        self,
        session: Session,
        ticket: Ticket,
        status: str,
        actor: int | None,
        now: datetime | None = None,
    ) -> None:
        now = now or self.clock.now()
        self.move_status(session, ticket, status, actor, now)
        ticket.updated_at = now
        session.add(ticket)

    # -- jobs ----------------------------------------------------------------------------

    def auto_resolve(self, session: Session, ticket: Ticket, days: int, now: datetime) -> None:
        requester = session.get(Account, ticket.requester_id)
        since = ticket.pending_since  # our latest reply: the mail says when it was
        self.set_status(session, ticket, TicketStatus.SOLVED, None, now)
        if requester is None:
            return
        refs = tuple(self.thread_ids(session, ticket.id or 0))
        self.mail_about(
            session,
            ticket,
            requester,
            "auto_resolved",
            locale=requester.locale,  # what they speak now, if they chose since (issue 15)
            in_reply_to=refs[-1] if refs else None,
            references=refs,
            context={"days": days, "since": as_utc(since) if since else None},
        )


def _display_name(filename: str) -> str:
    """A sender's file name, kept for display and downloads only (never a path)."""
    cleaned = "".join(c for c in filename if c.isprintable() and c not in "/\\")
    return cleaned.strip().lstrip(".")[:255] or "attachment"
