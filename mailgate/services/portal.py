"""The customer portal's account use cases: sign-up, activation, forgotten password, reset,
sign-in and sign-out. Ticket use cases are in portal_tickets.py.

Each use case is one transaction run by the writer (the GroupCommitter's `run`), so portal
writes queue behind mail ingestion instead of fighting it for SQLite's lock. Slow CPU work
(Argon2 hashing, the captcha's key derivation) happens before, outside the transaction.
Nothing here knows about HTTP: the caller passes plain values (the client's IP as a string).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlmodel import Session

from mailgate import logs
from mailgate.core.tokens import ACTIVATE, RESET
from mailgate.services import ratelimit as rl
from mailgate.services.accounts import Accounts, normalise_email
from mailgate.services.captcha import Captcha
from mailgate.services.portal_tickets import PortalTickets
from mailgate.services.ratelimit import RateLimiter
from mailgate.services.websessions import SignedIn, WebSessions
from mailgate.services.writer import Writer
from mailgate.store.db import Database

EMAIL_RE = re.compile(r"^[^@\s<>\"()\[\],;:\\]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
NAME_MAX = 200
PASSWORD_MIN = 10
PASSWORD_MAX = 1024  # Argon2 would hash a megabyte happily; nobody types one


@dataclass(frozen=True)
class Outcome:
    """What a use case did. `status`: ok, invalid, captcha, limited, bad_link, bad_credentials."""

    status: str
    errors: tuple[str, ...] = ()
    cookie: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def valid_email(email: str) -> bool:
    return len(email) <= 254 and EMAIL_RE.match(email) is not None


def password_problems(password: str, confirm: str, email: str) -> tuple[str, ...]:
    errors = []
    if len(password) < PASSWORD_MIN:
        errors.append("password.short")
    elif len(password) > PASSWORD_MAX:
        errors.append("password.long")
    elif password.strip().lower() == email.lower():
        errors.append("password.is_email")
    if password != confirm:
        errors.append("password_confirm.mismatch")
    return tuple(errors)


class PortalAccounts:
    def __init__(
        self,
        *,
        db: Database,
        write: Writer,
        accounts: Accounts,
        sessions: WebSessions,
        limiter: RateLimiter,
        captcha: Captcha,
    ) -> None:
        self.db = db
        self.write = write
        self.accounts = accounts
        self.sessions = sessions
        self.limiter = limiter
        self.captcha = captcha

    # -- sessions ------------------------------------------------------------------------

    def current(self, cookie: str | None) -> SignedIn | None:
        if not cookie:
            return None
        with self.db.read() as session:
            return self.sessions.lookup(session, cookie)

    def sign_in(self, email: str, password: str, ip: str, replacing: str | None) -> Outcome:
        email = normalise_email(email)
        with self.db.read() as session:
            limited = self.limiter.exceeded(
                session, rl.SIGN_IN_PER_ADDRESS, email
            ) or self.limiter.exceeded(session, rl.SIGN_IN_PER_IP, ip)
            account = self.accounts.find(session, email) if valid_email(email) else None
        if limited:
            logs.warning("portal.signin_limited", ip=ip)
            return Outcome("limited")
        if not self.accounts.verify_password(account, password) or account is None:

            def failed(session: Session) -> None:
                self.limiter.record(session, rl.SIGN_IN_PER_ADDRESS, email)
                self.limiter.record(session, rl.SIGN_IN_PER_IP, ip)

            self.write(failed)
            logs.info("portal.signin_failed", ip=ip)
            return Outcome("bad_credentials")
        account_id = account.id or 0

        def succeeded(session: Session) -> str:
            self.limiter.forget(session, rl.SIGN_IN_PER_ADDRESS, email)
            return self.sessions.open(session, account_id, replacing)

        cookie = self.write(succeeded)
        logs.info("portal.signed_in", account=account_id)
        return Outcome("ok", cookie=cookie)

    def sign_out(self, cookie: str | None) -> None:
        if cookie:
            self.write(lambda session: self.sessions.close(session, cookie))

    # -- sign-up and links ---------------------------------------------------------------

    def sign_up(self, name: str, email: str, captcha: str, ip: str, locale: str) -> Outcome:
        """Always the same answer for a new or a known address: an activation mail goes to a
        new (or never activated) account, a reset mail to an active one."""
        name, email = " ".join(name.split()), normalise_email(email)
        errors = []
        if not name:
            errors.append("name.required")
        elif len(name) > NAME_MAX:
            errors.append("name.long")
        if not valid_email(email):
            errors.append("email.invalid")
        if errors:
            return Outcome("invalid", tuple(errors))
        nonce = self.captcha.check(captcha)
        if nonce is None:
            return Outcome("captcha", ("captcha.required",))

        def job(session: Session) -> str:
            if not self.captcha.consume(session, nonce):
                return "captcha"
            if not self.limiter.take(
                session, [(rl.SIGN_UP_PER_IP, ip), (rl.SIGN_UP_PER_ADDRESS, email)]
            ):
                return "limited"
            account, created = self.accounts.find_or_create_customer(session, email, name, locale)
            if account.password_hash is None:
                self.accounts.queue_activation(session, account)
            else:
                self.accounts.queue_reset(session, account)
            logs.info("portal.signed_up", account=account.id, created=created)
            return "ok"

        status = self.write(job)
        return Outcome(status, ("captcha.required",) if status == "captcha" else ())

    def request_reset(self, email: str, ip: str) -> Outcome:
        """Same answer whether the address is known or not; limits count unknown ones too."""
        email = normalise_email(email)
        if not valid_email(email):
            return Outcome("invalid", ("email.invalid",))

        def job(session: Session) -> str:
            if not self.limiter.take(
                session, [(rl.RESET_PER_IP, ip), (rl.RESET_PER_ADDRESS, email)]
            ):
                return "limited"
            account = self.accounts.find(session, email)
            if account is not None:
                # A never-activated account (made by its first mail) is activated this way too.
                self.accounts.queue_reset(session, account)
                logs.info("portal.reset_requested", account=account.id)
            return "ok"

        status = self.write(job)
        if status == "limited":
            logs.warning("portal.reset_limited", ip=ip)
        return Outcome(status)

    def link_account(self, purpose: str, token: str) -> str | None:
        """The e-mail address a link was made for, if it still works (a GET changes nothing)."""
        with self.db.read() as session:
            account = self.accounts.account_for_link(session, _purpose(purpose), token)
            return account.email if account is not None else None

    def set_password(
        self, purpose: str, token: str, password: str, confirm: str, replacing: str | None
    ) -> Outcome:
        """Activation or reset: the link dies (new security stamp), every other session of the
        account ends, and the browser gets a brand-new one."""
        purpose = _purpose(purpose)
        email = self.link_account(purpose, token)
        if email is None:
            return Outcome("bad_link")
        errors = password_problems(password, confirm, email)
        if errors:
            return Outcome("invalid", errors)
        hashed = self.accounts.hash_password(password)

        def job(session: Session) -> tuple[int, str] | None:
            # Checked again inside the transaction: of two racing submits, one wins.
            account = self.accounts.account_for_link(session, purpose, token)
            if account is None:
                return None
            self.accounts.set_password(session, account, password, hashed=hashed)
            self.sessions.close_all(session, account.id or 0)
            if replacing:
                self.sessions.close(session, replacing)
            return account.id or 0, self.sessions.open(session, account.id or 0)

        done = self.write(job)
        if done is None:
            return Outcome("bad_link")
        logs.info("portal.password_set", account=done[0], via=purpose)
        return Outcome("ok", cookie=done[1])


def _purpose(purpose: str) -> str:
    if purpose not in (ACTIVATE, RESET):
        raise ValueError(f"not a link purpose: {purpose}")
    return purpose


@dataclass(frozen=True)
class Portal:
    """Everything the portal adapter calls, built once by app.py."""

    accounts: PortalAccounts
    tickets: PortalTickets
    captcha: Captcha
