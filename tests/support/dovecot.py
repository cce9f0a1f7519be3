"""A real Dovecot for the IMAP tests: one server per session on 127.0.0.1, a fresh user (and so
fresh, empty mailboxes) per test. Readiness is read from /proc/net/tcp, never by connecting:
a probe connection that is still authenticating makes Dovecot's shutdown take 5+ s."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from imapclient import IMAPClient

from tests.support.peers import ROOT, free_port

INSTALL_HINT = (
    "dovecot is not installed: run `sudo tools/peers/install-peers.sh` "
    "(or `apt-get install dovecot-imapd dovecot-lmtpd`)"
)


def wait_listening(port: int, timeout: float = 10.0) -> None:
    want = f"0100007F:{port:04X}"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[1] == want and cols[3] == "0A":
                    return
        time.sleep(0.01)  # no notification channel for "a socket started listening"
    raise TimeoutError(f"dovecot did not listen on {port}")


# Users are made up front: Dovecot re-reads its passwd-file at most once a second, so a user
# added during the session may not log in yet.
POOL = [(f"t{i:03d}", f"pw-{uuid.uuid4().hex[:8]}") for i in range(100)]


@dataclass
class Dovecot:
    dir: Path
    imap_port: int
    lmtp_port: int
    free_users: list[tuple[str, str]]

    def take_user(self) -> tuple[str, str]:
        if not self.free_users:
            raise RuntimeError("tests/support/dovecot.py: raise the size of POOL")
        return self.free_users.pop(0)


@dataclass
class ImapAccount:
    dovecot: Dovecot
    user: str
    password: str

    @property
    def port(self) -> int:
        return self.dovecot.imap_port

    def client(self) -> IMAPClient:
        c = IMAPClient("127.0.0.1", self.port, ssl=False, timeout=30)
        c.login(self.user, self.password)
        return c

    def append(self, raw: bytes, folder: str = "INBOX", flags: tuple[bytes, ...] = ()) -> int:
        """APPEND like another mail client; returns the new UID (UIDPLUS APPENDUID)."""
        with self.client() as c:
            if not c.folder_exists(folder):
                c.create_folder(folder)
            reply = c.append(folder, raw, flags=flags)
        # b"[APPENDUID <uidvalidity> <uid>] Append completed."
        return int(reply.split(b"]")[0].split()[-1])

    def messages(self, folder: str) -> dict[int, tuple[bytes, tuple[bytes, ...]]]:
        """UID -> (raw bytes, flags), read with BODY.PEEK so nothing changes."""
        with self.client() as c:
            if not c.folder_exists(folder):
                return {}
            c.select_folder(folder, readonly=True)
            uids = c.search(["ALL"])
            if not uids:
                return {}
            data = c.fetch(uids, ["BODY.PEEK[]", "FLAGS"])
        return {uid: (d[b"BODY[]"], tuple(d[b"FLAGS"])) for uid, d in data.items()}

    def uidvalidity(self, folder: str) -> int:
        with self.client() as c:
            return int(c.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"])

    def toml(self, **overrides: object) -> str:
        values: dict[str, object] = {
            "host": "127.0.0.1",
            "port": self.port,
            "security": "none",
            "username": self.user,
            "password": self.password,
            "address": "support@example.com",
            "poll_seconds": 3600,  # so only IDLE (or a test's own pass) picks mail up
            **overrides,
        }
        lines = ["[[imap.mailboxes]]"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
        return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    if not shutil.which("dovecot"):
        pytest.skip(INSTALL_HINT)
    # Not tmp_path: mail is owned by `nobody`, and /tmp/pytest-of-root is 0700.
    d = Path(tempfile.mkdtemp(prefix="mgdv-", dir="/tmp"))
    imap, lmtp = free_port(), free_port()
    proc = subprocess.Popen(
        [str(ROOT / "tools/peers/start-dovecot.sh"), str(d), str(imap), str(lmtp)],
        env={
            **os.environ,
            "FOREGROUND": "1",
            "DOVECOT_USERS": " ".join(f"{u}:{p}" for u, p in POOL),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_listening(imap)
    except TimeoutError:
        proc.kill()
        err = proc.communicate(timeout=10)[1].decode(errors="replace")
        shutil.rmtree(d, ignore_errors=True)
        raise RuntimeError(f"dovecot did not start: {err}") from None
    yield Dovecot(d, imap, lmtp, list(POOL))
    proc.terminate()
    proc.wait(15)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def imap_account(dovecot: Dovecot) -> ImapAccount:
    """A user nobody else touches: empty INBOX, no other folders."""
    return ImapAccount(dovecot, *dovecot.take_user())
