"""The customer portal's account use cases: sign-up, activation, forgotten password, reset,
sign-in and sign-out. Ticket use cases are in portal_tickets.py.

Each use case is one transaction run by the writer (the GroupCommitter's `run`), so portal
writes queue behind mail ingestion instead of fighting it for SQLite's lock. Slow CPU work
(Argon2 hashing, the captcha's key derivation) happens before, outside the transaction.
Nothing here knows about HTTP: the caller passes plain values (the client's IP as a string).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session

from mailgate import logs
from mailgate.core.enums import Role
from mailgate.core.language import Source
from mailgate.core.tokens import ACTIVATE, RESET
from mailgate.services import ratelimit as rl
from mailgate.services.accounts import Accounts, normalise_email
from mailgate.services.captcha import Captcha
from mailgate.services.helpcentre import HelpServices
from mailgate.services.oidc import OidcSignIn
from mailgate.services.portal_tickets import PortalTickets
from mailgate.services.ratelimit import RateLimiter, Verdict
from mailgate.services.websessions import SignedIn, WebSessions
from mailgate.services.writer import Writer
from mailgate.store.db import Database
from mailgate.store.models import Account

EMAIL_RE = re.compile(r"^[^@\s<>\"()\[\],;:\\]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
NAME_MAX = 200
PASSWORD_MIN = 10
PASSWORD_MAX = 1024  # Argon2 would hash a megabyte happily; nobody types one


@dataclass(frozen=True)
class Outcome:
    """What a use case did. `status`: ok, invalid, captcha, limited, already_sent, bad_link,
    bad_credentials. For mails asked for: `sent_at` when the (last) link went, `retry_at` when
    the person may ask again (UTC)."""

    status: str
    errors: tuple[str, ...] = ()
    cookie: str | None = None
    sent_at: datetime | None = None
    retry_at: datetime | None = None

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
        agents_password: bool = True,  # [auth] agents_password: false = providers only
    ) -> None:
        self.db = db
        self.write = write
        self.accounts = accounts
        self.sessions = sessions
        self.limiter = limiter
        self.captcha = captcha
        self.agents_password = agents_password

    def now(self) -> datetime:
        """The service's clock (pages count Retry-After from it)."""
        return self.limiter.clock.now()

    # -- sessions ------------------------------------------------------------------------

    def current(self, cookie: str | None) -> SignedIn | None:
        if not cookie:
            return None
        with self.db.read() as session:
            return self.sessions.lookup(session, cookie)

    def sign_in(self, email: str, password: str, ip: str, replacing: str | None) -> Outcome:
        """Failures slow down the client making them (this IP on this address, this IP
        overall), not the address's owner elsewhere. The attempt is counted as a failure
        before the password is checked, in the same transaction as the check of the limits,
        so parallel guesses cannot slip past them; a success takes the count back."""
        email = normalise_email(email)
        attempt = self.write(lambda session: self._reserve_attempt(session, email, ip))
        if isinstance(attempt, Verdict):
            logs.warning("portal.signin_limited", ip=ip)
            return Outcome("limited", retry_at=attempt.retry_at)
        account, event_ids = attempt
        # Checked even for an unknown address (against a dummy hash): a miss costs a hit.
        if not self.accounts.verify_password(account, password) or account is None:
            logs.info("portal.signin_failed", ip=ip)
            return Outcome("bad_credentials")
        if account.disabled_at is not None:  # `mailgate agent remove`: the same answer
            logs.info("portal.signin_disabled", account=account.id)
            return Outcome("bad_credentials")
        if account.role == Role.AGENT and not self.agents_password:
            # [auth] agents_password = false: agents sign in through a provider (issue 14);
            # said only to someone who knows the password.
            logs.info("portal.signin_provider_required", account=account.id)
            return Outcome("provider_required")
        account_id = account.id or 0

        def succeeded(session: Session) -> str:
            self.limiter.forget(session, rl.SIGN_IN_PER_CLIENT, _client(ip, email))
            self.limiter.take_back(session, event_ids)
            return self.sessions.open(session, account_id, replacing)

        cookie = self.write(succeeded)
        logs.info("portal.signed_in", account=account_id)
        return Outcome("ok", cookie=cookie)

    def _reserve_attempt(
        self, session: Session, email: str, ip: str
    ) -> Verdict | tuple[Account | None, tuple[int, ...]]:
        """One write transaction: check the limits and count this attempt, or refuse.

        The per-address ceiling stops guessing spread over many IPs: once an address has
        had that many failures, each client gets one try on it per window instead of five,
        but a client with no failure on it (the owner on their own device) still gets that
        try, so the right password always gets in."""
        client = [(rl.SIGN_IN_PER_CLIENT, _client(ip, email)), (rl.SIGN_IN_PER_IP, ip)]
        address = (rl.SIGN_IN_PER_ADDRESS, email)
        self.limiter.lock(session, [*client, address])
        verdict = self.limiter.check(session, client)
        if not verdict.ok:
            return verdict
        ceiling = self.limiter.check(session, [address])
        if not ceiling.ok and self.limiter.uses(session, *client[0]):
            return ceiling
        ids = tuple(self.limiter.record(session, limit, subject) for limit, subject in client)
        ids += (self.limiter.record(session, *address),)
        account = self.accounts.find(session, email) if valid_email(email) else None
        return account, ids

    def sign_out(self, cookie: str | None) -> None:
        if cookie:
            self.write(lambda session: self.sessions.close(session, cookie))

    # -- sign-up and links ---------------------------------------------------------------

    # -- language and time zone (issue 15) -----------------------------------------------

    def choose_language(self, account_id: int, locale: str) -> None:
        """The person chose their language in the portal: it wins over everything else."""

        def job(session: Session) -> None:
            account = session.get(Account, account_id)
            if account is not None:
                account.locale, account.locale_source = locale, Source.CHOSEN
                session.add(account)

        self.write(job)

    def set_timezone(self, account_id: int, zone: str) -> None:
        """`zone` must already be a known IANA name (the adapter checks it)."""

        def job(session: Session) -> None:
            account = session.get(Account, account_id)
            if account is not None and account.timezone != zone:
                account.timezone = zone
                session.add(account)

        self.write(job)

    def sign_up(
        self,
        name: str,
        email: str,
        captcha: str,
        ip: str,
        locale: str,
        locale_source: Source = Source.BROWSER,
    ) -> Outcome:
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

        def job(session: Session) -> Outcome:
            if not self.captcha.consume(session, nonce):
                return Outcome("captcha", ("captcha.required",))
            verdict = self.limiter.take(
                session,
                [
                    (rl.SIGN_UP_PER_IP, ip),
                    (rl.SIGN_UP_GAP, email),
                    (rl.SIGN_UP_PER_ADDRESS, email),
                ],
            )
            if not verdict.ok:
                return _refused(verdict, by_ip=rl.SIGN_UP_PER_IP)
            account, created = self.accounts.find_or_create_customer(
                session, email, name, locale, locale_source=locale_source
            )
            if account.password_hash is None:
                queued = _queued(self.accounts.queue_activation, session, account, "activation")
            else:
                queued = _queued(self.accounts.queue_reset, session, account, "password_reset")
            logs.info("portal.signed_up", account=account.id, created=created, queued=queued)
            # Every address has an account from here on, so "not queued" reveals nothing.
            return Outcome("ok" if queued else "not_sent", sent_at=self.limiter.clock.now())

        return self.write(job)

    def request_reset(self, email: str, ip: str) -> Outcome:
        """Same answer whether the address is known or not: the limits and the "sent at"
        time are kept (hashed) for unknown addresses too. An account made by its first mail
        and never activated is activated this way as well."""
        email = normalise_email(email)
        if not valid_email(email):
            return Outcome("invalid", ("email.invalid",))

        def job(session: Session) -> Outcome:
            verdict = self.limiter.take(
                session,
                [(rl.RESET_PER_IP, ip), (rl.RESET_GAP, email), (rl.RESET_PER_ADDRESS, email)],
            )
            if not verdict.ok:
                return _refused(verdict, by_ip=rl.RESET_PER_IP)
            account = self.accounts.find(session, email)
            if account is not None:
                queued = _queued(self.accounts.queue_reset, session, account, "password_reset")
                logs.info("portal.reset_requested", account=account.id, queued=queued)
            return Outcome("ok", sent_at=self.limiter.clock.now())

        outcome = self.write(job)
        if outcome.status == "limited":
            logs.warning("portal.reset_limited", ip=ip)
        return outcome

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


def _client(ip: str, email: str) -> str:
    return f"{ip}|{email}"


def _refused(verdict: Verdict, *, by_ip: rl.Limit) -> Outcome:
    """`already_sent` when this address had its link lately (the page says when), `limited`
    when only this client's own cap refused it."""
    if by_ip in verdict.refused_by and len(verdict.refused_by) == 1:
        return Outcome("limited", retry_at=verdict.retry_at)
    return Outcome("already_sent", sent_at=verdict.last_at, retry_at=verdict.retry_at)


def _queued(queue: Callable[..., Any], session: Session, account: Account, kind: str) -> bool:
    """Queue a mail the person asked for (no auto-reply caps apply: `requested=True`) and
    say whether that very mail is in the outbox, so no page promises a mail that is not."""
    row = queue(session, account, requested=True)
    return row is not None and getattr(row, "kind", None) == kind


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
    help: HelpServices | None = None  # the help centre (issue 13): articles, search
    oidc: OidcSignIn | None = None  # sign-in with OpenID Connect providers (issue 14)
