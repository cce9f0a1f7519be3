"""Accounts: customers made by their first mail or by sign-up, agents made by the operator."""

from __future__ import annotations

import functools
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, select

from mailgate import logs
from mailgate.clock import Clock
from mailgate.core.tokens import ACTIVATE, RESET, LinkTokens
from mailgate.services.outbox import Mailer
from mailgate.store.models import Account

_HASHER = PasswordHasher()  # argon2id with the library's current recommended parameters


@functools.cache
def _dummy_hash() -> str:
    """Verified against when an address is unknown, so a miss costs as much as a hit. Made on
    first use, not at import: `deliver` runs once per mail and never needs it."""
    return _HASHER.hash(secrets.token_hex(8))


def normalise_email(email: str) -> str:
    return email.strip().lower()


class Accounts:
    def __init__(self, mailer: Mailer, links: LinkTokens, clock: Clock, default_locale: str):
        self.mailer = mailer
        self.links = links
        self.clock = clock
        self.default_locale = default_locale

    def find(self, session: Session, email: str) -> Account | None:
        return session.exec(select(Account).where(Account.email == normalise_email(email))).first()

    def find_or_create_customer(
        self, session: Session, email: str, name: str = "", locale: str | None = None
    ) -> tuple[Account, bool]:
        account = self.find(session, email)
        if account is not None:
            if not account.name and name:
                account.name = name[:200]
            return account, False
        account = Account(
            email=normalise_email(email),
            name=name[:200],
            role="customer",
            security_stamp=secrets.token_hex(16),
            locale=locale or self.default_locale,
            created_at=self.clock.now(),
        )
        session.add(account)
        session.flush()
        logs.info("account.created", account=account.id, email=account.email)
        return account, True

    def add_agent(self, session: Session, email: str, name: str) -> Account:
        account, _ = self.find_or_create_customer(session, email, name)
        account.role = "agent"
        account.name = name[:200] or account.name
        session.add(account)
        session.flush()
        logs.info("agent.added", account=account.id, email=account.email)
        return account

    def queue_activation(
        self,
        session: Session,
        account: Account,
        ticket_id: int | None = None,
        in_reply_to: str | None = None,  # the mail that made the account (RFC 3834)
    ):
        token = self.links.make(ACTIVATE, account.id or 0, account.security_stamp)
        return self.mailer.queue(
            session,
            kind="activation",
            to_addr=account.email,
            to_name=account.name,
            locale=account.locale,
            ticket_id=ticket_id,
            in_reply_to=in_reply_to,
            context={
                "customer_name": account.name,
                "email": account.email,
                "activation_url": self.mailer.url(f"/activate/{token}"),
            },
        )

    def queue_reset(self, session: Session, account: Account):
        token = self.links.make(RESET, account.id or 0, account.security_stamp)
        return self.mailer.queue(
            session,
            kind="password_reset",
            to_addr=account.email,
            to_name=account.name,
            locale=account.locale,
            context={
                "email": account.email,
                "reset_url": self.mailer.url(f"/password/reset/{token}"),
            },
        )

    def account_for_link(self, session: Session, purpose: str, token: str) -> Account | None:
        """The account a link was made for, if genuine, unexpired and still current."""
        read = self.links.read(purpose, token)
        if read is None:
            return None
        account = session.get(Account, read[0])
        if account is None or not secrets.compare_digest(account.security_stamp, read[1]):
            return None
        if purpose == ACTIVATE and account.password_hash is not None:
            return None  # single use: an active account is not activated twice
        return account

    @staticmethod
    def hash_password(password: str) -> str:
        """Argon2id, slow on purpose: callers hash before entering the writer's transaction."""
        return _HASHER.hash(password)

    def set_password(
        self, session: Session, account: Account, password: str, *, hashed: str | None = None
    ) -> None:
        account.password_hash = hashed or _HASHER.hash(password)
        account.security_stamp = secrets.token_hex(16)  # kills every outstanding link
        if account.activated_at is None:
            account.activated_at = self.clock.now()
        session.add(account)
        session.flush()
        logs.info("account.password_set", account=account.id)

    @staticmethod
    def verify_password(account: Account | None, password: str) -> bool:
        try:
            if account is None or account.password_hash is None:
                _HASHER.verify(_dummy_hash(), password)
                return False
            return _HASHER.verify(account.password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


__all__ = ["ACTIVATE", "RESET", "Accounts", "normalise_email"]
