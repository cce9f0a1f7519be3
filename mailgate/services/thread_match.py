"""Which ticket an inbound mail joins, and why (the I/O half of core/match.py).

The candidates come from the signed reply token in the recipient address, In-Reply-To,
References and the `[#ID]` subject tag; core.match.choose decides among them.
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from mailgate import logs
from mailgate.core.addresses import Recipient
from mailgate.core.enums import Role
from mailgate.core.mail import InboundMail
from mailgate.core.match import Candidate, choose, subject_ticket_ids
from mailgate.core.tokens import read_reply_token
from mailgate.store.models import Account, Collaborator, Message, Outbox, Ticket


class ThreadMatcher:
    def __init__(self, reply_key: bytes) -> None:
        self.reply_key = reply_key

    def match(
        self, session: Session, mail: InboundMail, rcpt: Recipient, sender: Account | None
    ) -> Candidate | None:
        candidates: list[Candidate] = []

        def add(ticket_id: int, via: str) -> None:
            ticket = session.get(Ticket, ticket_id)
            if ticket is not None:
                candidates.append(
                    Candidate(ticket_id, via, self.sender_allowed(session, ticket, sender))
                )

        if rcpt.detail:
            token = read_reply_token(self.reply_key, rcpt.detail)
            # A token is bound to the person it was sent to: anyone else holding it is treated
            # like a stranger (it may have been forwarded, or leaked). A disabled account's
            # tokens (a removed agent's) bind nothing any more.
            if (
                token is not None
                and sender is not None
                and sender.id == token.account_id
                and sender.disabled_at is None
            ):
                add(token.ticket_id, "token")
            else:
                logs.warning(
                    "ingest.foreign_token", message_id=mail.message_id, sender=mail.from_addr
                )
        for tid in self._tickets_for_ids(session, mail.in_reply_to):
            add(tid, "in-reply-to")
        for tid in self._tickets_for_ids(session, mail.references):
            add(tid, "references")
        for tid in subject_ticket_ids(mail.subject):
            add(tid, "subject")
        chosen = choose(candidates)
        if chosen is None and candidates:
            logs.warning(
                "ingest.thread_refused",
                message_id=mail.message_id,
                sender=mail.from_addr,
                tickets=",".join(str(c.ticket_id) for c in candidates),
            )
        return chosen

    @staticmethod
    def sender_allowed(session: Session, ticket: Ticket, sender: Account | None) -> bool:
        """The requester, any agent, or an accepted collaborator may thread by guessable ids."""
        if sender is None:
            return False
        if sender.id == ticket.requester_id or sender.role == Role.AGENT:
            return True
        return (
            session.exec(
                select(Collaborator.id).where(
                    Collaborator.ticket_id == ticket.id,
                    Collaborator.email == sender.email,
                    Collaborator.status == "accepted",
                )
            ).first()
            is not None
        )

    @staticmethod
    def _tickets_for_ids(session: Session, ids: tuple[str, ...]) -> list[int]:
        """Tickets holding one of these Message-IDs, ours (outbox) or theirs (messages)."""
        if not ids:
            return []
        found = list(
            session.exec(select(Message.ticket_id).where(col(Message.message_id).in_(ids)))
        )
        found += [
            t
            for t in session.exec(select(Outbox.ticket_id).where(col(Outbox.message_id).in_(ids)))
            if t
        ]
        return list(dict.fromkeys(found))
