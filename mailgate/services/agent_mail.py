"""Mail from agents: a reply or a note, the `#` commands in it, and the reply it sends.

An agent acts only through their own reply token with a verified From (services/ingest.py
decides that); anything else from an agent's address is kept as a flagged internal note.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlmodel import Session, col, select

from mailgate import logs
from mailgate.core import lifecycle
from mailgate.core.commands import CommandError, ParsedCommands, parse_commands
from mailgate.core.enums import Role, TicketStatus
from mailgate.core.quotes import strip_quotes
from mailgate.services.incoming import Incoming
from mailgate.store.models import Account, Collaborator, Message, Ticket, TicketEvent

if TYPE_CHECKING:
    from mailgate.services.tickets import Conversations


class AgentDesk:
    def __init__(self, conversations: Conversations) -> None:
        self.conv = conversations

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
        return self.conv.store_message(
            session,
            ticket,
            incoming,
            author=sender,
            role=Role.AGENT,
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
        msg = self.act(
            session,
            ticket,
            agent,
            incoming,
            parse_commands(incoming.text),
            matched_by=matched_by,
            send_mail=send_mail,
        )
        assert msg is not None  # a mail is always kept on the ticket
        return msg

    def act(
        self,
        session: Session,
        ticket: Ticket,
        agent: Account,
        incoming: Incoming,
        parsed: ParsedCommands,
        *,
        matched_by: str,
        send_mail: bool = True,
    ) -> Message | None:
        """THE agent action, whichever way the agent acted (a mail's `#` commands, the
        portal's forms): commands, then a public reply or an internal note, so one rule holds
        for both. Any error: nothing applied, the text kept as a note, the agent told.
        Returns the message stored (None: the portal sent commands only, no text)."""
        errors = list(parsed.errors) + self._check_commands(session, parsed, incoming.text)
        body = (
            strip_quotes(parsed.body, fallback=False)
            if incoming.channel != "portal"
            else (parsed.body.strip())
        )
        if errors:
            # Nothing applied: the note keeps every word the agent wrote, commands included
            # ("#note call back tomorrow" on one line is an error, not lost text).
            msg = self.conv.store_message(
                session,
                ticket,
                incoming,
                author=agent,
                role=Role.AGENT,
                internal=True,
                body_text=strip_quotes(incoming.text, fallback=False).strip(),
                matched_by=matched_by,
            )
            logs.warning(
                "ticket.command_error", ticket=ticket.id, agent=agent.email, errors=len(errors)
            )
            self.conv.mail_about(
                session,
                ticket,
                agent,
                "command_error",
                locale=agent.locale,
                in_reply_to=incoming.message_id,
                references=incoming.references,
                context={"errors": errors},
            )
            return msg
        has_content = bool(body) or bool(incoming.attachments)
        public = not parsed.is_note and has_content
        msg = None
        if has_content or incoming.channel != "portal":
            msg = self.conv.store_message(
                session,
                ticket,
                incoming,
                author=agent,
                role=Role.AGENT,
                internal=not public,
                body_text=body,
                matched_by=matched_by,
            )
        requested_status = self._apply_commands(session, ticket, agent, parsed)
        if public and msg is not None:
            if ticket.assignee_id is None:  # whoever answers an unassigned ticket takes it
                self.assign(session, ticket, agent, agent)
            if send_mail:
                self._send_agent_reply(session, ticket, agent, msg)
            self.conv.move_status(
                session, ticket, lifecycle.after_agent_reply(ticket.status), agent.id
            )
            if ticket.status == TicketStatus.PENDING:
                # "7 days without your answer" run from our latest reply, not the first one.
                ticket.pending_since = self.conv.clock.now()
        if requested_status:
            self.conv.move_status(session, ticket, requested_status, agent.id)
        ticket.updated_at = self.conv.clock.now()
        session.add(ticket)
        logs.info(
            "ticket.agent_action",
            ticket=ticket.id,
            agent=agent.email,
            channel=incoming.channel,
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
            if command.name == "assign" and command.argument:
                target = self.conv.accounts.find(session, command.argument)
                if target is None or target.role != Role.AGENT:
                    number, line = _command_line(text, "#assign")
                    errors.append(
                        CommandError(
                            number,
                            line,
                            f"'{command.argument}' is not an agent",
                            "not_agent",
                            {"address": command.argument},
                        )
                    )
        return errors

    def _apply_commands(
        self, session: Session, ticket: Ticket, agent: Account, parsed: ParsedCommands
    ) -> str | None:
        status = None
        now = self.conv.clock.now()
        for command in parsed.commands:
            if command.name == "status":
                status = command.argument
            elif command.name == "assign":
                # "" (the portal's "unassigned") takes the ticket off everyone's list.
                target = self.conv.accounts.find(session, command.argument)
                self.assign(session, ticket, agent, target if command.argument else None)
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

    def assign(
        self, session: Session, ticket: Ticket, actor: Account, target: Account | None
    ) -> None:
        new_id = target.id if target is not None else None
        if ticket.assignee_id == new_id:
            return
        ticket.assignee_id = new_id
        session.add(
            TicketEvent(
                ticket_id=ticket.id or 0,
                actor_id=actor.id,
                kind="assign",
                detail=target.email if target is not None else "",
                created_at=self.conv.clock.now(),
            )
        )
        logs.info("ticket.assigned", ticket=ticket.id, to=target.email if target else None)

    def _set_collaborator(self, session: Session, ticket: Ticket, email: str, accept: bool) -> None:
        row = session.exec(
            select(Collaborator).where(
                Collaborator.ticket_id == ticket.id, Collaborator.email == email
            )
        ).first()
        if accept:
            if row is None:
                row = Collaborator(
                    ticket_id=ticket.id or 0, email=email, created_at=self.conv.clock.now()
                )
            row.status = "accepted"
            session.add(row)
            # An account lets the collaborator's reply token be bound to them.
            self.conv.accounts.find_or_create_customer(session, email)
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
            .where(Message.ticket_id == ticket.id, Message.role == Role.CUSTOMER)
            .order_by(col(Message.id).desc())
        ).first()
        refs = tuple(self.conv.thread_ids(session, ticket.id or 0))
        recipients = [requester] + [
            self.conv.accounts.find_or_create_customer(session, email)[0]
            for email in self.accepted_collaborators(session, ticket.id or 0)
        ]
        files = self.conv.message_files(session, msg)  # the agent's files go to the customer
        for person in recipients:
            self.conv.mail_about(
                session,
                ticket,
                person,
                "agent_reply",
                locale=person.locale,  # each in their own language (issue 15)
                in_reply_to=last_customer,
                references=refs,
                from_name=agent.name or None,
                attachments=files,
                context={"body": msg.body_text, "agent_name": agent.name},
            )


def _command_line(text: str, word: str) -> tuple[int, str]:
    """The 1-based number and text of the first line starting with a command word."""
    for number, line in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        if line.lower().startswith(word):
            return number, line.strip()
    return 0, word
