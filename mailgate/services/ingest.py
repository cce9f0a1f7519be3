"""The one ingest path: SMTP, LMTP, IMAP, `deliver` and `import` all call Ingestor.ingest.

parse -> raw bytes stored (content-addressed, fsync'd) -> what needs no database (loop,
bounce, third-party, automatic: ingest_steps.screen) -> ONE transaction: receipt under a
unique dedupe key (a duplicate creates nothing) -> the decision's named steps
(services/ingest_steps.py): account -> ticket -> message and attachments -> status ->
outbound rows -> commit. Only then does the
caller say 250. A raw mail up to INLINE_RAW_BYTES is not a blob: it is written in that same
transaction (table rawmail), durable with it, read back with `Ingestor.raw`.
Several waiting messages share one commit (GroupCommitter), each inside its own SAVEPOINT so
one failing message never takes its neighbours down.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session

from mailgate import logs
from mailgate.clock import Clock
from mailgate.core import authres, verification
from mailgate.core.addresses import AddressBook, Recipient
from mailgate.core.enums import Outcome, Step
from mailgate.core.limits import body_start
from mailgate.core.mail import InboundMail, MailParseError, parse_mail
from mailgate.core.tokens import read_reply_token
from mailgate.errors import MailgateError, Rejected, TempFailure, TooLarge
from mailgate.services import poison, sender_trust
from mailgate.services.bounce_handling import BounceHandler
from mailgate.services.commit import GroupCommitter
from mailgate.services.ingest_steps import (
    NOTHING_FOUND,
    UNCHECKED,
    Decision,
    DecisionSteps,
    Envelope,
    Inbound,
    Screening,
    Trust,
    screen,
)
from mailgate.services.receipts import claim_receipt, record_decision, store_raw, stored_raw
from mailgate.services.thread_match import ThreadMatcher
from mailgate.services.tickets import Conversations
from mailgate.store.blobs import BlobStore
from mailgate.store.clean import refused_value
from mailgate.store.db import Database
from mailgate.store.models import Quarantine

__all__ = ["UNCHECKED", "Delivery", "Envelope", "Ingestor", "Trust"]

T = TypeVar("T")

# Raw mails up to this size go into the group-committed transaction (table rawmail) instead of
# a blob file: a blob costs a file create, two fsyncs and a rename per mail (~14 % of serve's
# CPU and ~2 ms before the writer even sees the mail); in the database it rides the commit
# the 250 waits for anyway. Bigger mails stay blobs (the parse worker reads those itself).
INLINE_RAW_BYTES = 64 * 1024


@dataclass(frozen=True)
class Delivery:
    recipient: str
    outcome: Outcome
    ticket_id: int | None = None
    message_id: str = ""


class CrashElsewhere(Exception):
    """A crash while preparing a message in another process (an SMTP front), as its type's
    name and its text: what `recover` counts and records."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind

    def __reduce__(self) -> tuple[type[CrashElsewhere], tuple[str, str]]:
        return CrashElsewhere, (self.kind, str(self))  # it crosses between processes


@dataclass
class Prepared:
    """One message ready for its transaction (Ingestor.prepare)."""

    raw: bytes  # b"" once it is a blob and the message crossed to another process
    sha: str
    body_sha: str
    size: int
    recipients: list[Recipient]
    envelope: Envelope
    mail: InboundMail | None = None
    problem: str = ""  # why it could not be parsed (then `mail` is None)
    trust: Trust = UNCHECKED
    screening: Screening = NOTHING_FOUND
    crash: Exception | None = None  # raised on the way: for `recover`

    @property
    def message_id(self) -> str:
        """The mail's Message-ID, or the one synthesize_message_id gives its bytes."""
        return self.mail.message_id if self.mail else f"{self.sha[:32]}@mailgate.invalid"


def dedupe_key(message_id: str, sender: str, body_sha256: str) -> str:
    """One key per message, whichever of our addresses it came to (one message, one ticket),
    bound to its sender and content: a third party who guesses a Message-ID cannot make the
    real mail vanish as a "duplicate" without also writing its exact body as its sender."""
    return "r:" + hashlib.sha256(f"{message_id}\n{sender}\n{body_sha256}".encode()).hexdigest()


def body_digest(raw: bytes, slice_bytes: int = 1 << 20) -> str:
    """sha256 of the body, line endings normalised: the same mail by SMTP, IMAP or a retry
    through another relay (other Received: lines) has the same digest.

    Hashed a slice at a time (trailing whitespace left out, CRLF as LF), never copying the
    whole body: for a 25 MB attachment that was three transient copies of it."""
    start, end = body_start(raw), len(raw)
    while end > start and raw[end - 1] in _WHITESPACE:
        end -= 1
    digest, view = hashlib.sha256(), memoryview(raw)
    while start < end:
        stop = min(start + slice_bytes, end)
        if stop < end and raw[stop - 1] == 13 and raw[stop] == 10:
            stop += 1  # never cut a CRLF in two
        digest.update(_CRLF.sub(b"\n", view[start:stop]))
        start = stop
    return digest.hexdigest()


