"""The one secret, and every key derived from it: one key per purpose.

A leaf module. Each consumer gets its own key (HMAC-SHA256 of the secret over a purpose label,
the extract-then-expand idea of HKDF with a single block), so a key that leaks from one place
(a captcha challenge, a CSRF token) says nothing about the others, and no purpose can be used
to forge another's tokens.

The secret lives in `[mailgate] secret_key` or in a file (`secret_key_file`, by default
`data_dir/secret`). A missing file is created once, with 32 random bytes and mode 0600, and
reused ever after; several processes racing to create it agree on one (link(2) is atomic).
A secret shorter than 32 bytes, or equal to a value printed in our documentation, is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from enum import StrEnum
from pathlib import Path

from mailgate.errors import ConfigError

MIN_SECRET_BYTES = 32

# Every value that our README, config file, CONTRACT or earlier releases showed as a secret:
# anyone who read them knows these, so a deployment using one is not protected at all.
KNOWN_SECRETS = frozenset(
    {
        "change-me-in-production-please",
        "change-me",
        "changeme",
        "secret",
        "test-secret-key",
        "<at least 32 random bytes>",
        "at least 32 random bytes",
    }
)


class Purpose(StrEnum):
    REPLY = "reply-token"  # support+TOKEN@ addresses
    LINKS = "links"  # activation and password-reset links
    CAPTCHA = "captcha"  # sign-up proof-of-work challenges
    SESSIONS = "sessions"  # how portal session cookies are stored (a rotation signs all out)
    CSRF = "csrf"  # signed double-submit CSRF tokens of signed-out visitors


class Keys:
    """Derives each purpose's key from the secret; holds nothing else."""

    def __init__(self, secret: bytes) -> None:
        check_secret(secret, "mailgate.secret_key")
        self._secret = secret

    def key(self, purpose: Purpose) -> bytes:
        return hmac.new(self._secret, b"mailgate/v1/" + purpose.encode(), hashlib.sha256).digest()


def check_secret(secret: bytes, key_name: str) -> None:
    """Refuse a secret anyone could know or guess, naming the key and the fix."""
    fix = (
        "remove secret_key (mailgate then creates a random one in data_dir/secret), or set it "
        'to the output of: python3 -c "import secrets; print(secrets.token_urlsafe(48))"'
    )
    text = secret.decode("utf-8", "replace").strip()
    # "<...>" is how documentation writes a placeholder: never a value someone generated.
    if text in KNOWN_SECRETS or (text.startswith("<") and text.endswith(">")):
        raise ConfigError(f"{key_name}: this value is printed in the documentation; {fix}")
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{key_name}: {len(secret)} bytes, at least {MIN_SECRET_BYTES} are needed; {fix}"
        )


def load_secret(secret_key: str, secret_file: Path) -> bytes:
    """The configured secret: inline when given, else from (or created in) its file."""
    if secret_key:
        secret = secret_key.encode()
        check_secret(secret, "mailgate.secret_key")
        return secret
    return load_or_create_secret(secret_file)


def load_or_create_secret(path: Path) -> bytes:
    """The secret in `path`; a missing file is created (random, 0600) exactly once."""
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_urlsafe(48).encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # atomic, and never replaces a secret another process made
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return _read(path)


def _read(path: Path) -> bytes:
    mode = path.stat().st_mode & 0o777
    if mode & 0o007:
        raise ConfigError(
            f"mailgate.secret_key_file: {path} can be read by any user (mode {mode:o}); "
            f"run: chmod 600 {path}"
        )
    secret = path.read_bytes().strip()
    check_secret(secret, f"mailgate.secret_key_file ({path})")
    return secret
