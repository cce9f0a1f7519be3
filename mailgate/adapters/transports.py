"""Where outbound mail goes: a local maildir (the default) or an SMTP smarthost.

`send_many(mails, stop)` delivers a batch and returns one Attempt per mail, in order: SENT,
TEMPORARY (4xx, network: try later), PERMANENT (5xx: never) or SKIPPED (not tried, because
`stop()` said so: the row is given back as it was). `send` is the one-mail form: it returns
(delivered) or raises TransportTempError / TransportPermError.
"""

from __future__ import annotations

import itertools
import os
import re
import smtplib
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from mailgate.services.outbox import Transport, TransportPermError, TransportTempError
from mailgate.services.outbox_queue import SENT, SKIPPED, Attempt, Delivery, OutboundMail

Stop = Callable[[], bool]


def _never() -> bool:
    return False


def _raise(attempt: Attempt) -> None:
    if attempt.delivery is Delivery.PERMANENT:
        raise TransportPermError(attempt.error)
    if attempt.delivery is not Delivery.SENT:
        raise TransportTempError(attempt.error)


class _Workers:
    """Runs `work(slot)` for several slots at once: slot 0 in the calling thread, the others
    on a small thread pool of its own (the work is socket waits and fsyncs, which release the
    GIL)."""

    def __init__(self, size: int, name: str) -> None:
        self.size = max(1, size)
        self.name = name
        self._pool: ThreadPoolExecutor | None = None

    def run(self, work: Callable[[int], None], slots: int) -> None:
        if slots <= 1:
            work(0)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.size, thread_name_prefix=self.name)
        # The calling thread, which would only wait, works slot 0 itself: a thread fewer to
        # hand work to and wake per batch (a batch of 2 mails: 35 -> 26 us CPU a mail).
        futures = [self._pool.submit(work, i) for i in range(1, slots)]
        try:
            work(0)
        except BaseException:
            wait(futures)  # the other slots' sessions are let go only once they are done
            raise
        for future in futures:
            future.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class _Cursor:
    """Hands out the next mail of a batch to whichever worker is free."""

    def __init__(self, total: int, stop: Stop) -> None:
        self.total = total
        self.stop = stop
        self._next = itertools.count()
        self._lock = threading.Lock()

    def take(self) -> int | None:
        if self.stop():
            return None
        with self._lock:
            i = next(self._next)
        return i if i < self.total else None


# -- maildir ------------------------------------------------------------------------------------


