"""Lean composition for CLI commands: what ingest and the ticket services need, nothing of
`serve` (listeners, portal, parse workers, metrics, IMAP, the sender).

`app.build()` composes the same objects for `serve`; importing app.py loads Starlette, the
portal and every adapter, which cost `mailgate deliver` ~0.3 s a mail (issue 11).
tests/unit/test_cli_wiring.py checks that what is built here matches what app.build() builds,
so a setting added there and forgotten here fails a test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mailgate.clock import Clock, SystemClock
from mailgate.config import Config
from mailgate.core.addresses import AddressBook
from mailgate.core.language_detect import parser_for
from mailgate.core.tokens import LinkTokens
from mailgate.core.verification import DEFAULT_RULES
from mailgate.errors import ConfigError
from mailgate.keys import Keys, Purpose, load_secret
from mailgate.services.accounts import Accounts
from mailgate.services.ingest import Ingestor
from mailgate.services.outbox import Mailer, MailSettings
from mailgate.services.render import MailRenderer
from mailgate.services.sender_trust import SenderVerifier
from mailgate.services.tickets import Conversations
from mailgate.store.blobs import BlobStore, open_store
from mailgate.store.db import Database

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@dataclass
class Core:
    """The write side shared by deliver, import, quarantine, jobs and agent add."""

    config: Config
    clock: Clock
    db: Database
    blobs: BlobStore
    mailer: Mailer
    accounts: Accounts
    conversations: Conversations
    ingestor: Ingestor


def mail_settings(config: Config) -> MailSettings:
    out = config.outbound
    return MailSettings(
        hostname=config.mailgate.hostname,
        support_address=config.support_address,
        from_name=out.from_name,
        base_url=config.portal.base_url,
        auto_per_hour=out.auto_per_hour,
        auto_per_day=out.auto_per_day,
        max_attempts=out.max_attempts,
        retry_base_seconds=out.retry_base_seconds,
        retry_max_seconds=out.retry_max_seconds,
        first_contact_per_hour=out.first_contact_per_hour,
        agent_notifications_per_hour=out.agent_notifications_per_hour,
        notification_attachment_bytes=out.notification_attachment_bytes,
    )


def sender_verifier(config: Config) -> SenderVerifier | None:
    """Our own SPF/DKIM/DMARC checks, when mailgate is the MX (no trusted MTA in front)."""
    sec = config.security
    if sec.authserv_id or sec.verify_sender != "auto":
        return None
    from mailgate.adapters.senderauth import DnsSenderVerifier  # dkimpy, pyspf: only when used

    try:
        return DnsSenderVerifier(resolver=sec.dns_resolver, timeout=sec.dns_timeout_seconds)
    except ValueError as exc:
        raise ConfigError(f"security.dns_resolver: {exc}") from None


def blob_store(config: Config) -> BlobStore:
    """Where raw mail and attachments are kept (`ticket attachment` reads them too): `[blobs]
    url`, a local folder or an S3-compatible object store (then data_dir/blob-cache holds
    temporary files and read-through copies)."""
    return open_store(config.blobs.url, config.data_dir / "blob-cache")


def build_for_ingest(config: Config, clock: Clock | None = None) -> Core:
    """Ingest in the calling process: no committer thread and no parse workers (both run
    inline until started), so nothing here outlives the command."""
    clock = clock or SystemClock()
    keys = Keys(load_secret(config.mailgate.secret_key, config.secret_file))
    db = Database(config.database.url)
    blobs = blob_store(config)
    renderer = MailRenderer(
        TEMPLATES, config.mailgate.default_locale, config.mailgate.default_timezone
    )
    mailer = Mailer(mail_settings(config), renderer, clock)
    links = LinkTokens(keys.key(Purpose.LINKS), clock.now)
    accounts = Accounts(mailer, links, clock, config.mailgate.default_locale)
    addresses = AddressBook(config.support_address, dict(config.addresses.categories))
    conversations = Conversations(
        accounts=accounts,
        mailer=mailer,
        blobs=blobs,
        addresses=addresses,
        reply_key=keys.key(Purpose.REPLY),
        clock=clock,
        articles_in_confirmation=config.helpcentre.suggest_in_confirmation,
    )
    ingestor = Ingestor(
        parse=parser_for(renderer.locales),  # with the language of the text (issue 15)
        db=db,
        blobs=blobs,
        conversations=conversations,
        addresses=addresses,
        reply_key=keys.key(Purpose.REPLY),
        hostname=config.mailgate.hostname,
        clock=clock,
        max_message_bytes=config.inbound.max_message_bytes,
        max_received_headers=config.inbound.max_received_headers,
        authserv_id=config.security.authserv_id,
        require_dmarc_for_threading=config.security.require_dmarc_for_threading,
        verifier=sender_verifier(config),
        verification_rules=DEFAULT_RULES.with_extra(
            config.security.verification_senders,
            config.security.verification_phrases,
            config.security.hold_verification_mail,
        ),
    )
    return Core(config, clock, db, blobs, mailer, accounts, conversations, ingestor)
