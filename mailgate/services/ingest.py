"""The one ingest path: SMTP, LMTP, IMAP, `deliver` and `import` all call Ingestor.ingest.

parse -> raw bytes stored (content-addressed, fsync'd) -> ONE transaction: receipt under a
unique dedupe key (a duplicate creates nothing) -> loop / bounce / automatic checks -> account
-> ticket -> message and attachments -> status -> outbound rows -> commit. Only then does the
caller say 250. Several waiting messages share one commit (GroupCommitter), each inside its
own SAVEPOINT so one failing message never takes its neighbours down.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session, col, select

from mailgate import logs
from mailgate.clock import Clock
from mailgate.core import authres, loops, verification
from mailgate.core.addresses import AddressBook, Recipient
from mailgate.core.bounces import Bounce, parse_dsn
from mailgate.core.mail import InboundMail, MailParseError, parse_mail, synthesize_message_id
from mailgate.core.match import Candidate, choose, subject_ticket_ids
from mailgate.core.tokens import read_reply_token
from mailgate.errors import MailgateError, Rejected, TempFailure, TooLarge
from mailgate.services import poison, sender_trust
from mailgate.services.commit import GroupCommitter
from mailgate.services.tickets import Conversations, Incoming, NewAttachment
from mailgate.store.blobs import BlobStore
from mailgate.store.clean import refused_value
from mailgate.store.db import Database
from mailgate.store.models import (
    Account,
    Collaborator,
    Message,
    Outbox,
    Quarantine,
    Receipt,
    Suppression,
    Ticket,
)

T = TypeVar("T")
SUPPRESS_DAYS = 60


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


@dataclass(frozen=True)
class Delivery:
    recipient: str
    outcome: str  # ticketed | duplicate | automatic | loop | bounce | quarantined
    ticket_id: int | None = None
    message_id: str = ""


def dedupe_key(message_id: str, sender: str, body_sha256: str) -> str:
    """One key per message, whichever of our addresses it came to (one message, one ticket),
    bound to its sender and content: a third party who guesses a Message-ID cannot make the
    real mail vanish as a "duplicate" without also writing its exact body as its sender."""
    return "r:" + hashlib.sha256(f"{message_id}\n{sender}\n{body_sha256}".encode()).hexdigest()


def body_digest(raw: bytes) -> str:
    """sha256 of the body, line endings normalised: the same mail by SMTP, IMAP or a retry
    through another relay (other Received: lines) has the same digest."""
    crlf, lf = raw.find(b"\r\n\r\n"), raw.find(b"\n\n")
    cut = min((i + n for i, n in ((crlf, 4), (lf, 2)) if i >= 0), default=len(raw))
    return hashlib.sha256(raw[cut:].replace(b"\r\n", b"\n").rstrip()).hexdigest()


def delivery_order(recipients: list[Recipient], reply_key: bytes) -> list[Recipient]:
    """The recipient that decides: a genuine reply token first, then an address with a
    category (support+anything@ is plain support@)."""

    def rank(r: Recipient) -> tuple[bool, bool]:
        return read_reply_token(reply_key, r.detail) is None, r.category is None

    return sorted(recipients, key=rank)


def count_received(raw: bytes) -> int:
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    return sum(1 for line in head.splitlines() if line[:9].lower() == b"received:")


def strip_internal_headers(mail: InboundMail) -> InboundMail:
    """Nothing about agents or kinds is trusted from headers a sender can write. The loop
    marker stays: it can only make a mail count as ours coming back, never trusted more."""
    kept = tuple(
        (k, v)
        for k, v in mail.headers
        if not k.lower().startswith("x-mailgate-") or k.lower() == "x-mailgate-loop"
    )
    return replace(mail, headers=kept) if len(kept) != len(mail.headers) else mail


class Ingestor:
    def __init__(
        self,
        *,
        db: Database,
        blobs: BlobStore,
        conversations: Conversations,
        addresses: AddressBook,
        reply_key: bytes,
        hostname: str,
        clock: Clock,
        max_message_bytes: int,
        max_received_headers: int = 50,
        committer: GroupCommitter | None = None,
        parse: Callable[[bytes], InboundMail] = parse_mail,
        authserv_id: str = "",
        require_dmarc_for_threading: bool = False,
        verifier: sender_trust.SenderVerifier | None = None,
        verification_rules: verification.VerificationRules | None = None,
        max_crashes: int = poison.MAX_CRASHES,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.conversations = conversations
        self.addresses = addresses
        self.reply_key = reply_key
        self.hostname = hostname
        self.clock = clock
        self.max_message_bytes = max_message_bytes
        self.max_received_headers = max_received_headers
        self.committer = committer or GroupCommitter(db)
        self.parse = parse  # in a worker process with a deadline under `serve`
        self.authserv_id = authserv_id
        self.require_dmarc_for_threading = require_dmarc_for_threading
        # Our own SPF/DKIM/DMARC checks, when no MTA in front of us is trusted to stamp them.
        self.verifier = None if authserv_id else verifier
        self.verification_rules = verification_rules or verification.DEFAULT_RULES
        self.max_crashes = max_crashes

    # -- entry point -------------------------------------------------------------------

    def check_recipient(self, address: str) -> Recipient:
        recipient = self.addresses.resolve(address)
        if recipient is None:
            raise Rejected("mailbox unavailable", code=550, status="5.1.1")
        return recipient

    def ingest(self, raw: bytes, envelope: Envelope) -> list[Delivery]:
        """Store and process one message; returns once everything is committed.

        Raises Rejected (refuse for good), TempFailure (try again later)."""
        if len(raw) > self.max_message_bytes:
            raise TooLarge("message too big")
        if count_received(raw) >= self.max_received_headers:
            raise Rejected("too many hops, mail loop?", code=554, status="5.4.6")
        recipients = delivery_order(
            [self.check_recipient(r) for r in envelope.recipients]
            or [self.check_recipient(self.addresses.support)],
            self.reply_key,
        )
        sha = self.blobs.put(raw)
        body_sha = body_digest(raw)
        mail: InboundMail | None = None
        try:
            try:
                mail = strip_internal_headers(self.parse(raw))
                problem = ""
            except MailParseError as exc:
                problem = str(exc)
            trust = UNCHECKED
            if mail is not None:
                # fsync attachments here, in the caller's thread, not in the single writer's
                # transaction (which then only finds them present).
                for part in mail.attachments:
                    self.blobs.put(part.payload)
                trust = self.sender_trust(raw, mail, envelope)
                envelope = self._authenticate(mail, envelope, trust)
            parsed, env = mail, envelope

            def job(session: Session) -> list[Delivery]:
                return [
                    self._one(session, raw, sha, body_sha, parsed, problem, r, env, trust)
                    for r in recipients
                ]

            deliveries = self.committer.run(job)
        except MailgateError:
            raise
        except Exception as exc:  # a crash: retried by the MTA a few times, then quarantined
            deliveries = self._after_crash(raw, sha, mail, recipients, envelope, exc)
        for d in deliveries:
            logs.info(
                "ingest.accepted",
                channel=envelope.channel,
                peer=envelope.peer,
                message_id=d.message_id,
                recipient=d.recipient,
                outcome=d.outcome,
                ticket=d.ticket_id,
            )
        return deliveries

    @property
    def trust_required(self) -> bool:
        """Whether anything checks senders: then an agent's From needs a "pass" to act."""
        return bool(self.authserv_id) or self.verifier is not None

    def sender_trust(self, raw: bytes, mail: InboundMail, envelope: Envelope) -> Trust:
        """Is From really the sender? Our MTA's Authentication-Results when one is trusted,
        else our own SPF/DKIM/DMARC checks (bounded in time: never stalls intake)."""
        if self.authserv_id:
            found = sender_trust.verdict_from_authres(
                mail.headers, self.authserv_id, mail.from_addr
            )
        elif self.verifier is not None:
            found = self.verifier.verify(
                raw,
                from_addr=mail.from_addr,
                mail_from=envelope.mail_from or "",
                helo=envelope.helo,
                client_ip=sender_trust.client_ip(envelope.peer),
            )
        else:
            return UNCHECKED
        return Trust(found.result, f"{found.method} {found.domain} {found.detail}".strip())

    def _authenticate(self, mail: InboundMail, envelope: Envelope, trust: Trust) -> Envelope:
        """A failed DMARC verdict, when so configured, may open a ticket and nothing more."""
        if not self.require_dmarc_for_threading:
            return envelope
        failed = trust.verdict == "fail" and (
            not self.authserv_id or authres.dmarc_result(mail.headers, self.authserv_id) == "fail"
        )
        if not failed:
            return envelope
        logs.warning("ingest.dmarc_failed", message_id=mail.message_id, sender=mail.from_addr)
        return replace(envelope, dmarc_failed=True, send_mail=False)

    def _after_crash(
        self,
        raw: bytes,
        sha: str,
        mail: InboundMail | None,
        recipients: list[Recipient],
        envelope: Envelope,
        exc: Exception,
    ) -> list[Delivery]:
        """Count the crash in a transaction of its own (the failed one rolled back). Below
        max_crashes the error goes on (451: the MTA retries); then the mail is quarantined
        with the error and answered 250, so it never blocks the mail behind it. A value the
        database refuses (DataError: too long, invalid) is refused on every retry: quarantined
        at once. Only a database that is down or busy (OperationalError...) is a 451."""

        if refused_value(exc):
            orig = getattr(exc, "orig", None) or exc
            detail = str(orig).splitlines()[0][:300] if str(orig) else ""
            reason = f"the database refused a value ({type(orig).__name__}: {detail})"
            message_id = mail.message_id if mail else synthesize_message_id(raw)
            logs.error("ingest.value_refused", message_id=message_id, error=reason)
            return self.committer.run(
                lambda session: [
                    self._hold(session, raw, sha, mail, message_id, r, envelope, reason)
                    for r in recipients
                ]
            )
        if isinstance(exc, DBAPIError) and not isinstance(exc, IntegrityError):
            raise TempFailure(f"database unavailable: {type(exc.orig).__name__}") from exc
        error = f"{type(exc).__name__}: {exc}"
        message_id = mail.message_id if mail else synthesize_message_id(raw)

        def job(session: Session) -> list[Delivery] | None:
            attempts = poison.count_crash(session, sha, error, self.clock.now())
            logs.error("ingest.crashed", message_id=message_id, attempts=attempts, error=error)
            if attempts < self.max_crashes:
                return None
            reason = f"processing crashed {attempts} times: {error}"
            return [
                self._hold(session, raw, sha, mail, message_id, r, envelope, reason)
                for r in recipients
            ]

        try:
            held = self.committer.run(job)
        except Exception:
            logs.error("ingest.crash_not_counted", message_id=message_id, exc_info=True)
            held = None
        if held is None:
            raise exc
        return held

    def _hold(
        self,
        session: Session,
        raw: bytes,
        sha: str,
        mail: InboundMail | None,
        message_id: str,
        rcpt: Recipient,
        envelope: Envelope,
        reason: str,
    ) -> Delivery:
        """Quarantine without processing, under a receipt so a redelivery is a duplicate."""
        key = dedupe_key(message_id, (mail.from_addr if mail else ""), body_digest(raw))
        receipt = self._claim(session, key, message_id, rcpt, envelope, sha)
        if receipt is None:
            return Delivery(rcpt.address, "duplicate", None, message_id)
        self.quarantine(session, sha, len(raw), reason, rcpt.address, envelope, message_id)
        receipt.outcome = "quarantined"
        session.add(receipt)
        return Delivery(rcpt.address, "quarantined", None, message_id)

    def _claim(
        self,
        session: Session,
        key: str,
        message_id: str,
        rcpt: Recipient,
        envelope: Envelope,
        sha: str,
    ) -> Receipt | None:
        """Record this delivery under its dedupe key; None when it was already recorded (an
        MTA retry, the same mail to another of our addresses, or another instance a moment
        ago): the caller then creates nothing."""
        if session.exec(select(Receipt.id).where(Receipt.dedupe_key == key)).first() is not None:
            return None
        receipt = Receipt(
            dedupe_key=key,
            message_id=message_id[:998],
            recipient=rcpt.address,
            envelope_from=(envelope.mail_from or "")[:320],
            channel=envelope.channel,
            raw_sha256=sha,
            outcome="pending",
            received_at=self.clock.now(),
        )
        try:
            with session.begin_nested():
                session.add(receipt)
                session.flush()
        except IntegrityError:  # the unique key lost a race with another writer
            return None
        return receipt

    # -- one recipient, inside the transaction ------------------------------------------

    def _one(
        self,
        session: Session,
        raw: bytes,
        sha: str,
        body_sha: str,
        mail: InboundMail | None,
        problem: str,
        rcpt: Recipient,
        envelope: Envelope,
        trust: Trust,
    ) -> Delivery:
        message_id = mail.message_id if mail else f"{sha[:32]}@mailgate.invalid"
        key = dedupe_key(message_id, mail.from_addr if mail else "", body_sha)
        receipt = self._claim(session, key, message_id, rcpt, envelope, sha)
        if receipt is None:
            return Delivery(rcpt.address, "duplicate", None, message_id)
        outcome, ticket_id = self._decide(session, raw, sha, mail, problem, rcpt, envelope, trust)
        receipt.outcome = outcome
        receipt.ticket_id = ticket_id
        session.add(receipt)
        return Delivery(rcpt.address, outcome, ticket_id, message_id)

    def quarantine(
        self,
        session: Session,
        sha: str,
        size: int,
        reason: str,
        rcpt: str,
        envelope: Envelope,
        message_id: str = "",
    ) -> int:
        row = Quarantine(
            raw_sha256=sha,
            size=size,
            reason=reason[:2000],
            channel=envelope.channel,
            recipient=rcpt,
            envelope_from=(envelope.mail_from or "")[:320],
            message_id=message_id[:998],
            received_at=self.clock.now(),
        )
        session.add(row)
        session.flush()
        logs.warning("ingest.quarantined", quarantine=row.id, reason=reason, message_id=message_id)
        return row.id or 0

    def _decide(
        self,
        session: Session,
        raw: bytes,
        sha: str,
        mail: InboundMail | None,
        problem: str,
        rcpt: Recipient,
        envelope: Envelope,
        trust: Trust,
        released: bool = False,
    ) -> tuple[str, int | None]:
        """The pipeline of named steps; `released`: an operator let this mail out of
        quarantine, so the rules that hold mail aside are skipped, and every rule about who
        the sender is still applies."""
        def hold(reason: str, message_id: str = "") -> tuple[str, int | None]:
            self.quarantine(session, sha, len(raw), reason, rcpt.address, envelope, message_id)
            return "quarantined", None

        if mail is None:
            return hold(problem)
        if mail.sender_ambiguous:
            # Several people in From, or one the strict parser had to guess at: nobody's mail.
            logs.warning("ingest.ambiguous_from", message_id=mail.message_id)
            return hold("ambiguous From: not one clear sender address", mail.message_id)
        if not released and loops.is_our_loop(mail.headers, self.hostname):
            logs.warning("ingest.loop", message_id=mail.message_id, sender=mail.from_addr)
            return "loop", None
        bounce = None if released else parse_dsn(raw)
        if bounce is not None:
            self._bounce(session, bounce)
            return "bounce", None
        if not released and (reason := self._screen(mail)) is not None:
            return hold(reason, mail.message_id)
        automatic = None
        if not released:
            automatic = loops.classify(
                mail.headers, envelope.mail_from, mail.from_addr, mail.subject
            )
        incoming = self._incoming(mail, sha, envelope.channel, automatic is not None, trust)
        sender = self.conversations.accounts.find(session, mail.from_addr)
        candidate = None if envelope.dmarc_failed else self._match(session, mail, rcpt, sender)
        if candidate is None:
            if automatic is not None:
                reason = f"automatic mail ({automatic.reason}) matching no ticket"
                return hold(reason, mail.message_id)
            ticket, _ = self.conversations.open_ticket(
                session, incoming, category=rcpt.category, send_mail=envelope.send_mail
            )
            return "ticketed", ticket.id
        ticket = session.get(Ticket, candidate.ticket_id)
        assert ticket is not None and sender is not None  # _match only returns real ones
        if session.exec(
            select(Message.id).where(
                Message.ticket_id == ticket.id, Message.message_id == mail.message_id
            )
        ).first():
            return "duplicate", ticket.id
        if sender.role == "agent" and sender.id != ticket.requester_id:
            # An agent acts (public reply, commands) only with their own token AND, when
            # anything checks senders, a From shown to be theirs. Else: a flagged note.
            trusted = not self.trust_required or trust.verified
            if candidate.via == "token" and automatic is None and trusted:
                self.conversations.agent_mail(
                    session,
                    ticket,
                    sender,
                    incoming,
                    matched_by=candidate.via,
                    send_mail=envelope.send_mail,
                )
            else:
                self.conversations.unverified_agent_mail(
                    session, ticket, sender, incoming, candidate.via
                )
            return ("automatic" if automatic else "ticketed"), ticket.id
        ticket, _ = self.conversations.customer_reply(
            session,
            ticket,
            sender,
            incoming,
            matched_by=candidate.via,
            send_mail=envelope.send_mail,
        )
        return ("automatic" if automatic else "ticketed"), ticket.id

    def _screen(self, mail: InboundMail) -> str | None:
        """Why to keep this mail aside: a third-party service's sign-up mail."""
        # The HTML too: a confirmation link may exist only in the markup.
        text = f"{mail.text}\n{mail.html}" if mail.html else mail.text
        return verification.third_party_verification(
            mail.from_addr, mail.subject, text, self.verification_rules
        )

    def decide_reprocessed(
        self,
        session: Session,
        raw: bytes,
        sha: str,
        mail: InboundMail,
        rcpt: Recipient,
        envelope: Envelope,
    ) -> tuple[str, int | None]:
        """Quarantined mail an operator released: ticketed even if it looks automatic, and
        still screened like any mail for who sent it (a forged agent's mail stays a note)."""
        trust = self.sender_trust(raw, mail, envelope)
        return self._decide(session, raw, sha, mail, "", rcpt, envelope, trust, released=True)

    def _incoming(
        self, mail: InboundMail, sha: str, channel: str, automatic: bool, trust: Trust
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
        )

    # -- threading ------------------------------------------------------------------------

    def _sender_allowed(self, session: Session, ticket: Ticket, sender: Account | None) -> bool:
        if sender is None:
            return False
        if sender.id == ticket.requester_id or sender.role == "agent":
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

    def _tickets_for_ids(self, session: Session, ids: tuple[str, ...]) -> list[int]:
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

    def _match(
        self, session: Session, mail: InboundMail, rcpt: Recipient, sender: Account | None
    ) -> Candidate | None:
        candidates: list[Candidate] = []

        def add(ticket_id: int, via: str) -> None:
            ticket = session.get(Ticket, ticket_id)
            if ticket is not None:
                candidates.append(
                    Candidate(ticket_id, via, self._sender_allowed(session, ticket, sender))
                )

        if rcpt.detail:
            token = read_reply_token(self.reply_key, rcpt.detail)
            # A token is bound to the person it was sent to: anyone else holding it is treated
            # like a stranger (it may have been forwarded, or leaked).
            if token is not None and sender is not None and sender.id == token.account_id:
                add(token.ticket_id, "token")
            elif rcpt.detail:
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

    # -- bounces --------------------------------------------------------------------------

    def _bounce(self, session: Session, bounce: Bounce) -> None:
        row = None
        if bounce.original_message_id:
            row = session.exec(
                select(Outbox).where(Outbox.message_id == bounce.original_message_id)
            ).first()
        for r in bounce.recipients:
            if not r.permanent:
                logs.info("bounce.temporary", to=r.address, status=r.status)
                continue
            if row is None or row.to_addr != r.address:
                # Anyone can write a DSN: only one about a mail we sent to that address (its
                # Message-ID is random) may silence mail to it.
                logs.warning("bounce.unmatched", to=r.address, status=r.status)
                continue
            logs.warning("bounce.permanent", to=r.address, status=r.status)
            until = self.clock.now() + timedelta(days=SUPPRESS_DAYS)
            existing = session.get(Suppression, r.address)
            reason = f"{r.status} {r.diagnostic}".strip()
            if existing is None:
                session.add(Suppression(email=r.address, reason=reason, until=until))
            else:
                existing.until, existing.reason = until, reason
                session.add(existing)
            row.status, row.last_error = "failed", f"bounced: {reason}"[:1000]
            session.add(row)
            if row.ticket_id:
                self._bounce_note(session, row.ticket_id, r.address, reason, row.kind)

    def _bounce_note(self, session: Session, ticket_id: int, address: str, reason: str, kind: str):
        ticket = session.get(Ticket, ticket_id)
        if ticket is None:
            return
        now = self.clock.now()
        note = Message(
            ticket_id=ticket_id,
            role="system",
            internal=True,
            body_text=f"Your reply did not reach {address}: {reason}",
            message_id=f"bounce.{ticket_id}.{now.timestamp()}@{self.hostname}",
            matched_by="bounce",
            channel="system",
            created_at=now,
        )
        session.add(note)
        if kind == "agent_reply":
            ticket.auto_resolve_paused = True  # do not "solve" a ticket the customer never saw
        ticket.updated_at = now
        session.add(ticket)
