"""The transactional outbox: a mail is recorded in the caller's transaction as kind +
parameters (services/assemble.py), then a sender worker renders and assembles its bytes and
delivers them (a retry assembles the same bytes: same Message-ID, Date and boundary).

What is fixed at enqueue, in the ticket's transaction: the kind, the recipient, the
Message-ID, the envelope sender, and in `params` the locale, the template context and every
header (Date = when the mail is due, names, Reply-To, In-Reply-To/References,
Auto-Submitted). What is not done there: rendering the templates and building the MIME
message (~1.3 ms a mail with EmailMessage/headerregistry), which the sender does instead,
outside the single writer; so the subject is empty on a row until the sender renders it.

Limits, all kept in the database (so they survive restarts), and none of them loses a mail
silently: a mail not sent is a row with `status="failed"`, `attempts=0` and a `reason`; a mail
that waits is a `queued` row with a later `next_attempt_at` and a `reason` (`outbox list` and
`/metrics` show both).

- RFC 3834 per-recipient caps on automatic mail: at most `auto_per_hour` an hour and
  `auto_per_day` a day (UTC), then one `limit_reached` notice and silence until the next day
  (at most 11 a day with the defaults). Mail over a cap, or to an address suppressed after a
  hard bounce, is recorded not sent ("auto-reply cap: 5/hour", "suppressed: bounced ..."), with
  nothing to send (no params, no bytes). Not-sent rows do not count towards the caps: the caps
  count what we put on the wire, as before. Agents are exempt (UNCAPPED_KINDS). So is a first
  contact (below): the address had no account before this transaction, so nothing we sent it
  can count, and it cannot be suppressed (a suppression follows a bounce of our mail to it).
- Mail a person asked for in the portal just now (`requested=True`: password reset, activation
  resend, sign-up activation, the confirmation of a portal ticket) is not an auto-reply: it
  skips the per-address caps and the suppression list (the portal's own per-address and per-IP
  limits bound it), so mail forged to fill an address's cap cannot block a password reset. It
  still counts in the address's tally, since the address did receive it.
- First contact (`first_contact=True`: the mail answers an inbound message whose sender had no
  account before it): at most `first_contact_per_hour` such mails go out in any hour, all
  recipients together; the next one is queued for when the hour's window frees up (the window
  counts first-contact rows by the time they are due to go out, so delayed rows are spaced out
  too), reason "first-contact cap: waits until HH:MM UTC".
- Agent notifications: at most `agent_notifications_per_hour` an hour per agent are sent one
  by one; beyond, each is recorded as a held row (`queued`, nothing to send, reason "digest:
  held ...", `next_attempt_at` = when its digest is due, `digest_minutes` after the first held
  one) and services/digests.py gathers them into one `agent_digest` mail per agent when due (a
  job). A held row then becomes `sent` with reason "digest: sent in outbox #N": its delivery is
  that digest row's. The sender never claims a held row: it claims only rows with something to
  send (outbound_limits.SENDABLE: params, or the bytes of a row queued before params existed).

The limits' queries are in outbound_limits.py; this module decides what a verdict does.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlmodel import Session

from mailgate import logs
from mailgate.clock import Clock
from mailgate.config import Localized, localized
from mailgate.core.compose import AUTOMATIC_KINDS, address
from mailgate.services.assemble import FileRef, encode_params
from mailgate.services.outbound_limits import (
    DIGEST_KIND,
    FIRST_CONTACT_CAP,
    HELD_FOR_DIGEST,
    UNCAPPED_KINDS,
    FirstContactWindow,
    auto_cap,
    digest_due,
)
from mailgate.services.render import MailRenderer
from mailgate.store.db import insert_values
from mailgate.store.models import Outbox


class TransportTempError(Exception):
    """Delivery failed for now (4xx, network): the row is retried with backoff."""


class TransportPermError(Exception):
    """Delivery will never work for this row (5xx): it is marked failed."""


class Transport(Protocol):
    """Where the sender hands mail (adapters/transports.py implements maildir and SMTP)."""

    def send(self, envelope_from: str, to_addr: str, raw: bytes) -> None: ...

    def check(self) -> str: ...


# compose.address is pure: an address found good once (the support address, a customer's
# for the confirmation and then the activation) is not parsed again. A refusal is not kept
# (lru_cache keeps no exception): it is raised every time.
_checked_address = functools.lru_cache(maxsize=1024)(address)

# Automatic (null sender, Auto-Submitted) like core's list; the digest is ours alone.
_AUTOMATIC = AUTOMATIC_KINDS | {DIGEST_KIND}


@dataclass(frozen=True)
class MailSettings:
    hostname: str
    support_address: str
    from_name: Localized  # a text per locale, or one for all (issue 15)
    base_url: str
    auto_per_hour: int = 5
    auto_per_day: int = 10
    max_attempts: int = 12
    retry_base_seconds: float = 60.0
    retry_max_seconds: float = 3600.0
    first_contact_per_hour: int = 200
    agent_notifications_per_hour: int = 30
    digest_minutes: int = 15  # how long a held notification waits for its digest, at most
    # The customer's files ride in an agent's notification up to this total; beyond, links.
    notification_attachment_bytes: int = 10 * 1024 * 1024


def new_message_id(hostname: str) -> str:
    return f"mg.{secrets.token_hex(12)}@{hostname}"


class Mailer:
    """Queues mail inside the caller's session (same transaction as the ticket); the sender
    renders and assembles it (services/assemble.py)."""

    def __init__(self, settings: MailSettings, renderer: MailRenderer, clock: Clock) -> None:
        self.settings = settings
        self.renderer = renderer
        self.clock = clock
        self.first_contacts = FirstContactWindow(settings.first_contact_per_hour)

    def url(self, path: str) -> str:
        return self.settings.base_url.rstrip("/") + path

    def _record_unsent(
        self,
        session: Session,
        *,
        kind: str,
        to_addr: str,
        ticket_id: int | None,
        now: datetime,
        status: str,
        reason: str,
        next_attempt_at: datetime,
        first_contact: bool,
    ) -> Outbox:
        """A row with nothing to send: a mail not sent (failed) or held for a digest (queued)."""
        return insert_values(
            session,
            Outbox,
            kind=kind,
            to_addr=to_addr,
            ticket_id=ticket_id,
            message_id=new_message_id(self.settings.hostname),
            envelope_from="",
            raw=b"",
            automatic=kind in _AUTOMATIC,
            status=status,
            next_attempt_at=next_attempt_at,
            created_at=now,
            reason=reason,
            first_contact=first_contact,
        )

    def queue(
        self,
        session: Session,
        *,
        kind: str,
        to_addr: str,
        locale: str | None,
        context: dict[str, Any],
        to_name: str = "",
        ticket_id: int | None = None,
        reply_to: str | None = None,
        in_reply_to: str | None = None,
        references: tuple[str, ...] = (),
        from_name: str | None = None,
        auto_submitted: str | None = None,
        requested: bool = False,
        first_contact: bool = False,
        attachments: Sequence[FileRef] = (),
    ) -> Outbox:
        """Queue one mail; always returns its row, which may say it waits or was not sent.

        `requested`: a person asked for this mail in the portal just now (not an auto-reply).
        `first_contact`: to an address we never heard from before the mail this answers.
        """
        now, cfg = self.clock.now(), self.settings
        automatic = kind in _AUTOMATIC
        # A first contact skips the lookups: nothing was sent to an address unknown until now.
        if automatic and kind not in UNCAPPED_KINDS and not requested and not first_contact:
            verdict = auto_cap(session, to_addr, now, cfg.auto_per_hour, cfg.auto_per_day)
            if verdict is not None and verdict[0] == "silent":
                row = self._record_unsent(
                    session,
                    kind=kind,
                    to_addr=to_addr,
                    ticket_id=ticket_id,
                    now=now,
                    status="failed",
                    reason=verdict[1],
                    next_attempt_at=now,
                    first_contact=first_contact,
                )
                logs.info(
                    "outbox.not_sent",
                    outbox=row.id,
                    to=to_addr,
                    kind=kind,
                    ticket=ticket_id,
                    reason=verdict[1],
                )
                return row
            if verdict is not None:
                logs.warning("outbox.limit_reached", to=to_addr, kind=kind, ticket=ticket_id)
                kind, ticket_id, reply_to = "limit_reached", None, None
        if kind == "agent_notification":
            digest_at = digest_due(
                session, to_addr, now, cfg.agent_notifications_per_hour, cfg.digest_minutes
            )
            if digest_at is not None:
                reason = f"{HELD_FOR_DIGEST} for the digest at {digest_at:%H:%M} UTC"
                row = self._record_unsent(
                    session,
                    kind=kind,
                    to_addr=to_addr,
                    ticket_id=ticket_id,
                    now=now,
                    status="queued",
                    reason=reason,
                    next_attempt_at=digest_at,
                    first_contact=False,
                )
                logs.info("outbox.held_for_digest", outbox=row.id, to=to_addr, ticket=ticket_id)
                return row
        send_at, reason = now, ""
        if first_contact and not requested:
            slot = self.first_contacts.slot(session, now)
            if slot is not None:
                send_at, reason = slot, f"{FIRST_CONTACT_CAP}: waits until {slot:%H:%M} UTC"
        # `echo` (may the mail repeat text its trigger's sender chose?) is off unless said.
        lang = self.renderer.locale_for(locale)
        company = localized(self.settings.from_name, lang, self.renderer.default_locale)
        ctx = {
            "company": company,
            "portal_url": self.url("/"),
            "echo": False,
            **context,
        }
        if automatic:
            auto_submitted = auto_submitted or ("auto-replied" if in_reply_to else "auto-generated")
        # Refused here, in the caller's transaction, as composing the mail here used to.
        for addr in (to_addr, reply_to, cfg.support_address):
            if addr:
                _checked_address(addr)
        params = encode_params(
            locale=lang,
            context=ctx,
            date=send_at,  # a delayed mail is dated when it is due to go out
            from_addr=cfg.support_address,
            from_name=from_name or company,
            hostname=cfg.hostname,
            to_name=to_name,
            reply_to=reply_to,
            in_reply_to=in_reply_to,
            references=references,
            auto_submitted=auto_submitted if automatic else None,
            attachments=attachments,
        )
        # One Core INSERT (a read-only snapshot back): on the writer's path for every mail.
        row = insert_values(
            session,
            Outbox,
            kind=kind,
            to_addr=to_addr,
            subject="",  # rendered by the sender
            ticket_id=ticket_id,
            message_id=new_message_id(cfg.hostname),
            # Automatic mail goes out with the null sender (RFC 3834): a bounce of a bounce,
            # or an autoresponder answering it, can never come back to us.
            envelope_from="" if automatic else cfg.support_address,
            raw=b"",
            params=params,
            automatic=automatic,
            next_attempt_at=send_at,
            created_at=now,
            reason=reason,
            first_contact=first_contact,
        )
        if reason:
            logs.warning(
                "outbox.delayed", message_id=row.message_id, kind=kind, to=to_addr, reason=reason
            )
        logs.info(
            "outbox.queued", message_id=row.message_id, kind=kind, to=to_addr, ticket=ticket_id
        )
        return row
