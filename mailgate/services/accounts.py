"""Accounts: customers made by their first mail or by sign-up, agents made by the operator."""

from __future__ import annotations

import functools
import secrets
import threading
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, delete
from sqlmodel import Session, col, select

from mailgate import logs
from mailgate.clock import Clock
from mailgate.core.enums import Role
from mailgate.core.language import Source, remembered
from mailgate.core.tokens import ACTIVATE, LINK_MAX_AGE, RESET, LinkTokens
from mailgate.services.outbox import Mailer
from mailgate.store.compiled import Statement
from mailgate.store.db import insert_values
from mailgate.store.models import Account, Outbox, WebSession

_HASHER = PasswordHasher()  # argon2id with the library's current recommended parameters
# Each Argon2 hash holds 64 MiB while it runs: at most this many at once per process, so a
# burst of sign-ins costs HASH_SLOTS x 64 MiB, not one 64 MiB per request thread.
HASH_SLOTS = 2


class Passwords:
    """Argon2 hashing and checking with bounded concurrency. Blocking: call it from a worker
    thread, never on the event loop. `hasher` is injectable (tests count concurrent calls)."""

    def __init__(self, hasher: PasswordHasher | None = None, slots: int = HASH_SLOTS) -> None:
        self.hasher = hasher or _HASHER
        self._slots = threading.BoundedSemaphore(slots)

    def hash(self, password: str) -> str:
        with self._slots:
            return self.hasher.hash(password)

    def verify(self, encoded: str | None, password: str) -> bool:
        """False for a wrong password or no hash; a miss costs as much as a hit."""
        with self._slots:
            try:
                if encoded is None:
                    self.hasher.verify(self._dummy_hash, password)
                    return False
                return bool(self.hasher.verify(encoded, password))
            except (VerificationError, InvalidHashError):
                return False

    @functools.cached_property
    def _dummy_hash(self) -> str:
        """Made on first use, not at import: `deliver` runs once per mail and never needs it."""
        return self.hasher.hash(secrets.token_hex(8))


PASSWORDS = Passwords()  # one per process: the slots bound the whole process


class Unset:
    """The type of UNSET: "not given", where None is a meaningful value."""


UNSET = Unset()


def normalise_email(email: str) -> str:
    return email.strip().lower()


_ACCOUNT: Any = Account.__table__  # type: ignore[attr-defined]
# The writer looks every sender up, and most are strangers: the id alone, compiled once and
# run on the session's DBAPI connection (store/compiled.py), not an ORM query.
_ID_BY_EMAIL = Statement(select(_ACCOUNT.c.id).where(_ACCOUNT.c.email == bindparam("email")))