class MaildirTransport:
    """Writes each message into a Maildir, e.g. var/sent for `make run`.

    Each file is written in tmp/, fsync'd and renamed into new/; the new/ folder is fsync'd
    once per batch, before `send_many` returns. That is enough: the sender records a mail as
    sent only after `send_many` returned, so a crash before the folder's fsync can at worst
    lose renames of mails still recorded as queued, which are then written again (the same
    bytes, the same Message-ID): nothing recorded as sent is ever missing.
    `writers` files are written at once (their fsyncs overlap on the disk)."""

    def __init__(self, path: Path, writers: int = 1) -> None:
        self.path = path
        self._workers = _Workers(writers, "maildir")
        self._seq = itertools.count()
        self._host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")

    def send(self, envelope_from: str, to_addr: str, raw: bytes) -> None:
        _raise(self.send_many([OutboundMail(envelope_from, to_addr, raw)])[0])

    def send_many(self, mails: Sequence[OutboundMail], stop: Stop = _never) -> list[Attempt]:
        results = [SKIPPED] * len(mails)
        try:
            # Made on every batch: a top folder left without tmp/new/cur (by hand, or an old
            # check-config) must not fail every send.
            for sub in ("tmp", "new", "cur"):
                (self.path / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return [_maildir_error(exc)] * len(mails)
        cursor = _Cursor(len(mails), stop)

        def work(_slot: int) -> None:
            while (i := cursor.take()) is not None:
                results[i] = self._write(mails[i].raw)

        self._workers.run(work, min(self._workers.size, len(mails)))
        if any(r.delivery is Delivery.SENT for r in results):
            try:  # the renames are durable only once the folder itself is synced
                _fsync_dir(self.path / "new")
            except OSError as exc:
                failed = _maildir_error(exc)
                results = [failed if r.delivery is Delivery.SENT else r for r in results]
        return results

    def _write(self, raw: bytes) -> Attempt:
        now = time.time()
        name = f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(self._seq)}.{self._host}"
        tmp = self.path / "tmp" / name
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                view = memoryview(raw)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, self.path / "new" / name)
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            return _maildir_error(exc)
        return SENT

    def close(self) -> None:
        self._workers.close()

    def check(self) -> str:
        """Creates nothing: a check must not leave a state that changes what it checked."""
        if self.path.exists():
            if not self.path.is_dir():
                raise TransportTempError(f"{self.path} is not a folder")
            missing = [s for s in ("tmp", "new", "cur") if not (self.path / s).is_dir()]
            for folder in [self.path] + [self.path / s for s in ("tmp", "new", "cur")]:
                if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
                    raise TransportTempError(f"{folder} is not writable")
            if missing:
                return f"maildir {self.path} writable ({'/'.join(missing)} made on first send)"
            return f"maildir {self.path} writable"
        parent = self.path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise TransportTempError(f"{self.path} cannot be created: {parent} is not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise TransportTempError(f"{self.path} cannot be created: {parent} is not writable")
        return f"maildir {self.path} will be created on first send ({parent} writable)"


def _maildir_error(exc: OSError) -> Attempt:
    return Attempt(Delivery.TEMPORARY, f"maildir: {exc.strerror or exc}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- SMTP ---------------------------------------------------------------------------------------

_LEADING_DOT = re.compile(rb"(?m)^\.")
_LOCAL = ("127.0.0.1", "localhost", "::1")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# local@domain with no quoting, comment, literal or space: what nearly every mail is sent to.
_PLAIN_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def quote_path(address: str) -> str:
    """`smtplib.quoteaddr(address)`, the path in MAIL FROM / RCPT TO. A plain local@domain
    (and the null path) is written as it is between <>, which is what quoteaddr gives for it
    (a test compares both); quoteaddr's parser (email.utils.parseaddr) costs ~10 µs a call and
    runs twice per mail, so it only sees the rest."""
    if not address:
        return "<>"
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


def dot_stuffed(raw: bytes) -> bytes:
    """A mail as DATA sends it (RFC 5321 4.5.2): a line starting with "." gets one more, the
    last line ends in CRLF, then the lone dot. Most mails have no such line: looking for one
    costs a fraction of the regular expression's pass over every line."""
    data = _LEADING_DOT.sub(b"..", raw) if raw.startswith(b".") or b"\n." in raw else raw
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


class BearerTokens(Protocol):
    """OAuth2 access tokens for `[outbound] auth = "oauth2"` (adapters/oauth_tokens.py, passed
    in by the composition root); `access_token()` raises when the endpoint gives none."""

    @property
    def username(self) -> str: ...
    @property
    def mechanism(self) -> str: ...
    def access_token(self) -> str: ...
    def invalidate(self) -> None: ...


def sasl_bearer(mechanism: str, user: str, token: str) -> str:
    """The client's first message: XOAUTH2 (Google, Microsoft) or OAUTHBEARER (RFC 7628)."""
    if mechanism == "oauthbearer":
        return f"n,a={user},\x01auth=Bearer {token}\x01\x01"
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def oauth_authenticate(s: smtplib.SMTP, tokens: BearerTokens, where: str) -> None:
    """AUTH XOAUTH2 (or OAUTHBEARER) with the token in hand, and once more with a new one when
    the smarthost refuses it; then TransportTempError: the mail waits, it is never lost."""
    name = tokens.mechanism.upper()
    for attempt in (1, 2):
        try:
            token = tokens.access_token()
        except Exception as exc:  # TokenError: no token, the endpoint said why
            raise TransportTempError(f"{where}: no OAuth2 token: {exc}") from None
        first = sasl_bearer(tokens.mechanism, tokens.username, token)
        try:
            # On a refusal the server sends a 334 with an error; the answer is empty.
            s.auth(name, lambda challenge=None: "" if challenge else first)  # noqa: B023
            return
        except smtplib.SMTPAuthenticationError as exc:
            tokens.invalidate()
            if attempt == 2:
                raise TransportTempError(
                    f"{where}: the smarthost refused the OAuth2 token: {_reply(exc)}"
                ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise TransportTempError(f"{where}: AUTH {name}: {exc}") from exc


# The replies that let a transaction go on: to MAIL, to RCPT, to DATA.
_GOOD = ((250,), (250, 251), (354,))


def _command(s: smtplib.SMTP, line: str) -> tuple[int, bytes]:
    s.send(line)
    return s.getreply()


class _Unsent(Exception):
    """The connection failed before this mail's data was complete: it was not delivered."""


class _Session:
    """One SMTP connection to the smarthost, reused from mail to mail.

    No RSET after a mail the server accepted: the end of the data already clears the server's
    transaction state (RFC 5321 4.1.1.4). RSET follows a refused MAIL, RCPT or DATA, and a
    421 (the server is closing the channel) drops the connection."""

    def __init__(
        self, host: str, port: int, helo: str, timeout: float, tokens: BearerTokens | None = None
    ) -> None:
        self.host, self.port, self.helo, self.timeout = host, port, helo, timeout
        self.tokens = tokens
        self.smtp: smtplib.SMTP | None = None
        self.last_used = 0.0

    def connect(self) -> smtplib.SMTP:
        try:
            s = smtplib.SMTP(self.host, self.port, local_hostname=self.helo, timeout=self.timeout)
            s.ehlo_or_helo_if_needed()
            if s.has_extn("starttls") and self.host not in _LOCAL:
                s.starttls()
                s.ehlo()
            if self.tokens is not None:
                try:
                    oauth_authenticate(s, self.tokens, f"smtp {self.host}:{self.port}")
                except TransportTempError:
                    s.close()
                    raise
        except smtplib.SMTPResponseException as exc:
            raise TransportTempError(f"smtp {self.host}:{self.port}: {_reply(exc)}") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise TransportTempError(f"smtp {self.host}:{self.port}: {exc}") from exc
        self.smtp = s
        return s

    def deliver(self, mail: OutboundMail) -> Attempt:
        """Raises TransportTempError when no connection could be made (the smarthost is down:
        the caller stops trying the rest of its batch)."""
        for _ in range(2):
            reused = self.smtp is not None
            s = self.smtp or self.connect()
            try:
                return self._transaction(s, mail)
            except _Unsent as exc:
                self.drop()
                if not reused:
                    return Attempt(Delivery.TEMPORARY, str(exc))
                # A kept connection the server had closed meanwhile: once more, on a new one.
            finally:
                self.last_used = time.monotonic()
        return Attempt(Delivery.TEMPORARY, "smtp: connection lost twice")

    def _transaction(self, s: smtplib.SMTP, mail: OutboundMail) -> Attempt:
        where = f"smtp {self.host}:{self.port}"
        options = ""
        if not (mail.envelope_from + mail.to_addr).isascii():
            if not s.has_extn("smtputf8"):
                return Attempt(Delivery.PERMANENT, f"{where}: address needs SMTPUTF8")
            options += " SMTPUTF8"
            s.command_encoding = "utf-8"
        if s.has_extn("size"):
            options += f" SIZE={len(mail.raw)}"
        mail_from = f"MAIL FROM:{quote_path(mail.envelope_from)}{options}\r\n"
        rcpt_to = f"RCPT TO:{quote_path(mail.to_addr)}\r\n"
        try:
            if s.has_extn("pipelining"):
                # RFC 2920: MAIL, RCPT and DATA in one write, then their three replies: one
                # round trip instead of three. The first refusal is the one that counts.
                s.send(mail_from + rcpt_to + "DATA\r\n")
                replies = [s.getreply(), s.getreply(), s.getreply()]
                code, text = next(
                    (r for r, ok in zip(replies, _GOOD, strict=True) if r[0] not in ok),
                    replies[2],
                )
                if code != 354 and replies[2][0] == 354:  # DATA accepted after a refusal
                    s.send(b".\r\n")
                    s.getreply()
            else:
                code, text = _command(s, mail_from)
                if code == 250:
                    code, text = _command(s, rcpt_to)
                if code in (250, 251):
                    code, text = _command(s, "DATA\r\n")
        except (OSError, smtplib.SMTPException) as exc:
            raise _Unsent(f"{where}: {exc}") from exc
        if code != 354:
            return self._refused(s, code, text)
        try:
            s.send(dot_stuffed(mail.raw))
            code, text = s.getreply()
        except (OSError, smtplib.SMTPException) as exc:
            # Perhaps delivered, perhaps not: retried later (at least once, as every MTA does).
            self.drop()
            return Attempt(Delivery.TEMPORARY, f"{where}: {exc}")
        if code == 250:
            return SENT
        if code == 421:
            self.drop()
        return _attempt_for(code, text)

    def _refused(self, s: smtplib.SMTP, code: int, text: bytes) -> Attempt:
        if code == 421:
            self.drop()
        else:
            try:
                s.rset()
            except (OSError, smtplib.SMTPException):
                self.drop()
        return _attempt_for(code, text)

    def drop(self) -> None:
        s, self.smtp = self.smtp, None
        if s is not None:
            s.close()

    def quit(self) -> None:
        s, self.smtp = self.smtp, None
        if s is not None:
            try:
                s.quit()
            except (OSError, smtplib.SMTPException):
                s.close()


class SmtpTransport:
    """Relays through a smarthost with smtplib over kept connections, `connections` at once;
    4xx and network errors are temporary, 5xx permanent. A connection idle for
    `idle_seconds` is closed with QUIT (by `close_idle`, which the sender calls when idle)."""

    def __init__(
        self,
        host: str,
        port: int,
        helo: str,
        timeout: float = 30.0,
        connections: int = 2,
        idle_seconds: float = 10.0,
        tokens: BearerTokens | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.helo = helo
        self.timeout = timeout
        self.idle_seconds = idle_seconds
        self.tokens = tokens
        self._sessions = [
            _Session(host, port, helo, timeout, tokens) for _ in range(max(1, connections))
        ]
        self._workers = _Workers(len(self._sessions), "smtp-out")
        self._lock = threading.Lock()  # one batch at a time uses the sessions

    def send(self, envelope_from: str, to_addr: str, raw: bytes) -> None:
        _raise(self.send_many([OutboundMail(envelope_from, to_addr, raw)])[0])

    def send_many(self, mails: Sequence[OutboundMail], stop: Stop = _never) -> list[Attempt]:
        results = [SKIPPED] * len(mails)
        cursor = _Cursor(len(mails), stop)

        def work(slot: int) -> None:
            session = self._sessions[slot]
            while (i := cursor.take()) is not None:
                try:
                    results[i] = session.deliver(mails[i])
                except TransportTempError as exc:
                    # No connection: the rest of this worker's share waits for the next try
                    # rather than each mail waiting out its own connect timeout.
                    results[i] = Attempt(Delivery.TEMPORARY, str(exc))
                    while (j := cursor.take()) is not None:
                        results[j] = Attempt(Delivery.TEMPORARY, str(exc))

        with self._lock:
            self._workers.run(work, min(len(self._sessions), len(mails)))
        return results

    def close_idle(self) -> None:
        if not self._lock.acquire(blocking=False):
            return  # a batch is running: its connections are not idle
        try:
            horizon = time.monotonic() - self.idle_seconds
            for session in self._sessions:
                if session.smtp is not None and session.last_used < horizon:
                    session.quit()
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.quit()
            self._workers.close()

    def check(self) -> str:
        try:
            with smtplib.SMTP(self.host, self.port, local_hostname=self.helo, timeout=10) as s:
                if self.tokens is not None:
                    s.ehlo()
                    if s.has_extn("starttls") and self.host not in _LOCAL:
                        s.starttls()
                        s.ehlo()
                    oauth_authenticate(s, self.tokens, f"smtp {self.host}:{self.port}")
                code, _ = s.noop()
        except (OSError, smtplib.SMTPException) as exc:
            raise TransportTempError(f"smtp {self.host}:{self.port}: {exc}") from exc
        if self.tokens is not None:
            how = self.tokens.mechanism.upper()
            return f"smarthost {self.host}:{self.port} accepted the OAuth2 token ({how})"
        return f"smarthost {self.host}:{self.port} answered {code}"


def _reply(exc: smtplib.SMTPResponseException) -> str:
    text = exc.smtp_error
    message = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return f"{exc.smtp_code} {message}"


def _attempt_for(code: int, text: bytes | str) -> Attempt:
    message = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    if 500 <= code < 600:
        return Attempt(Delivery.PERMANENT, f"{code} {message}")
    return Attempt(Delivery.TEMPORARY, f"{code} {message}")


def make_transport(
    spec: str, helo: str, connections: int = 2, tokens: BearerTokens | None = None
) -> Transport:
    """`connections`: SMTP connections kept to the smarthost, or maildir files written at once;
    `tokens`: OAuth2 for the smarthost (`[outbound] auth = "oauth2"`)."""
    if spec.startswith("maildir:"):
        return MaildirTransport(Path(spec[len("maildir:") :]), writers=connections)
    parsed = urlparse(spec)
    return SmtpTransport(
        parsed.hostname or "127.0.0.1",
        parsed.port or 25,
        helo,
        connections=connections,
        tokens=tokens,
    )
