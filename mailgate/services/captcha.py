"""The sign-up captcha: a self-hosted ALTCHA proof of work, verified here, no third party.

The browser fetches a signed challenge, spends about a second of CPU finding a counter whose
PBKDF2 key starts with the required prefix, and sends the answer with the form. We check the
signature, the expiry (from our clock, carried in the signed data, so tests can move time)
and the work, and remember the challenge's nonce so one solved challenge buys one sign-up.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

import altcha
from sqlalchemy import delete
from sqlmodel import Session, col, select

from mailgate.clock import Clock
from mailgate.store.models import RateEvent

ALGORITHM = "PBKDF2/SHA-256"
COST = 5000  # PBKDF2 iterations per attempt; ~256 attempts expected with the "00" prefix
LIFETIME = timedelta(minutes=20)


class Captcha:
    def __init__(self, secret: bytes, clock: Clock, cost: int = COST) -> None:
        self._key = hashlib.sha256(b"mailgate.captcha" + secret).hexdigest()
        self.clock = clock
        self.cost = cost

    def challenge(self) -> dict[str, object]:
        expires = int((self.clock.now() + LIFETIME).timestamp())
        made = altcha.create_challenge(
            algorithm=ALGORITHM, cost=self.cost, data={"expires": expires}, hmac_secret=self._key
        )
        return made.to_dict()

    def check(self, payload: str) -> str | None:
        """The challenge's nonce if the payload is genuine, solved and fresh; else None.

        Pure CPU (it re-derives the key): call it outside any transaction."""
        if not payload or len(payload) > 4096:
            return None
        try:
            if not altcha.verify_solution(payload, self._key).verified:
                return None
            parsed = altcha.Payload.from_base64(payload)
        except (ValueError, KeyError, TypeError, AttributeError):  # malformed: not solved
            return None
        data = parsed.challenge.parameters.data or {}
        expires = data.get("expires") if isinstance(data, dict) else None
        if not isinstance(expires, int) or expires < self.clock.now().timestamp():
            return None
        return parsed.challenge.parameters.nonce

    def consume(self, session: Session, nonce: str) -> bool:
        """Mark a solved challenge used; False if it was used before (a replay)."""
        key = f"captcha:{nonce[:64]}"
        now = self.clock.now()
        if session.exec(select(RateEvent.id).where(RateEvent.key == key)).first() is not None:
            return False
        session.execute(
            delete(RateEvent).where(
                col(RateEvent.key).startswith("captcha:"),
                col(RateEvent.created_at) < now - LIFETIME,
            )
        )
        session.add(RateEvent(key=key, created_at=now))
        session.flush()
        return True
