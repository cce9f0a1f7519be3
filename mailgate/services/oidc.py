"""Signing in with an OpenID Connect provider (issue 14): the sign-ins under way and the rules
that say which mailgate account a provider's account opens. No HTTP here: the provider is
reached through a `ProviderClient` (adapters/oidc_client.py), which checks the ID token
(signature against the provider's keys, `iss`, `aud`, `exp`, `iat`, `nonce`) and hands back
`Claims`.

The rules, in order (`OidcSignIn.sign_in`):

1. The provider must vouch for the address: `email_verified` true, in `allowed_domains` when
   the operator set some. Otherwise: refused, nothing signed in.
2. A provider account linked before (provider + `sub`) opens the account it is linked to,
   whatever address the provider gives now: a changed address at the provider moves nothing.
3. Else the address: a known account (made by a first mail, by sign-up or a password) is
   linked and opened, and becomes active if it was not; an unknown address makes a customer
   account (sign-up's rules; the provider did the proving a captcha would). An account linked
   already to *another* account at the same provider is refused: a provider that hands an
   address to someone new (a recycled mailbox) cannot hand over the mailgate account with it.
4. The provider must be meant for that kind of account (`users`: customers, agents), and a
   disabled account stays closed.

The session is opened exactly as a password sign-in opens one (WebSessions.open).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from sqlalchemy import delete
from sqlmodel import Session, col, select

from mailgate import logs
from mailgate.clock import Clock, as_utc
from mailgate.core.enums import Role
from mailgate.services.accounts import Accounts, normalise_email
from mailgate.services.websessions import WebSessions
from mailgate.services.writer import Writer
from mailgate.store.db import Database
from mailgate.store.models import Account, OidcIdentity, OidcLogin

FLOW_LIFETIME = timedelta(minutes=10)  # from the button to the callback
NAME_MAX = 200


class Refusal(StrEnum):
    """Why a provider sign-in was refused; each has its own page text (oidc.refused.*)."""

    NO_FLOW = "no_flow"  # no sign-in under way: replayed, expired, other browser, made up
    PROVIDER_ERROR = "provider_error"  # the provider said no, or answered nonsense
    UNREACHABLE = "unreachable"  # the provider did not answer in time
    BAD_TOKEN = "bad_token"  # noqa: S105 - the ID token failed a check (signature, iss, aud, exp, nonce...)
    UNVERIFIED = "unverified"  # no address, or the provider does not vouch for it
    DOMAIN = "domain"  # an address outside allowed_domains
    NOT_ALLOWED = "not_allowed"  # this provider is not for this kind of account
    DISABLED = "disabled"  # the account was switched off
    OTHER_SUBJECT = "other_subject"  # the account is linked to someone else at this provider


class ProviderFailure(Exception):
    """Raised by a ProviderClient: the reason, and details for the log (never shown)."""

    def __init__(self, reason: Refusal, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else str(reason))
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Claims:
    """What a checked ID token says about the person."""

    subject: str
    email: str
    email_verified: bool
    name: str = ""


class ProviderClient(Protocol):
    """The provider as the sign-in needs it (implemented in adapters/oidc_client.py). Every
    call raises ProviderFailure, never anything else, and gives up after its timeout."""

    async def authorization_url(self, state: str, nonce: str, code_verifier: str) -> str: ...

    async def redeem(self, code: str, code_verifier: str, nonce: str) -> Claims: ...

    async def check(self) -> str: ...


@dataclass(frozen=True)
class Provider:
    name: str
    label: str
    client: ProviderClient
    allowed_domains: tuple[str, ...] = ()
    customers: bool = True
    agents: bool = True

    def allows(self, role: str) -> bool:
        return self.agents if role == Role.AGENT else self.customers


@dataclass(frozen=True)
class Flow:
    """A sign-in under way, as the callback gets it back (once)."""

    provider: str
    nonce: str
    code_verifier: str
    next_path: str


@dataclass(frozen=True)
class Started:
    state: str
    nonce: str
    code_verifier: str


@dataclass(frozen=True)
class SignInOutcome:
    status: str  # "ok" or a Refusal
    cookie: str | None = None
    account_id: int | None = None
    created: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Linked:
    provider: str
    label: str
    email: str
    created_at: datetime
    can_unlink: bool


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class OidcSignIn:
    def __init__(
        self,
        *,
        db: Database,
        write: Writer,
        accounts: Accounts,
        sessions: WebSessions,
        clock: Clock,
        providers: Sequence[Provider],
        agents_password: bool = True,
    ) -> None:
        self.db = db
        self.write = write
        self.accounts = accounts
        self.sessions = sessions
        self.clock = clock
        self.providers = {p.name: p for p in providers}
        self.agents_password = agents_password

    def provider(self, name: str) -> Provider | None:
        return self.providers.get(name)

    # -- the flow: state, nonce and PKCE verifier kept here, bound to the browser ---------

    def start(self, provider: str, browser: str, next_path: str = "") -> Started:
        """Remembers a new sign-in for this browser (`browser`: its flow cookie)."""
        started = Started(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            code_verifier=secrets.token_urlsafe(64),  # 86 characters (RFC 7636: 43 to 128)
        )
        now = self.clock.now()

        def job(session: Session) -> None:
            session.execute(delete(OidcLogin).where(col(OidcLogin.expires_at) < now))
            session.add(
                OidcLogin(
                    state_hash=digest(started.state),
                    provider=provider,
                    browser_hash=digest(browser),
                    nonce=started.nonce,
                    code_verifier=started.code_verifier,
                    next_path=next_path[:500],
                    created_at=now,
                    expires_at=now + FLOW_LIFETIME,
                )
            )

        self.write(job)
        return started

    def take(self, provider: str, state: str, browser: str) -> Flow | None:
        """The sign-in this callback finishes, used up: None when there is none (a callback
        without a request, a replayed or expired state, another browser, another provider)."""
        if not state or len(state) > 200 or len(browser) > 200:
            return None
        now = self.clock.now()

        def job(session: Session) -> Flow | None:
            row = session.get(OidcLogin, digest(state))
            if row is None:
                return None
            # Deleted whatever follows: a state works once, even when refused below. Of two
            # racing callbacks only one deletes the row (PostgreSQL: the other waits, then
            # deletes nothing).
            gone = session.execute(
                delete(OidcLogin).where(col(OidcLogin.state_hash) == row.state_hash)
            )
            if getattr(gone, "rowcount", 1) != 1:
                return None
            if row.provider != provider or as_utc(row.expires_at) <= now:
                return None
            if not browser or not secrets.compare_digest(row.browser_hash, digest(browser)):
                return None
            return Flow(row.provider, row.nonce, row.code_verifier, row.next_path)

        return self.write(job)

    # -- the linking rules ---------------------------------------------------------------

    def refusal(self, provider: Provider, claims: Claims) -> Refusal | None:
        """Rule 1: does the provider vouch for an address we may take?"""
        email = normalise_email(claims.email)
        if not claims.email_verified or "@" not in email:
            return Refusal.UNVERIFIED
        domain = email.rpartition("@")[2]
        if provider.allowed_domains and domain not in provider.allowed_domains:
            return Refusal.DOMAIN
        return None

    def sign_in(
        self, provider: Provider, claims: Claims, replacing: str | None, locale: str
    ) -> SignInOutcome:
        refused = self.refusal(provider, claims)
        if refused is not None:
            logs.info("oidc.refused", provider=provider.name, reason=refused)
            return SignInOutcome(refused)
        email = normalise_email(claims.email)
        name = " ".join(claims.name.split())[:NAME_MAX]
        now = self.clock.now()

        def job(session: Session) -> SignInOutcome:
            identity = session.exec(
                select(OidcIdentity).where(
                    OidcIdentity.provider == provider.name, OidcIdentity.subject == claims.subject
                )
            ).first()
            created = False
            if identity is not None:
                account = session.get(Account, identity.account_id)
                if account is None:  # pragma: no cover - the foreign key forbids it
                    return SignInOutcome(Refusal.NO_FLOW)
            else:
                account = self.accounts.find(session, email)
                if account is None:
                    if not provider.customers:
                        return SignInOutcome(Refusal.NOT_ALLOWED)
                    account, created = self.accounts.find_or_create_customer(
                        session, email, name, locale, found=None
                    )
                else:
                    other = session.exec(
                        select(OidcIdentity).where(
                            OidcIdentity.provider == provider.name,
                            OidcIdentity.account_id == account.id,
                        )
                    ).first()
                    if other is not None:
                        return SignInOutcome(Refusal.OTHER_SUBJECT, account_id=account.id)
            if account.disabled_at is not None:
                return SignInOutcome(Refusal.DISABLED, account_id=account.id)
            if not provider.allows(account.role):
                return SignInOutcome(Refusal.NOT_ALLOWED, account_id=account.id)
            if identity is None:
                identity = OidcIdentity(
                    account_id=account.id or 0,
                    provider=provider.name,
                    subject=claims.subject,
                    email=email,
                    created_at=now,
                    last_used_at=now,
                )
            identity.email, identity.last_used_at = email, now
            session.add(identity)
            if account.activated_at is None:  # the provider proved the address
                account.activated_at = now
            if not account.name and name:
                account.name = name
            session.add(account)
            session.flush()
            cookie = self.sessions.open(session, account.id or 0, replacing)
            return SignInOutcome("ok", cookie, account.id, created)

        outcome = self.write(job)
        if outcome.ok:
            logs.info(
                "oidc.signed_in",
                provider=provider.name,
                account=outcome.account_id,
                created=outcome.created,
            )
        else:
            logs.info(
                "oidc.refused",
                provider=provider.name,
                reason=outcome.status,
                account=outcome.account_id,
            )
        return outcome

    # -- the account page ----------------------------------------------------------------

    def linked(self, account_id: int) -> list[Linked]:
        with self.db.read() as session:
            account = session.get(Account, account_id)
            rows = self._identities(session, account_id)
            if account is None:
                return []
            return [
                Linked(
                    provider=row.provider,
                    label=p.label if (p := self.providers.get(row.provider)) else row.provider,
                    email=row.email,
                    created_at=row.created_at,
                    can_unlink=self._other_way_in(account, rows, row.provider),
                )
                for row in rows
            ]

    def unlink(self, account_id: int, provider: str) -> str:
        """ "ok", "not_linked", or "last_way_in" (no password, no other provider: the link
        stays, or the person could not get back in)."""

        def job(session: Session) -> str:
            account = session.get(Account, account_id)
            rows = self._identities(session, account_id)
            if account is None or all(row.provider != provider for row in rows):
                return "not_linked"
            if not self._other_way_in(account, rows, provider):
                return "last_way_in"
            session.execute(
                delete(OidcIdentity).where(
                    col(OidcIdentity.account_id) == account_id,
                    col(OidcIdentity.provider) == provider,
                )
            )
            return "ok"

        done = self.write(job)
        logs.info("oidc.unlink", account=account_id, provider=provider, outcome=done)
        return done

    def _identities(self, session: Session, account_id: int) -> list[OidcIdentity]:
        query = select(OidcIdentity).where(OidcIdentity.account_id == account_id)
        return list(session.exec(query.order_by(col(OidcIdentity.provider))).all())

    def _other_way_in(self, account: Account, rows: list[OidcIdentity], leaving: str) -> bool:
        """A password (one the account may use), or another configured provider it may use."""
        agent = account.role == Role.AGENT
        if account.password_hash is not None and (self.agents_password or not agent):
            return True
        return any(
            row.provider != leaving
            and (p := self.providers.get(row.provider)) is not None
            and p.allows(account.role)
            for row in rows
        )
