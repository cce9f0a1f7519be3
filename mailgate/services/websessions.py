"""Portal sign-in sessions, kept in the WebSession table.

The cookie holds 32 random bytes; the table holds only their sha256, so a copy of the database
cannot be replayed as cookies. Each session carries its own CSRF token. A session is replaced
(new id) at every sign-in and every password change, which defeats session fixation.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete
from sqlmodel import Session, col

from mailgate.clock import Clock, as_utc
from mailgate.store.models import Account, WebSession

LIFETIME = timedelta(days=14)


@dataclass(frozen=True)
class SignedIn:
    """Who is behind a request, as the portal needs it."""

    account_id: int
    email: str
    name: str
    locale: str
    csrf_token: str
    timezone: str = ""  # IANA name, "" until the browser or the account page gave one


def session_id(cookie: str, key: bytes = b"") -> str:
    """The stored id of a cookie: keyed, so a database dump names no usable cookie and a
    rotated secret signs everyone out."""
    return hmac.new(key, cookie.encode(), hashlib.sha256).hexdigest()


class WebSessions:
    def __init__(self, clock: Clock, lifetime: timedelta = LIFETIME, key: bytes = b"") -> None:
        self.clock = clock
        self.key = key  # mailgate.keys Purpose.SESSIONS
        self.lifetime = lifetime

    def open(self, session: Session, account_id: int, replacing: str | None = None) -> str:
        """A brand-new session for the account; the cookie value to hand the browser."""
        now = self.clock.now()
        if replacing:
            self.close(session, replacing)
        session.execute(  # this account's expired sessions are dead weight
            delete(WebSession).where(
                col(WebSession.account_id) == account_id, col(WebSession.expires_at) < now
            )
        )
        cookie = secrets.token_urlsafe(32)
        session.add(
            WebSession(
                id=session_id(cookie, self.key),
                account_id=account_id,
                csrf_token=secrets.token_urlsafe(32),
                created_at=now,
                expires_at=now + self.lifetime,
            )
        )
        session.flush()
        return cookie

    def close(self, session: Session, cookie: str) -> None:
        stored = session_id(cookie, self.key)
        session.execute(delete(WebSession).where(col(WebSession.id) == stored))

    def close_all(self, session: Session, account_id: int) -> None:
        session.execute(delete(WebSession).where(col(WebSession.account_id) == account_id))

    def lookup(self, session: Session, cookie: str) -> SignedIn | None:
        if not cookie or len(cookie) > 200:
            return None
        row = session.get(WebSession, session_id(cookie, self.key))
        if row is None or as_utc(row.expires_at) <= self.clock.now():
            return None
        account = session.get(Account, row.account_id)
        if account is None or (account.password_hash is None and account.activated_at is None):
            return None  # never activated (a password, or a provider sign-in, activates)
        return SignedIn(
            account_id=account.id or 0,
            email=account.email,
            name=account.name,
            locale=account.locale,
            csrf_token=row.csrf_token,
            timezone=account.timezone,
        )