_WHITESPACE = b" \t\n\r\x0b\x0c"  # what bytes.rstrip() strips
# bytes.replace(b"\r\n", b"\n") at half the CPU (its two-byte search is slow on text), and a
# regex reads the memoryview slice without a copy.
_CRLF = re.compile(rb"\r\n")


def delivery_order(recipients: list[Recipient], reply_key: bytes) -> list[Recipient]:
    """The recipient that decides: a genuine reply token first, then an address with a
    category (support+anything@ is plain support@)."""

    def rank(r: Recipient) -> tuple[bool, bool]:
        return read_reply_token(reply_key, r.detail) is None, r.category is None

    return sorted(recipients, key=rank)


def count_received(raw: bytes) -> int:
    head = raw[: body_start(raw)]
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
        self.steps = DecisionSteps(
            conversations=conversations,
            matcher=ThreadMatcher(reply_key),
            bounces=BounceHandler(clock, hostname),
            quarantine=self.quarantine,
            trust_required=self.trust_required,
        )

    # -- entry point -------------------------------------------------------------------

    def check_recipient(self, address: str) -> Recipient:
        recipient = self.addresses.resolve(address)
        if recipient is None:
            raise Rejected("mailbox unavailable", code=550, status="5.1.1")
        return recipient

    def ingest(self, raw: bytes, envelope: Envelope) -> list[Delivery]:
        """Store and process one message; returns once everything is committed.

        Raises Rejected (refuse for good), TempFailure (try again later). The same steps as
        the SMTP listener's, which awaits the commit instead of holding a thread on it."""
        prepared = self.prepare(raw, envelope)
        if prepared.crash is not None:
            deliveries = self.recover(prepared, prepared.crash)
        else:
            try:
                deliveries = self.submit(prepared).result()
            except MailgateError:
                raise
            except Exception as exc:  # a crash: retried by the MTA a few times, then held
                deliveries = self.recover(prepared, exc)
        self.accepted(prepared, deliveries)
        return deliveries

    def prepare(self, raw: bytes, envelope: Envelope) -> Prepared:
        """Everything before the transaction, in the caller's thread: the checks that refuse
        (Rejected, TempFailure raised), the raw mail's digests (a big one stored as a blob),
        the parse, the attachments stored, the sender's trust, the screening. A crash on the
        way is kept in `crash` for `recover`, not raised."""
        if len(raw) > self.max_message_bytes:
            raise TooLarge("message too big")
        if count_received(raw) >= self.max_received_headers:
            raise Rejected("too many hops, mail loop?", code=554, status="5.4.6")
        recipients = delivery_order(
            [self.check_recipient(r) for r in envelope.recipients]
            or [self.check_recipient(self.addresses.support)],
            self.reply_key,
        )
        if len(raw) <= INLINE_RAW_BYTES:
            sha = hashlib.sha256(raw).hexdigest()  # stored by _claim, in the transaction
        else:
            sha = self.blobs.put(raw)
        prepared = Prepared(raw, sha, body_digest(raw), len(raw), recipients, envelope)
        try:
            try:
                prepared.mail = strip_internal_headers(self.parse(raw))
            except MailParseError as exc:
                prepared.problem = str(exc)
            mail = prepared.mail
            if mail is not None:
                # fsync attachments here, in the caller's thread, not in the single writer's
                # transaction (which then only finds them present).
                for part in mail.attachments:
                    self.blobs.put(part.payload)
                prepared.trust = self.sender_trust(raw, mail, envelope)
                prepared.envelope = self._authenticate(mail, envelope, prepared.trust)
            # Here, not in the single writer's transaction: what needs no database.
            prepared.screening = screen(
                raw, mail, prepared.envelope, self.hostname, self.verification_rules
            )
        except MailgateError:
            raise
        except Exception as exc:  # a crash: counted by `recover`, in a transaction
            prepared.crash = exc
        return prepared

    def submit(self, prepared: Prepared) -> Future[list[Delivery]]:
        """Queue the message's transaction in the group commit; the future is resolved once
        it is committed (or failed: a TempFailure, or a crash for `recover`)."""
        return self.committer.submit(
            lambda session: [self._one(session, prepared, r) for r in prepared.recipients]
        )

    def recover(self, prepared: Prepared, exc: Exception) -> list[Delivery]:
        """After a crash: counted, and the mail held once it crashed too often (blocking)."""
        return self._after_crash(prepared, exc)

    def accepted(self, prepared: Prepared, deliveries: list[Delivery]) -> None:
        envelope = prepared.envelope
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

    def raw(self, sha256: str) -> bytes:
        """A stored raw mail: a small one from the database, a big one (or one stored before
        migration 0013) from the blob store. FileNotFoundError when it is in neither."""
        with self.db.read() as session:
            found = stored_raw(session, sha256)
        return found if found is not None else self.blobs.get(sha256)

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

    def _after_crash(self, p: Prepared, exc: Exception) -> list[Delivery]:
        """Count the crash in a transaction of its own (the failed one rolled back). Below
        max_crashes the error goes on (451: the MTA retries); then the mail is quarantined
        with the error and answered 250, so it never blocks the mail behind it. A value the
        database refuses (DataError: too long, invalid) is refused on every retry: quarantined
        at once. Only a database that is down or busy (OperationalError...) is a 451."""

        if refused_value(exc):
            orig = getattr(exc, "orig", None) or exc
            detail = str(orig).splitlines()[0][:300] if str(orig) else ""
            reason = f"the database refused a value ({type(orig).__name__}: {detail})"
            message_id = p.message_id
            logs.error("ingest.value_refused", message_id=message_id, error=reason)
            return self.committer.run(
                lambda session: [
                    self._hold_unprocessed(session, p, message_id, r, reason) for r in p.recipients
                ]
            )
        if isinstance(exc, DBAPIError) and not isinstance(exc, IntegrityError):
            raise TempFailure(f"database unavailable: {type(exc.orig).__name__}") from exc
        kind = exc.kind if isinstance(exc, CrashElsewhere) else type(exc).__name__
        error = f"{kind}: {exc}"
        message_id = p.message_id

        def job(session: Session) -> list[Delivery] | None:
            attempts = poison.count_crash(session, p.sha, error, self.clock.now())
            logs.error("ingest.crashed", message_id=message_id, attempts=attempts, error=error)
            if attempts < self.max_crashes:
                return None
            reason = f"processing crashed {attempts} times: {error}"
            return [self._hold_unprocessed(session, p, message_id, r, reason) for r in p.recipients]

        try:
            held = self.committer.run(job)
        except Exception:
            logs.error("ingest.crash_not_counted", message_id=message_id, exc_info=True)
            held = None
        if held is None:
            raise exc
        return held

    def _hold_unprocessed(
        self, session: Session, p: Prepared, message_id: str, rcpt: Recipient, reason: str
    ) -> Delivery:
        """Quarantine without processing, under a receipt so a redelivery is a duplicate."""
        key = dedupe_key(message_id, (p.mail.from_addr if p.mail else ""), p.body_sha)
        receipt_id = self._claim(session, key, message_id, rcpt, p)
        if receipt_id is None:
            return Delivery(rcpt.address, Outcome.DUPLICATE, None, message_id)
        self.quarantine(session, p.sha, p.size, reason, rcpt.address, p.envelope, message_id)
        record_decision(session, receipt_id, Outcome.QUARANTINED, None, Step.HELD)
        return Delivery(rcpt.address, Outcome.QUARANTINED, None, message_id)

    def _claim(
        self, session: Session, key: str, message_id: str, rcpt: Recipient, p: Prepared
    ) -> int | None:
        """Record this delivery under its dedupe key; None when it was already recorded (an
        MTA retry, the same mail to another of our addresses, or another instance a moment
        ago): the caller then creates nothing. A small raw mail is kept with its receipt."""
        receipt_id = claim_receipt(
            session,
            key=key,
            message_id=message_id,
            recipient=rcpt.address,
            envelope_from=p.envelope.mail_from or "",
            channel=p.envelope.channel,
            sha=p.sha,
            now=self.clock.now(),
        )
        if receipt_id is not None and p.size <= INLINE_RAW_BYTES:
            store_raw(session, p.sha, p.raw)
        return receipt_id

    # -- one recipient, inside the transaction ------------------------------------------

    def _one(self, session: Session, p: Prepared, rcpt: Recipient) -> Delivery:
        mail, message_id = p.mail, p.message_id
        key = dedupe_key(message_id, mail.from_addr if mail else "", p.body_sha)
        receipt_id = self._claim(session, key, message_id, rcpt, p)
        if receipt_id is None:
            return Delivery(rcpt.address, Outcome.DUPLICATE, None, message_id)
        decision = self._decide(
            session, p.size, p.sha, mail, p.problem, rcpt, p.envelope, p.trust, p.screening
        )
        record_decision(session, receipt_id, *decision)
        return Delivery(rcpt.address, decision.outcome, decision.ticket_id, message_id)

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
        size: int,
        sha: str,
        mail: InboundMail | None,
        problem: str,
        rcpt: Recipient,
        envelope: Envelope,
        trust: Trust,
        screening: Screening,
    ) -> Decision:
        """Run the named steps (services/ingest_steps.py) until one decides."""
        ctx = Inbound(session, size, sha, mail, problem, rcpt, envelope, trust, screening)
        return self.steps.decide(ctx)

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
        # Released: the steps that hold mail aside find nothing; who sent it still counts.
        decision = self._decide(
            session, len(raw), sha, mail, "", rcpt, envelope, trust, NOTHING_FOUND
        )
        return decision.outcome, decision.ticket_id