class Accounts:
    def __init__(
        self,
        mailer: Mailer,
        links: LinkTokens,
        clock: Clock,
        default_locale: str,
        passwords: Passwords | None = None,
    ):
        self.passwords = passwords or PASSWORDS
        self.mailer = mailer
        self.links = links
        self.clock = clock
        self.default_locale = default_locale

    def find(self, session: Session, email: str) -> Account | None:
        """The session's Account for this address (loaded if not yet), or None."""
        if session.autoflush:  # as an ORM query would: what the session holds is looked at too
            session.flush()
        found = _ID_BY_EMAIL.scalar(session, {"email": normalise_email(email)})
        return None if found is None else session.get(Account, found)

    def find_or_create_customer(
        self,
        session: Session,
        email: str,
        name: str = "",
        locale: str | None = None,
        *,
        found: Account | Unset | None = UNSET,
        locale_source: Source = Source.HEADER,
    ) -> tuple[Account, bool]:
        """(account, created). `found`: the caller already looked the address up in this
        transaction (None: no account), so it is not looked up twice. `locale` (from
        `locale_source`) is remembered if it is better evidence than what the account has."""
        account = self.find(session, email) if isinstance(found, Unset) else found
        if locale is None:
            locale_source = Source.DEFAULT
        if account is not None:
            if not account.name and name:
                account.name = name[:200]
            if locale is not None:
                account.locale, account.locale_source = remembered(
                    account.locale, account.locale_source, locale, locale_source
                )
            return account, False
        account = Account(**self._new_customer(email, name, locale, locale_source))
        session.add(account)
        session.flush()
        logs.info("account.created", account=account.id, email=account.email)
        return account, True

    def create_customer(
        self,
        session: Session,
        email: str,
        name: str = "",
        locale: str | None = None,
        *,
        locale_source: Source = Source.HEADER,
    ) -> Account:
        """A customer account for an address the caller found none for, in one Core INSERT
        (a first contact makes one for every mail): a read-only snapshot, not a tracked row.
        `find_or_create_customer` for an account the caller then changes."""
        values = self._new_customer(email, name, locale, locale_source)
        account = insert_values(session, Account, **values)
        logs.info("account.created", account=account.id, email=account.email)
        return account

    def _new_customer(
        self, email: str, name: str, locale: str | None, locale_source: Source
    ) -> dict[str, Any]:
        return {
            "email": normalise_email(email),
            "name": name[:200],
            "role": Role.CUSTOMER,
            "security_stamp": secrets.token_hex(16),
            "locale": locale or self.default_locale,
            "locale_source": locale_source if locale else Source.DEFAULT,
            "created_at": self.clock.now(),
        }

    def add_agent(
        self, session: Session, email: str, name: str, locale: str | None = None
    ) -> Account:
        """Makes (or promotes) an agent; an agent removed before is enabled again. `locale`
        is the language of the agent's mail, recorded as their choice (issue 15)."""
        account, _ = self.find_or_create_customer(session, email, name)
        account.role = Role.AGENT
        account.name = name[:200] or account.name
        account.disabled_at = None
        if locale:
            account.locale, account.locale_source = locale, Source.CHOSEN
        session.add(account)
        session.flush()
        logs.info("agent.added", account=account.id, email=account.email)
        return account

    def disable(self, session: Session, account: Account) -> None:
        """Switches an account off (`mailgate agent remove`): it is no agent any more (every
        `role == agent` check, notifications and `#assign` included, stops counting it),
        cannot sign in, its links die (new security stamp), its portal sessions end, and
        mail from it is a stranger's (thread_match ignores its reply tokens)."""
        account.disabled_at = self.clock.now()
        account.role = Role.CUSTOMER
        account.security_stamp = secrets.token_hex(16)
        session.add(account)
        session.execute(delete(WebSession).where(col(WebSession.account_id) == account.id))
        session.flush()
        logs.info("account.disabled", account=account.id, email=account.email)

    def activation_url(self, account: Account) -> str:
        """The signed link that sets the account's first password (valid 72 h)."""
        token = self.links.make(ACTIVATE, account.id or 0, account.security_stamp)
        return self.mailer.url(f"/activate/{token}")

    def queue_activation(
        self,
        session: Session,
        account: Account,
        ticket_id: int | None = None,
        in_reply_to: str | None = None,  # the mail that made the account (RFC 3834)
        *,
        requested: bool = False,  # asked for in the portal just now: never capped away
        first_contact: bool = False,  # made by a mail from an address never heard from
        echo: bool = True,  # False: no text the sender chose (their name) goes back to them
    ) -> Outbox:
        return self.mailer.queue(
            session,
            kind="activation",
            to_addr=account.email,
            to_name=account.name if echo else "",
            locale=account.locale,
            ticket_id=ticket_id,
            in_reply_to=in_reply_to,
            requested=requested,
            first_contact=first_contact,
            context={
                "customer_name": account.name if echo else "",
                "echo": echo,
                "email": account.email,
                "activation_url": self.activation_url(account),
                "expires": self._link_expiry(ACTIVATE),
                "tz": account.timezone,
            },
        )

    def queue_reset(self, session: Session, account: Account, *, requested: bool = False) -> Outbox:
        token = self.links.make(RESET, account.id or 0, account.security_stamp)
        return self.mailer.queue(
            session,
            kind="password_reset",
            to_addr=account.email,
            to_name=account.name,
            locale=account.locale,
            requested=requested,
            context={
                "email": account.email,
                "reset_url": self.mailer.url(f"/password/reset/{token}"),
                "expires": self._link_expiry(RESET),
                "tz": account.timezone,
            },
        )

    def _link_expiry(self, purpose: str) -> datetime:
        """When a link made now stops working: the mail gives the time (issue 15)."""
        return self.mailer.clock.now() + timedelta(seconds=LINK_MAX_AGE[purpose])

    def account_for_link(self, session: Session, purpose: str, token: str) -> Account | None:
        """The account a link was made for, if genuine, unexpired and still current."""
        read = self.links.read(purpose, token)
        if read is None:
            return None
        account = session.get(Account, read[0])
        if account is None or not secrets.compare_digest(account.security_stamp, read[1]):
            return None
        if account.disabled_at is not None:
            return None  # switched off: no way back in by a link either
        if purpose == ACTIVATE and account.password_hash is not None:
            return None  # single use: an active account is not activated twice
        return account

    def hash_password(self, password: str) -> str:
        """Argon2id, slow on purpose: callers hash before entering the writer's transaction."""
        return self.passwords.hash(password)

    def set_password(
        self, session: Session, account: Account, password: str, *, hashed: str | None = None
    ) -> None:
        account.password_hash = hashed or self.passwords.hash(password)
        account.security_stamp = secrets.token_hex(16)  # kills every outstanding link
        if account.activated_at is None:
            account.activated_at = self.clock.now()
        session.add(account)
        session.flush()
        logs.info("account.password_set", account=account.id)

    def verify_password(self, account: Account | None, password: str) -> bool:
        return self.passwords.verify(account.password_hash if account else None, password)


__all__ = ["ACTIVATE", "RESET", "Accounts", "normalise_email"]
