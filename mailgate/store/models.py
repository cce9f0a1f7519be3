"""The schema. Every timestamp is UTC; SQLite hands them back naive (see clock.as_utc)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel


def _ts(index: bool = False, nullable: bool = False) -> Column:  # type: ignore[type-arg]
    return Column(DateTime(timezone=True), index=index, nullable=nullable)


class Account(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(index=True, unique=True, max_length=320)
    name: str = Field(default="", max_length=200)
    role: str = Field(default="customer", max_length=16, index=True)  # core.enums.Role
    password_hash: str | None = Field(default=None, max_length=200)
    # Rotated on every password change: signed links that carry the old stamp stop working.
    security_stamp: str = Field(default="", max_length=64)
    locale: str = Field(default="fr", max_length=8)
    # Where `locale` came from (migration 0010, core/language.Source): better evidence replaces
    # worse, and only the person's own choice replaces a choice.
    locale_source: str = Field(default="default", max_length=16)
    # The person's time zone (IANA name) as their browser or the account page gave it; "" is
    # not known yet: pages use the browser's, mail uses [mailgate] default_timezone.
    timezone: str = Field(default="", max_length=64)
    created_at: datetime = Field(sa_column=_ts())
    activated_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    # Set by `mailgate agent remove` (migration 0006): no sign-in, no link, no reply token.
    disabled_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))


class Ticket(SQLModel, table=True):
    # "My activities" in keyset pages (migration 0004): only tickets the customer still sees.
    __table_args__ = (
        Index(
            "ix_ticket_requester_exchange",
            "requester_id",
            "last_exchange_at",
            "id",
            sqlite_where=text("customer_deleted_at IS NULL"),
            postgresql_where=text("customer_deleted_at IS NULL"),
        ),
        Index(
            "ix_ticket_requester_status_exchange",
            "requester_id",
            "status",
            "last_exchange_at",
            "id",
            sqlite_where=text("customer_deleted_at IS NULL"),
            postgresql_where=text("customer_deleted_at IS NULL"),
        ),
        # The agents' queue in keyset pages, whole or by filter; the other filters' columns
        # last, so combinations are checked in the index (migration 0007).
        Index("ix_ticket_exchange", "last_exchange_at", "id"),
        Index(
            "ix_ticket_status_exchange",
            *("status", "last_exchange_at", "id", "assignee_id", "category"),
        ),
        Index(
            "ix_ticket_assignee_exchange",
            *("assignee_id", "last_exchange_at", "id", "status", "category"),
        ),
        Index(
            "ix_ticket_category_exchange",
            *("category", "last_exchange_at", "id", "status", "assignee_id"),
        ),
        Index("ix_ticket_customer_ref", "customer_ref"),  # the queue's search by customer ID
    )
    id: int | None = Field(default=None, primary_key=True)
    subject: str = Field(default="", sa_column=Column(Text, nullable=False))
    status: str = Field(default="new", index=True, max_length=16)
    requester_id: int = Field(foreign_key="account.id", index=True)
    assignee_id: int | None = Field(default=None, foreign_key="account.id")
    category: str | None = Field(default=None, max_length=100)
    locale: str = Field(default="fr", max_length=8)
    channel: str = Field(default="smtp", max_length=16)
    created_at: datetime = Field(sa_column=_ts(index=True))
    updated_at: datetime = Field(sa_column=_ts())
    last_exchange_at: datetime = Field(sa_column=_ts())
    pending_since: datetime | None = Field(default=None, sa_column=_ts(index=True, nullable=True))
    solved_at: datetime | None = Field(default=None, sa_column=_ts(index=True, nullable=True))
    closed_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    follow_up_of_id: int | None = Field(default=None, foreign_key="ticket.id")
    # Set when the last reply to the customer bounced: the auto-resolve clock stops.
    auto_resolve_paused: bool = Field(default=False)
    customer_deleted_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    customer_ref: str | None = Field(default=None, max_length=64)
    problem: str | None = Field(default=None, max_length=100)
    broadcaster: str | None = Field(default=None, max_length=100)


class Message(SQLModel, table=True):
    # A ticket's conversation in order, in keyset pages (migration 0004).
    __table_args__ = (Index("ix_message_ticket_created", "ticket_id", "created_at", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    author_id: int | None = Field(default=None, foreign_key="account.id")
    role: str = Field(default="customer", max_length=16)  # customer | agent | system
    internal: bool = Field(default=False)
    automatic: bool = Field(default=False)
    subject: str = Field(default="", sa_column=Column(Text, nullable=False))
    body_text: str = Field(default="", sa_column=Column(Text, nullable=False))
    full_text: str = Field(default="", sa_column=Column(Text, nullable=False))
    body_html: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    message_id: str = Field(index=True, max_length=998)
    in_reply_to: str = Field(default="", sa_column=Column(Text, nullable=False))
    references: str = Field(default="", sa_column=Column(Text, nullable=False))
    raw_sha256: str | None = Field(default=None, max_length=64)
    matched_by: str = Field(default="new", max_length=32)
    channel: str = Field(default="smtp", max_length=16)
    # SPF/DKIM/DMARC verdict on the From address when it arrived: pass | fail | none | "".
    sender_auth: str = Field(default="", max_length=16)
    # Mail with an agent's From that could not be shown to come from that agent.
    unverified_sender: bool = Field(default=False)
    created_at: datetime = Field(sa_column=_ts())


class Attachment(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    message_pk: int = Field(foreign_key="message.id", index=True)
    filename: str = Field(default="", max_length=255)
    content_type: str = Field(default="application/octet-stream", max_length=255)
    size: int = 0
    sha256: str = Field(max_length=64)


class Receipt(SQLModel, table=True):
    """One row per accepted delivery; the unique dedupe key makes MTA retries harmless."""

    id: int | None = Field(default=None, primary_key=True)
    dedupe_key: str = Field(unique=True, max_length=128)
    message_id: str = Field(max_length=998)
    recipient: str = Field(default="", max_length=320)
    envelope_from: str = Field(default="", max_length=320)
    channel: str = Field(default="smtp", max_length=16)
    raw_sha256: str = Field(max_length=64)
    outcome: str = Field(max_length=32)  # core.enums.Outcome
    decided_by: str = Field(default="", max_length=16)  # core.enums.Step that decided
    ticket_id: int | None = Field(default=None, index=True)
    received_at: datetime = Field(sa_column=_ts())


class Quarantine(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    raw_sha256: str = Field(max_length=64)
    size: int = 0
    reason: str = Field(sa_column=Column(Text, nullable=False))
    channel: str = Field(default="smtp", max_length=16)
    recipient: str = Field(default="", max_length=320)
    envelope_from: str = Field(default="", max_length=320)
    message_id: str = Field(default="", max_length=998)
    status: str = Field(default="held", index=True, max_length=16)  # held | reprocessed
    received_at: datetime = Field(sa_column=_ts())


class IngestFailure(SQLModel, table=True):
    """Crash counter per raw message: after a few crashes it is quarantined, not retried."""

    raw_sha256: str = Field(primary_key=True, max_length=64)
    attempts: int = 0
    last_error: str = Field(default="", sa_column=Column(Text, nullable=False))
    updated_at: datetime = Field(sa_column=_ts())


class RawMail(SQLModel, table=True):
    """A small raw message (up to services/ingest.py INLINE_RAW_BYTES), written in the group
    commit that records its receipt: that commit makes its bytes durable, with no blob file and
    its two fsyncs. Bigger mails are blobs. Read with `Ingestor.raw(sha256)` (here, then the
    blob store); `mailgate blobs migrate` has nothing to copy for these: they live in the
    database every instance shares."""

    sha256: str = Field(primary_key=True, max_length=64)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Outbox(SQLModel, table=True):
    # first_contact_slot reads the window from this index alone (status, attempts: not sent?).
    __table_args__ = (
        Index(
            "ix_outbox_first_contact_due", "first_contact", "next_attempt_at", "status", "attempts"
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)
    to_addr: str = Field(index=True, max_length=320)
    subject: str = Field(default="", sa_column=Column(Text, nullable=False))
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id", index=True)
    message_id: str = Field(index=True, max_length=998)
    envelope_from: str = Field(default="", max_length=320)
    # Bytes fixed at enqueue time (rows queued before params existed); b"" on newer rows.
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    # What the sender renders and assembles the mail from (services/assemble.py, JSON): the
    # locale, the template context and every header fixed at enqueue (Date, names, thread).
    # "" on a row with nothing to send: held for a digest, not sent, or queued with `raw`.
    params: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    automatic: bool = Field(default=True)
    status: str = Field(default="queued", index=True, max_length=16)  # queued | sent | failed
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_column=_ts(index=True))
    claimed_until: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    # The instance that leased the row last (migration 0011): recorded before it sends.
    claimed_by: str = Field(
        default="", sa_column=Column(String(200), nullable=False, server_default="")
    )
    last_error: str = Field(default="", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=_ts(index=True))
    sent_at: datetime | None = Field(default=None, sa_column=_ts(nullable=True))
    # Why the row waits or was not sent (first-contact cap, per-address cap, suppression).
    reason: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    first_contact: bool = Field(default=False)  # to an address we never heard from


class Collaborator(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("ticket_id", "email"),)
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    email: str = Field(max_length=320)
    status: str = Field(default="pending", max_length=16)  # pending | accepted
    created_at: datetime = Field(sa_column=_ts())


class Suppression(SQLModel, table=True):
    """No automatic mail to this address until `until` (a hard bounce, say)."""

    email: str = Field(primary_key=True, max_length=320)
    reason: str = Field(default="", sa_column=Column(Text, nullable=False))
    until: datetime = Field(sa_column=_ts())


class TicketEvent(SQLModel, table=True):
    """Audit trail: status changes, assignments, deletions by the customer."""

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    actor_id: int | None = Field(default=None)
    kind: str = Field(max_length=32)
    detail: str = Field(default="", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=_ts())


class WebSession(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)  # sha256 of the cookie value
    account_id: int = Field(foreign_key="account.id", index=True)
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=_ts())
    expires_at: datetime = Field(sa_column=_ts())


class RateEvent(SQLModel, table=True):
    """Rate limits kept in the database so they survive restarts and span instances."""

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(index=True, max_length=400)
    created_at: datetime = Field(sa_column=_ts(index=True))


class Lease(SQLModel, table=True):
    """One thing only one instance may do at a time (a scheduled job, an IMAP mailbox), held
    until `expires_at` unless renewed (services/leases.py, migration 0011)."""

    name: str = Field(primary_key=True, max_length=200)  # "job:auto_resolve", "imap:..."
    holder: str = Field(max_length=200)  # the instance id
    expires_at: datetime = Field(sa_column=_ts())
    acquired_at: datetime = Field(sa_column=_ts())
    generation: int = Field(default=1)  # raised each time it changes hands (fencing token)


class ImapCursor(SQLModel, table=True):
    mailbox: str = Field(primary_key=True, max_length=400)  # user@host:port/folder
    uidvalidity: int = 0
    last_uid: int = 0


class OidcIdentity(SQLModel, table=True):
    """An account at an OpenID Connect provider linked to a mailgate account (migration 0009):
    once linked, that provider's subject signs in to this account, whatever address the
    provider gives later."""

    __table_args__ = (UniqueConstraint("provider", "subject"),)
    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    provider: str = Field(max_length=32)  # [[auth.oidc]] name
    subject: str = Field(max_length=255)  # the ID token's `sub`
    email: str = Field(default="", max_length=320)  # the address it had when last used
    created_at: datetime = Field(sa_column=_ts())
    last_used_at: datetime = Field(sa_column=_ts())


class OidcLogin(SQLModel, table=True):
    """A provider sign-in under way (migration 0009): what the callback must match. Deleted
    by the callback that uses it (single use) and worthless after `expires_at`."""

    state_hash: str = Field(primary_key=True, max_length=64)  # sha256 of `state`
    provider: str = Field(max_length=32)
    browser_hash: str = Field(max_length=64)  # sha256 of the browser's flow cookie
    nonce: str = Field(max_length=64)
    code_verifier: str = Field(max_length=128)  # PKCE
    next_path: str = Field(default="", max_length=500)
    created_at: datetime = Field(sa_column=_ts())
    expires_at: datetime = Field(sa_column=_ts(index=True))
