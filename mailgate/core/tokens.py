"""Signed tokens, one namespace (salt) per purpose.

- Reply tokens live in a mail address (support+TOKEN@domain), where some MTAs lowercase the
  local part: they are `TICKET-ACCOUNT-MAC` in lowercase base32, with an HMAC-SHA256 over the
  ticket and the account it was sent to, truncated to 100 bits (20 characters): the issue asks
  for at least 96, and with 10-digit ids `support+TOKEN@example.com` stays under 64 characters.
  itsdangerous' base64 signatures are case-sensitive, so this one signer uses the stdlib hmac
  directly, with the reply-token key that mailgate.keys derives for this purpose
  alone. They do not expire: a customer may answer a months-old mail (a closed ticket then gets
  a follow-up).
- Links (activate, reset) use itsdangerous' URL-safe timed serializer with its own salt, an
  expiry read from the injected clock, and the account's security stamp, so a link dies after
  it is used or after any password change.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from itsdangerous.encoding import want_bytes
from itsdangerous.timed import TimestampSigner

REPLY_MAC_CHARS = 20  # 100 bits: base32 carries 5 bits a character
_REPLY_RE = re.compile(r"([1-9][0-9]{0,9})-([1-9][0-9]{0,9})-([a-z2-7]{20})")

ACTIVATE = "activate"
RESET = "reset"
FILE = "file"  # a download link for an attachment too big to ride in an agent's mail
LINK_MAX_AGE = {ACTIVATE: 72 * 3600, RESET: 3600, FILE: 30 * 24 * 3600}


@dataclass(frozen=True)
class ReplyToken:
    ticket_id: int
    account_id: int


def _reply_mac(key: bytes, ticket_id: str, account_id: str) -> str:
    mac = hmac.new(key, f"{ticket_id}:{account_id}".encode(), hashlib.sha256).digest()
    return base64.b32encode(mac[:15]).decode().lower()[:REPLY_MAC_CHARS]


def make_reply_token(key: bytes, ticket_id: int, account_id: int) -> str:
    """`key` is the reply-token key (mailgate.keys, Purpose.REPLY), never the secret itself."""
    return f"{ticket_id}-{account_id}-{_reply_mac(key, str(ticket_id), str(account_id))}"


def read_reply_token(key: bytes, token: str) -> ReplyToken | None:
    """The ticket and account a token was made for, or None if forged, altered or foreign."""
    # ASCII only: str.lower() maps a few non-ASCII letters onto ASCII (KELVIN SIGN -> "k").
    # fullmatch, not match + "$", which would accept a trailing newline.
    match = _REPLY_RE.fullmatch(token.lower()) if token.isascii() else None
    if not match:
        return None
    ticket, account, mac = match.groups()
    if not hmac.compare_digest(mac, _reply_mac(key, ticket, account)):
        return None
    return ReplyToken(ticket_id=int(ticket), account_id=int(account))


class _ClockSigner(TimestampSigner):
    """itsdangerous' timestamp signer reading time from our clock (tests move it)."""

    clock_now: Any = None

    def get_timestamp(self) -> int:
        return int(self.clock_now().timestamp())

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        """The signing key, derived once per signer (it depends on its secret and salt only)."""
        if secret_key is not None:
            return super().derive_key(secret_key)
        key: bytes | None = self.__dict__.get("_derived_key")
        if key is None:
            key = self._derived_key = super().derive_key()
        return key


class LinkTokens:
    """Signed, expiring tokens for links in mail (activation, password reset)."""

    def __init__(self, key: bytes, now: Any) -> None:
        self._secret = key  # the links key (mailgate.keys), one salt per link purpose below
        self._now = now
        self._serializers: dict[str, URLSafeTimedSerializer] = {}
        self._signers: dict[str, TimestampSigner] = {}

    def _serializer(self, purpose: str) -> URLSafeTimedSerializer:
        serializer = self._serializers.get(purpose)
        if serializer is None:  # made once per purpose: every first contact makes a link
            signer = type("Signer", (_ClockSigner,), {"clock_now": staticmethod(self._now)})
            serializer = URLSafeTimedSerializer(
                self._secret, salt=f"mailgate.{purpose}", signer=signer
            )
            self._serializers[purpose] = serializer
        return serializer

    def make(self, purpose: str, account_id: int, stamp: str) -> str:
        """What the serializer's dumps() gives, with its signer made once per purpose (dumps
        makes one, and derives its key, for every token: every first contact makes one)."""
        serializer = self._serializer(purpose)
        signer = self._signers.get(purpose)
        if signer is None:
            signer = self._signers[purpose] = serializer.make_signer()
        payload = want_bytes(serializer.dump_payload({"a": account_id, "s": stamp}))
        return signer.sign(payload).decode("utf-8")

    def read(self, purpose: str, token: str) -> tuple[int, str] | None:
        """(account_id, stamp) if the token is genuine, for this purpose, and not expired."""
        try:
            data = self._serializer(purpose).loads(token, max_age=LINK_MAX_AGE[purpose])
        except (SignatureExpired, BadSignature):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("a"), int):
            return None
        return data["a"], str(data.get("s", ""))
