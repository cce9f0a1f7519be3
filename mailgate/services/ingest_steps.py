"""The ingest decision, as named steps in order (Mailman's pipeline of handlers): the first
step to answer decides, and the receipt records which one did.

What can be known of a mail without the database (is it our own mail looping back, a bounce,
a third party's sign-up mail, an automatic reply?) is found by `screen` in the caller's
thread, before the transaction: the single writer then only runs the steps that need the
database (who sent it, which ticket, what to create), and the group commit holds the lock
for less time per message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from sqlmodel import Session, select

from mailgate import logs
from mailgate.core import loops, verification
from mailgate.core.addresses import Recipient
from mailgate.core.bounces import Bounce, parse_dsn
from mailgate.core.enums import Outcome, Role, Step
from mailgate.core.loops import Automatic
from mailgate.core.mail import InboundMail
from mailgate.core.match import Candidate
from mailgate.services.bounce_handling import BounceHandler
from mailgate.services.incoming import Incoming, NewAttachment
from mailgate.services.thread_match import ThreadMatcher
from mailgate.services.tickets import Conversations
from mailgate.store.models import Account, Message, Ticket


@dataclass(frozen=True)
class Envelope:
    mail_from: str | None  # "" is the null sender <>; None when unknown (IMAP, import)
    recipients: tuple[str, ...]
    channel: str = "smtp"
    peer: str = ""  # "ip:port" of the SMTP client ("" when unknown: IMAP, deliver, import)
    helo: str = ""  # the name the SMTP client gave in HELO/EHLO (SPF checks it)
    send_mail: bool = True  # `mailgate import` loads history without mailing anyone
    dmarc_failed: bool = False  # our MTA says DMARC failed: never threads, gets no mail


@dataclass(frozen=True)
class Trust:
    """What is known of the From address (SPF/DKIM/DMARC, by our MTA or by our own checks)."""

    verdict: str = ""  # pass | fail | none; "" when nothing is checked (no authserv_id, "off")
    detail: str = ""

    @property
    def verified(self) -> bool:
        return self.verdict == "pass"


UNCHECKED = Trust()


class Decision(NamedTuple):
    outcome: Outcome
    ticket_id: int | None
    step: Step  # which step of the pipeline decided (recorded on the receipt)


@dataclass(frozen=True)
class Screening:
    """What the mail is, found without the database (each None/False: not that)."""

    loop: bool = False  # our own mail coming back
    bounce: Bounce | None = None  # a delivery status notification
    third_party: str | None = None  # why it looks like a third party's sign-up mail
    automatic: Automatic | None = None  # an auto-reply, a list mail...


NOTHING_FOUND = Screening()


def screen(
    raw: bytes,
    mail: InboundMail | None,
    envelope: Envelope,
    hostname: str,
    rules: verification.VerificationRules,
) -> Screening:
    """Pure: the facts the LOOP, BOUNCE, THIRD_PARTY and AUTOMATIC steps decide on."""
    if mail is None:
        return NOTHING_FOUND
    # The HTML too: a confirmation link may exist only in the markup.
    text = f"{mail.text}\n{mail.html}" if mail.html else mail.text
    return Screening(
        loop=loops.is_our_loop(mail.headers, hostname),
        bounce=parse_dsn(raw),
        third_party=verification.third_party_verification(
            mail.from_addr, mail.subject, text, rules
        ),
        automatic=loops.classify(mail.headers, envelope.mail_from, mail.from_addr, mail.subject),
    )


@dataclass
class Inbound:
    """One delivery going through the steps; later steps read what earlier ones found."""

    session: Session
    size: int  # of the raw mail, in bytes
    sha: str
    mail: InboundMail | None
    problem: str
    rcpt: Recipient
    envelope: Envelope
    trust: Trust
    screening: Screening  # NOTHING_FOUND for a mail an operator released from quarantine
    automatic: Automatic | None = None
    sender: Account | None = None
    candidate: Candidate | None = None


# Keeps a mail aside: (session, sha, size, reason, recipient, envelope, message_id) -> row id
Quarantine = Callable[[Session, str, int, str, str, Envelope, str], int]
Found = tuple[Outcome, int | None]  # a step's answer: the outcome, and the ticket if any


class DecisionSteps:
    def __init__(
        self,
        *,
        conversations: Conversations,
        matcher: ThreadMatcher,
        bounces: BounceHandler,
        quarantine: Quarantine,
        trust_required: bool,
    ) -> None:
        self.conversations = conversations
        self.matcher = matcher
        self.bounces = bounces
        self.quarantine = quarantine
        self.trust_required = trust_required  # an agent's From needs a "pass" to act
        self._steps: tuple[tuple[Step, Callable[[Inbound], Found | None]], ...] = (
            (Step.PARSE, self._parse),
            (Step.SENDER, self._sender),
            (Step.LOOP, self._loop),
            (Step.BOUNCE, self._bounce),
            (Step.THIRD_PARTY, self._third_party),
            (Step.AUTOMATIC, self._automatic),
            (Step.MATCH, self._match),
            (Step.DISPATCH, self._dispatch),
        )  # fmt: skip

    def decide(self, ctx: Inbound) -> Decision:
        for step, run in self._steps:
            found = run(ctx)
            if found is not None:
                outcome, ticket_id = found
                return Decision(outcome, ticket_id, step)
        raise AssertionError("the dispatch step always decides")

    # -- the steps: each returns (outcome, ticket id) when it decides, else None ----------

    def _hold(self, ctx: Inbound, reason: str) -> Found:
        message_id = ctx.mail.message_id if ctx.mail is not None else ""
        self.quarantine(
            ctx.session, ctx.sha, ctx.size, reason, ctx.rcpt.address, ctx.envelope, message_id
        )
        return Outcome.QUARANTINED, None

    def _parse(self, ctx: Inbound) -> Found | None:
        return self._hold(ctx, ctx.problem) if ctx.mail is None else None

    def _sender(self, ctx: Inbound) -> Found | None:
        assert ctx.mail is not None
        if not ctx.mail.sender_ambiguous:
            return None
        # Several people in From, or one the strict parser had to guess at: nobody's mail.
        logs.warning("ingest.ambiguous_from", message_id=ctx.mail.message_id)
        return self._hold(ctx, "ambiguous From: not one clear sender address")

    def _loop(self, ctx: Inbound) -> Found | None:
        assert ctx.mail is not None
        if not ctx.screening.loop:
            return None
        logs.warning("ingest.loop", message_id=ctx.mail.message_id, sender=ctx.mail.from_addr)
        return Outcome.LOOP, None

    def _bounce(self, ctx: Inbound) -> Found | None:
        if ctx.screening.bounce is None:
            return None
        self.bounces.handle(ctx.session, ctx.screening.bounce)
        return Outcome.BOUNCE, None

    def _third_party(self, ctx: Inbound) -> Found | None:
        reason = ctx.screening.third_party
        return None if reason is None else self._hold(ctx, reason)

    def _automatic(self, ctx: Inbound) -> Found | None:
        """Classifies only: an automatic mail may still join its ticket (next step)."""
        ctx.automatic = ctx.screening.automatic
        return None

    def _match(self, ctx: Inbound) -> Found | None:
        assert ctx.mail is not None
        ctx.sender = self.conversations.accounts.find(ctx.session, ctx.mail.from_addr)
        if not ctx.envelope.dmarc_failed:
            ctx.candidate = self.matcher.match(ctx.session, ctx.mail, ctx.rcpt, ctx.sender)
        if ctx.candidate is None and ctx.automatic is not None:
            return self._hold(ctx, f"automatic mail ({ctx.automatic.reason}) matching no ticket")
        return None

    def _dispatch(self, ctx: Inbound) -> Found:
        mail, session, envelope = ctx.mail, ctx.session, ctx.envelope
        assert mail is not None
        incoming = incoming_of(
            mail, ctx.sha, envelope.channel, ctx.automatic is not None, ctx.trust
        )
        conversations = self.conversations
        if ctx.candidate is None:
            ticket, _ = conversations.open_ticket(
                session,
                incoming,
                category=ctx.rcpt.category,
                send_mail=envelope.send_mail,
                requester=ctx.sender,
            )
            return Outcome.TICKETED, ticket.id
        ticket = session.get(Ticket, ctx.candidate.ticket_id)
        sender = ctx.sender
        assert ticket is not None and sender is not None  # match only returns real ones
        if session.exec(
            select(Message.id).where(
                Message.ticket_id == ticket.id, Message.message_id == mail.message_id
            )
        ).first():
            return Outcome.DUPLICATE, ticket.id
        outcome = Outcome.AUTOMATIC if ctx.automatic else Outcome.TICKETED
        if sender.role == Role.AGENT and sender.id != ticket.requester_id:
            # An agent acts (public reply, commands) only with their own token AND, when
            # anything checks senders, a From shown to be theirs. Else: a flagged note.
            trusted = not self.trust_required or ctx.trust.verified
            if ctx.candidate.via == "token" and ctx.automatic is None and trusted:
                conversations.agents.agent_mail(
                    session,
                    ticket,
                    sender,
                    incoming,
                    matched_by=ctx.candidate.via,
                    send_mail=envelope.send_mail,
                )
            else:
                conversations.agents.unverified_agent_mail(
                    session, ticket, sender, incoming, ctx.candidate.via
                )
            return outcome, ticket.id
        ticket, _ = conversations.customer_reply(
            session,
            ticket,
            sender,
            incoming,
            matched_by=ctx.candidate.via,
            send_mail=envelope.send_mail,
        )
        return outcome, ticket.id


def incoming_of(
    mail: InboundMail, sha: str, channel: str, automatic: bool, trust: Trust
) -> Incoming:
    return Incoming(
        message_id=mail.message_id,
        subject=mail.subject,
        text=mail.text,
        html=mail.html,
        from_addr=mail.from_addr,
        from_name=mail.from_name,
        in_reply_to=mail.in_reply_to,
        references=mail.references,
        cc=tuple(a for a in mail.cc + mail.to if a != mail.from_addr),
        attachments=tuple(
            NewAttachment(a.filename, a.content_type, a.payload) for a in mail.attachments
        ),
        locale=mail.locale,
        raw_sha256=sha,
        channel=channel,
        automatic=automatic,
        sender_verified=trust.verified,
        sender_auth=trust.verdict,
        detected_locale=mail.detected_locale,
    )
