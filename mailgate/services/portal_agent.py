"""The agents' side of the portal: the queue, the agent's view of a ticket, and its actions.

Agents (Account.role "agent") sign in like customers and see every ticket, internal notes and
how each mail joined its ticket included. Everything an agent does from the page (a public
reply, an internal note, status, assignee, category, collaborators) is one call of
AgentDesk.act, the very path an agent's mail and its `#` commands take (channel "portal"):
one rule for both, the same TicketEvents, the same `agent_reply` mail to the customer.

The role is checked again inside every transaction: the adapter's choice of page is a
convenience, never the access rule. What the queue and the page show is read by
services/agent_views.py (`queue`, `agent_ticket`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from sqlmodel import Session, col, select

from mailgate import logs
from mailgate.core.commands import STATUS_VALUES, Command, ParsedCommands, parse_commands
from mailgate.core.enums import Role
from mailgate.services import agent_views as views
from mailgate.services.accounts import normalise_email
from mailgate.services.agent_views import AgentTicketView, Queue, QueueFilter
from mailgate.services.incoming import NewAttachment
from mailgate.services.portal_tickets import TEXT_MAX, PortalTickets, Submitted
from mailgate.services.portal_views import AttachmentView, attachment_view
from mailgate.store.models import Account, Attachment, Message, Ticket


@dataclass(frozen=True)
class AgentAction:
    """The agent's form. `*_was` is what the page showed: a field is a command only when the
    agent changed it, so a reply never undoes what a colleague did meanwhile."""

    body: str = ""
    note: bool = False
    status: str = ""
    status_was: str = ""
    assignee: str = ""  # an agent's address, or "" for unassigned
    assignee_was: str = ""
    category: str = ""
    category_was: str = ""


def action_problems(action: AgentAction, files: int) -> list[str]:
    """What is wrong with the form before any database work (error codes, as in the pages)."""
    errors = []
    if len(action.body) > TEXT_MAX:
        errors.append("body.long")
    if action.status != action.status_was and action.status not in STATUS_VALUES:
        errors.append("status.invalid")
    if action.category != action.category_was and not _category_ok(action.category):
        errors.append("category.invalid")
    if (
        action.assignee != action.assignee_was
        and action.assignee
        and not _email_ok(action.assignee)
    ):
        errors.append("assignee.invalid")
    changed = (
        action.status != action.status_was
        or action.assignee != action.assignee_was
        or action.category != action.category_was
    )
    if not (action.body.strip() or files or changed):
        errors.append("body.nothing")
    return errors


def _one_command(line: str) -> Command | None:
    """`line` read by the mail commands' own parser: the portal's values obey the same rules
    (an address, a category name), and a value with a line break in it is refused."""
    if "\n" in line or "\r" in line:
        return None
    parsed = parse_commands(line)
    if parsed.errors or len(parsed.commands) != 1 or parsed.body.strip():
        return None
    return parsed.commands[0]


def _category_ok(name: str) -> bool:
    command = _one_command(f"#category {name}")
    return command is not None and command.argument == name


def _email_ok(email: str) -> bool:
    return _one_command(f"#cc add {email}") is not None


class PortalAgent:
    """Made by PortalTickets.agents: it shares its database, writer, blobs and form helpers."""

    def __init__(self, tickets: PortalTickets) -> None:
        self.tickets = tickets

    # -- reading -------------------------------------------------------------------------

    def is_agent(self, account_id: int) -> bool:
        with self.tickets.db.read() as session:
            return _agent(session, account_id) is not None

    def queue(
        self,
        account_id: int,
        wanted: QueueFilter,
        after: str | None = None,
        before: str | None = None,
    ) -> Queue | None:
        """A page of every ticket, latest exchange first (None: not an agent);
        keyset.BadCursor when `after` or `before` is not a cursor."""
        with self.tickets.db.read() as session:
            if _agent(session, account_id) is None:
                return None
            found = views.queue(
                session,
                account_id,
                wanted,
                self.tickets.clock.now(),
                after,
                before,
                sqlite=self.tickets.db.is_sqlite,
            )
        return replace(found, categories=self.categories())

    def categories(self) -> tuple[str, ...]:
        """The configured categories ([addresses.categories]), each once."""
        return tuple(dict.fromkeys(self.tickets.conversations.addresses.categories.values()))

    def show(
        self,
        account_id: int,
        ticket_id: int,
        after: str | None = None,
        before: str | None = None,
    ) -> AgentTicketView | None:
        """Any ticket, every message of it (notes included), for an agent; else None."""
        with self.tickets.db.read() as session:
            if _agent(session, account_id) is None:
                return None
            return views.agent_ticket(
                session,
                account_id,
                ticket_id,
                self.tickets.clean_html,
                categories=self.categories(),
                after=after,
                before=before,
            )

    def attachment(
        self, account_id: int, ticket_id: int, attachment_id: int
    ) -> tuple[AttachmentView, Path] | None:
        """Any file of any message of the ticket (an internal note's too), for an agent."""
        with self.tickets.db.read() as session:
            if _agent(session, account_id) is None:
                return None
            row = session.exec(
                select(Attachment)
                .join(Message, col(Message.id) == Attachment.message_pk)
                .where(Attachment.id == attachment_id, Message.ticket_id == ticket_id)
            ).first()
        blobs = self.tickets.blobs
        if row is None or not blobs.exists(row.sha256):
            return None
        return attachment_view(row), blobs.path(row.sha256)

    # -- acting --------------------------------------------------------------------------

    def act(
        self,
        account_id: int,
        ticket_id: int,
        action: AgentAction,
        uploads: Sequence[NewAttachment],
        nonce: str,
    ) -> Submitted:
        """The reply-or-note form: commands for what changed, then the text and files, all
        through AgentDesk.act. status: ok, invalid (errors), not_found (no such ticket, or
        the account is no agent)."""
        pt = self.tickets
        errors = action_problems(action, len(uploads)) + pt.check_uploads(uploads)
        if errors:
            return Submitted("invalid", ticket_id=ticket_id, errors=tuple(errors))
        pt.store_blobs(uploads)
        message_id = pt.message_id(account_id, nonce)

        def job(session: Session) -> Submitted:
            agent = _agent(session, account_id)
            ticket = session.get(Ticket, ticket_id)
            if agent is None or ticket is None:
                return Submitted("not_found")
            if pt.ticket_of_message(session, message_id) is not None:  # sent twice
                return Submitted("ok", ticket_id=ticket_id)
            commands = self._commands(session, ticket, action)
            if isinstance(commands, str):
                return Submitted("invalid", ticket_id=ticket_id, errors=(commands,))
            thread = tuple(pt.conversations.thread_ids(session, ticket_id))
            incoming = pt.incoming(
                agent, message_id, f"Re: {ticket.subject}", action.body, uploads, thread
            )
            parsed = ParsedCommands(commands=commands, errors=(), body=action.body)
            pt.conversations.agents.act(
                session, ticket, agent, incoming, parsed, matched_by="portal"
            )
            return Submitted("ok", ticket_id=ticket_id)

        done = pt.write(job)
        if done.status == "ok":
            logs.info("portal.agent_acted", ticket=ticket_id, agent=account_id, note=action.note)
        return done

    def collaborator(
        self, account_id: int, ticket_id: int, email: str, accept: bool, nonce: str
    ) -> Submitted:
        """Accept (or add) a collaborator, or drop one: `#cc add` / `#cc remove`."""
        pt = self.tickets
        email = normalise_email(email)
        if not _email_ok(email):
            return Submitted("invalid", ticket_id=ticket_id, errors=("collaborator.invalid",))
        message_id = pt.message_id(account_id, nonce)

        def job(session: Session) -> Submitted:
            agent = _agent(session, account_id)
            ticket = session.get(Ticket, ticket_id)
            if agent is None or ticket is None:
                return Submitted("not_found")
            incoming = pt.incoming(agent, message_id, f"Re: {ticket.subject}", "", ())
            command = Command("cc_add" if accept else "cc_remove", email)
            parsed = ParsedCommands(commands=(command,), errors=(), body="")
            pt.conversations.agents.act(
                session, ticket, agent, incoming, parsed, matched_by="portal"
            )
            return Submitted("ok", ticket_id=ticket_id)

        done = pt.write(job)
        if done.status == "ok":
            logs.info("portal.collaborator", ticket=ticket_id, agent=account_id, accept=accept)
        return done

    def _commands(
        self, session: Session, ticket: Ticket, action: AgentAction
    ) -> tuple[Command, ...] | str:
        """The commands the form asks for, as a mail would write them; an error code when
        the assignee is not an agent. A field already at its new value (a colleague did it, or
        the form was sent twice) is no command."""
        commands: list[Command] = []
        if action.note:
            commands.append(Command("note"))
        if action.status != action.status_was and action.status != ticket.status:
            commands.append(Command("status", action.status))
        if action.assignee != action.assignee_was:
            target = None
            if action.assignee:
                target = self.tickets.conversations.accounts.find(session, action.assignee)
                if target is None or target.role != Role.AGENT:
                    return "assignee.invalid"
            if ticket.assignee_id != (target.id if target else None):
                commands.append(Command("assign", target.email if target else ""))
        if action.category != action.category_was and action.category != ticket.category:
            commands.append(Command("category", action.category))
        return tuple(commands)


def _agent(session: Session, account_id: int) -> Account | None:
    account = session.get(Account, account_id)
    # `mailgate agent remove` makes the account a customer again: it stops here at once.
    return account if account is not None and account.role == Role.AGENT else None


__all__ = ["AgentAction", "PortalAgent", "action_problems"]
