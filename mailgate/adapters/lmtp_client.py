"""`mailgate deliver` handing its message to a running `serve` over LMTP (RFC 2033).

A Postfix pipe starts one process per mail. Importing SQLAlchemy, the models and the ingest
path costs ~0.25 s of CPU on a small machine before any work is done (issue 11); `serve` has
all of it loaded. So when `[inbound] lmtp_listen` names a fixed address, `deliver` offers the
message there first, and stores it itself when that does not work. The client is a few lines
over a socket: smtplib would cost more to import (ssl, email) than the whole exchange takes.

What the caller learns:
- `Declined`: nothing past the envelope went out (no listener, a refusal before DATA, no 354).
  serve has not seen the message: the caller stores it itself and decides as it always did.
- a `Reply` after the data, the worst over the recipients: 2xx stored and committed (serve
  answers 250 only after its commit), 5xx refused for good, 4xx try again later.
- `Lost`: the data went out but no reply came. The outcome is unknown, so the caller must say
  "try again later"; a copy serve did store is recognised on the retry (dedupe key) and
  answered as a duplicate, never ticketed twice.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

CONNECT_TIMEOUT = 5.0  # serve is local: a slower greeting means it is stuck; store here instead
REPLY_TIMEOUT = 300.0  # serve answers after its commit; a Postfix pipe allows 1,000 s
MAX_LINE = 4096  # a reply line longer than this is not an LMTP server talking
# Addresses we can put between <> as they are (Postfix hands them over unquoted); anything
# else is stored in process, where the envelope is taken verbatim.
_PLAIN_ADDRESS = re.compile(r"[^\s<>\x00-\x1f\x7f]*")
_EOL = re.compile(rb"\r\n|\n|\r(?!\n)")  # a pipe gives LF; LMTP wants CRLF (as smtplib does)
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


class Declined(Exception):
    """serve did not take the message; it has seen nothing but an envelope."""


class Lost(Exception):
    """The message went out and no reply came: whether serve stored it is unknown."""


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


def target(listen: str) -> str | tuple[str, int] | None:
    """Where to reach serve's LMTP listener from this host; None when it has no fixed
    address (off, port 0, or a relative socket path)."""
    if not listen:
        return None
    if listen.startswith("unix:"):
        path = listen[len("unix:") :]
        return path if path.startswith("/") else None  # relative to serve's folder: unknown
    host, _, port = listen.rpartition(":")
    if not port.isdigit() or int(port) == 0:
        return None
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):  # noqa: S104  (a wildcard bind answers on loopback)
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, int(port)


def worst(replies: Sequence[Reply]) -> Reply:
    """One outcome for the delivery: a temporary failure beats a refusal beats success."""

    def rank(reply: Reply) -> int:
        return 0 if 200 <= reply.code < 300 else 1 if 500 <= reply.code < 600 else 2

    reply = max(replies, key=rank)
    if rank(reply) == 2 and not 400 <= reply.code < 500:
        return Reply(451, reply.text)  # nonsense is a temporary problem
    return reply


class _Session:
    """One LMTP conversation; every socket or protocol fault is an OSError."""

    def __init__(self, where: str | tuple[str, int], timeout: float) -> None:
        if isinstance(where, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(where)
            except OSError:
                sock.close()
                raise
        else:
            sock = socket.create_connection(where, timeout=timeout)
        self.sock = sock
        self.file: BinaryIO = sock.makefile("rb")
        self.encoding = "ascii"

    def reply(self) -> Reply:
        lines: list[str] = []
        while True:
            line = self.file.readline(MAX_LINE + 1)
            if not line.endswith(b"\n"):
                raise OSError("connection closed" if not line else "reply line too long")
            code, more, text = line[:3], line[3:4], line[4:].strip()
            if not code.isdigit():
                raise OSError(f"not a reply: {line[:40]!r}")
            lines.append(text.decode("utf-8", "replace"))
            if more != b"-":
                return Reply(int(code), "\n".join(lines))

    def command(self, line: str) -> Reply:
        self.sock.sendall(line.encode(self.encoding) + b"\r\n")
        return self.reply()

    def close(self) -> None:
        try:
            self.sock.sendall(b"QUIT\r\n")
        except OSError:
            pass
        self.file.close()
        self.sock.close()


def hand_over(
    where: str | tuple[str, int],
    raw: bytes,
    sender: str,
    recipients: Sequence[str],
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
    reply_timeout: float = REPLY_TIMEOUT,
) -> Reply:
    """Deliver `raw` to the LMTP server at `where` (a unix socket path, or host and port)."""
    addresses = (sender, *recipients)
    if not recipients or not all(_PLAIN_ADDRESS.fullmatch(a) for a in addresses):
        raise Declined("an envelope address LMTP cannot carry as it is")
    data = _EOL.sub(b"\r\n", raw)
    session = _envelope(where, connect_timeout, data, sender, recipients)
    try:
        session.sock.settimeout(reply_timeout)
        body = _LEADING_DOT.sub(b"..", data)
        session.sock.sendall(body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        # RFC 2033: one reply per accepted recipient, each after serve's commit.
        return worst([session.reply() for _ in recipients])
    except OSError as exc:
        raise Lost(f"{type(exc).__name__}: {exc}") from exc
    finally:
        session.close()


def _envelope(
    where: str | tuple[str, int],
    timeout: float,
    data: bytes,
    sender: str,
    recipients: Sequence[str],
) -> _Session:
    """Greeting, LHLO, MAIL, RCPT and DATA up to the 354; Declined unless all of it worked."""
    try:
        session = _Session(where, timeout)
    except OSError as exc:  # nothing listens (serve is stopped): the usual reason
        raise Declined(f"{type(exc).__name__}: {exc}") from exc
    try:
        expect(session.reply(), 220, "greeting")
        hello = expect(session.command("LHLO localhost"), 250, "LHLO")
        extensions = {line.split(" ")[0].upper() for line in hello.text.splitlines()[1:]}
        options = [f"SIZE={len(data)}"]  # over the limit: refused here, before any data
        if not data.isascii() and "8BITMIME" in extensions:
            options.append("BODY=8BITMIME")
        if not all(a.isascii() for a in (sender, *recipients)):
            if "SMTPUTF8" not in extensions:
                raise Declined("a non-ASCII address and no SMTPUTF8")
            options.append("SMTPUTF8")
            session.encoding = "utf-8"
        expect(session.command(f"MAIL FROM:<{sender}> {' '.join(options)}"), 250, "MAIL")
        for rcpt in recipients:
            expect(session.command(f"RCPT TO:<{rcpt}>"), 250, "RCPT")
        expect(session.command("DATA"), 354, "DATA")
    except OSError as exc:
        session.close()
        raise Declined(f"{type(exc).__name__}: {exc}") from exc
    except Declined:
        session.close()
        raise
    return session


def expect(reply: Reply, code: int, stage: str) -> Reply:
    if reply.code != code:
        raise Declined(f"{stage}: {reply}")
    return reply
