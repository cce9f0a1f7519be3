"""IMAP intake (imapclient): one thread per `[[imap.mailboxes]]` entry.

Each pass SELECTs the folder, checks UIDVALIDITY, SEARCHes ALL (never UNSEEN: a person reading
the mailbox elsewhere must not hide mail from us), reads RFC822.SIZE first and fetches with
BODY.PEEK[] (no \\Seen). A message leaves the folder only after its ingest committed:

| ingest says                  | the message goes to      | cursor              |
| ---------------------------- | ------------------------ | ------------------- |
| stored (ticket, duplicate..) | processed_folder         | advanced, then move |
| too big (RFC822.SIZE)        | failed_folder, headers quarantined | after the move |
| Rejected                     | failed_folder            | after the move      |
| TempFailure                  | stays; retried soon      | stops here          |
| anything else                | stays; logged once per UID | stops here        |

Then IDLE when the server offers it (a pass at least every poll_seconds anyway), else sleep
poll_seconds. Any connection error reconnects with capped, jittered backoff; a failing mailbox
only ever stops its own thread's work.
"""

from __future__ import annotations

import contextlib
import random
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from mailgate import logs
from mailgate.config import ImapMailbox
from mailgate.errors import Rejected, TempFailure
from mailgate.metrics import Metrics
from mailgate.services.imap_state import ImapState
from mailgate.services.ingest import Envelope, Ingestor

CHANNEL = "imap"
HEADER_LIMIT = 256 * 1024  # what we keep of an oversized message: its headers, bounded


def mailbox_key(box: ImapMailbox) -> str:
    return f"{box.username}@{box.host}:{box.port}/{box.folder}"


def read_password(box: ImapMailbox) -> str:
    if box.password_file:
        # Read at each login, so a rotated password needs no restart.
        return Path(box.password_file).read_text(encoding="utf-8").rstrip("\r\n")
    return box.password


class BearerTokens(Protocol):
    """OAuth2 access tokens for `auth = "oauth2"` (adapters/oauth_tokens.py, passed in by the
    composition root): `access_token()` raises when the token endpoint gives none."""

    @property
    def username(self) -> str: ...
    @property
    def mechanism(self) -> str: ...
    @property
    def expires_at(self) -> float | None: ...
    def access_token(self) -> str: ...
    def invalidate(self) -> None: ...


class TokenRefused(LoginError):
    """The IMAP server refused a freshly obtained OAuth2 access token."""


def oauth_login(client: IMAPClient, tokens: BearerTokens) -> None:
    """SASL XOAUTH2 (or OAUTHBEARER) with the token in hand; when the server refuses it, once
    more with a new one (it may have been revoked or expired early), then give up: the caller
    backs off."""
    for attempt in (1, 2):
        token = tokens.access_token()
        try:
            if tokens.mechanism == "oauthbearer":
                client.oauthbearer_login(tokens.username, token)
            else:
                client.oauth2_login(tokens.username, token)
            return
        except LoginError as exc:
            tokens.invalidate()
            if attempt == 2:
                raise TokenRefused(f"IMAP refused the OAuth2 token: {exc}") from None
            logs.info("imap.token_refused", user=tokens.username, retry="new token")


def connect(
    box: ImapMailbox, timeout: float = 60.0, tokens: BearerTokens | None = None
) -> IMAPClient:
    """A logged-in client. TLS certificates are always verified."""
    context = ssl.create_default_context()
    tls = box.security == "tls"
    client = IMAPClient(
        box.host, box.port, ssl=tls, ssl_context=context if tls else None, timeout=timeout
    )
    try:
        if box.security == "starttls":
            client.starttls(context)
        if tokens is not None:
            oauth_login(client, tokens)
        else:
            client.login(box.username, read_password(box))
    except BaseException:
        close(client)
        raise
    return client


def close(client: IMAPClient) -> None:
    with contextlib.suppress(Exception):
        client.logout()
    with contextlib.suppress(Exception):
        client.shutdown()


def ensure_folders(client: IMAPClient, names: Sequence[str]) -> None:
    for name in names:
        if not client.folder_exists(name):
            client.create_folder(name)


def move(client: IMAPClient, uids: list[int], folder: str, use_move: bool) -> None:
    """MOVE (RFC 6851), else COPY + \\Deleted + UID EXPUNGE (RFC 4315)."""
    if use_move:
        client.move(uids, folder)
        return
    client.copy(uids, folder)
    client.delete_messages(uids)
    if client.has_capability("UIDPLUS"):
        client.uid_expunge(uids)
    else:  # no way to expunge only ours; what was marked \Deleted elsewhere goes too
        client.expunge()


def check_mailbox(box: ImapMailbox, tokens: BearerTokens | None = None) -> str:
    """For `mailgate check-config`: log in and look at the folders (raises on failure)."""
    client = connect(box, timeout=15.0, tokens=tokens)
    try:
        if not client.folder_exists(box.folder):
            raise LookupError(f"folder {box.folder!r} does not exist")
        status = client.folder_status(box.folder, [b"MESSAGES"])
        missing = [
            f for f in (box.processed_folder, box.failed_folder) if not client.folder_exists(f)
        ]
        idle = "IDLE" if client.has_capability("IDLE") else f"polling every {box.poll_seconds:g}s"
    finally:
        close(client)
    note = f", will create {', '.join(missing)}" if missing else ""
    how = f" with OAuth2 ({tokens.mechanism.upper()})" if tokens is not None else ""
    return f"login ok{how}, folder {box.folder} has {status[b'MESSAGES']} messages, {idle}{note}"


_NOW = object()  # _note(last_login=_NOW): this moment


def _failure_stage(exc: Exception) -> str:
    """connection, token_endpoint (no token), token (the server refused it) or login."""
    if isinstance(exc, TokenRefused):
        return "token"
    if type(exc).__name__ == "TokenError":  # adapters/oauth_tokens.py (no import across)
        return "token_endpoint"
    if isinstance(exc, LoginError):
        return "login"
    return "connection"


@dataclass
class PassReport:
    """What one pass did, by UID; `left` stay in the folder for the next pass."""

    stored: list[int] = field(default_factory=list)
    already: list[int] = field(default_factory=list)  # committed before a crash: moved only
    failed: list[int] = field(default_factory=list)
    left: list[int] = field(default_factory=list)


class ImapPoller:
    def __init__(
        self,
        box: ImapMailbox,
        ingestor: Ingestor,
        state: ImapState,
        metrics: Metrics,
        *,
        recipient: str,
        status: dict[str, str] | None = None,
        on_stored: Callable[[], None] | None = None,
        idle_tick: float = 0.5,
        retry_seconds: float = 30.0,
        backoff_base: float = 1.0,
        backoff_max: float = 300.0,
        tokens: BearerTokens | None = None,
        details: dict[str, dict[str, Any]] | None = None,
        lease: Callable[[], bool] | None = None,
    ) -> None:
        self.box = box
        # Several instances: is this mailbox's lease ("imap:NAME") ours now? Without one the
        # poller runs alone. It connects only while it holds the lease, and logs out when
        # it loses it (another instance took over).
        self.lease = lease
        self.name = mailbox_key(box)
        self.ingestor = ingestor
        self.state = state
        self.metrics = metrics
        self.recipient = recipient
        self.status = status if status is not None else {}
        self.on_stored = on_stored
        self.idle_tick = idle_tick
        self.retry_seconds = retry_seconds
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._logged: set[tuple[int, int]] = set()  # (uidvalidity, uid) already logged
        self._rng = random.Random()
        self.tokens = tokens
        # For /healthz: last successful login and pass, token expiry, the last error.
        self.details = details if details is not None else {}
        self.details[self.name] = {
            "auth": "oauth2" if tokens is not None else "password",
            "state": "starting",
            "last_login": None,
            "last_poll": None,
            "token_expires_at": None,
            "error": None,
        }

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"imap {self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the message in hand, log out, return."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _note(self, **changes: object) -> None:
        """Record a moment in /healthz and /metrics (times: now, ISO 8601 UTC)."""
        now = time.time()
        entry = dict(self.details.get(self.name, {}))
        for key, value in changes.items():
            if value is _NOW:
                entry[key] = datetime.fromtimestamp(now, UTC).isoformat()
                gauge = {"last_login": self.metrics.imap_last_login,
                         "last_poll": self.metrics.imap_last_poll}[key]  # fmt: skip
                gauge.labels(mailbox=self.name).set(now)
            else:
                entry[key] = value
        if self.tokens is not None and self.tokens.expires_at is not None:
            expiry = self.tokens.expires_at
            entry["token_expires_at"] = datetime.fromtimestamp(expiry, UTC).isoformat()
            self.metrics.imap_token_expiry.labels(mailbox=self.name).set(expiry)
        self.details[self.name] = entry

    def _connect(self) -> IMAPClient:
        client = connect(self.box, tokens=self.tokens)
        self._note(last_login=_NOW, error=None)
        return client

    def _failed(self, exc: Exception) -> None:
        """Log and show why the mailbox stopped; a refused token is an error an operator must
        act on (`mailgate oauth authorize NAME`), a network fault only a warning."""
        text = f"{type(exc).__name__}: {exc}"
        stage = _failure_stage(exc)
        if stage == "connection":
            logs.warning("imap.disconnected", mailbox=self.name, error=text)
        else:
            logs.error("imap.auth_failed", mailbox=self.name, stage=stage, error=text)
            self.metrics.imap_auth_failures.labels(mailbox=self.name, stage=stage).inc()
        self._note(error=text)

    def _set_status(self, text: str) -> None:
        self.status[self.name] = text
        if self.name in self.details:
            self.details[self.name] = {**self.details[self.name], "state": text}
        self.metrics.imap_connected.labels(mailbox=self.name).set(
            1 if text in ("idle", "polling", "working") else 0
        )

    def _ours(self) -> bool:
        return self.lease is None or self.lease()

    def _keep_going(self) -> bool:
        return not self._stop.is_set() and self._ours()

    def problem(self) -> str:
        """Why this mailbox cannot be polled at all (a config mistake), or ""."""
        b = self.box
        if b.processed_folder in ("", b.folder) or b.failed_folder in ("", b.folder):
            return "processed_folder and failed_folder must be set and differ from folder"
        try:
            self.ingestor.check_recipient(self.recipient)
        except Rejected:
            return f"address {self.recipient} is not one of ours ([addresses])"
        return ""

    def run(self) -> None:
        """The thread: connect, pass, wait for mail, repeat; reconnect with backoff."""
        problem = self.problem()
        if problem:
            logs.error("imap.misconfigured", mailbox=self.name, error=problem)
            self._set_status(f"error: {problem}")
            return
        failures = 0
        while not self._stop.is_set():
            if not self._ours():  # another instance polls it; wait for its lease
                self._set_status("standby")
                self._stop.wait(self.idle_tick)
                continue
            if not failures:  # otherwise the last error stays visible in /healthz
                self._set_status("connecting")
            healthy = False
            client = None
            try:
                client = self._connect()
                use_idle = client.has_capability("IDLE")
                logs.info("imap.connected", mailbox=self.name, idle=use_idle)
                ensure_folders(client, (self.box.processed_folder, self.box.failed_folder))
                while self._keep_going():
                    self._set_status("working")
                    report = self.poll_once(client)
                    self._note(last_poll=_NOW)
                    healthy = True
                    if not self._keep_going():
                        break
                    wait = self.box.poll_seconds
                    if report.left:
                        wait = min(wait, self.retry_seconds)
                    self._wait_for_mail(client, wait, use_idle)
            except Exception as exc:  # fault barrier: reconnect, never let the thread die
                failures = 1 if healthy else failures + 1
                self._failed(exc)
                self._set_status(f"error: {type(exc).__name__}: {exc}")
            finally:
                if client is not None:
                    close(client)
            if not self._stop.is_set() and failures:
                self._stop.wait(self._backoff(failures))
        self._set_status("stopped")

    def run_once(self) -> PassReport:
        """Connect, do one pass, log out (tests and one-shot use)."""
        try:
            client = self._connect()
        except Exception as exc:
            self._failed(exc)
            raise
        try:
            ensure_folders(client, (self.box.processed_folder, self.box.failed_folder))
            report = self.poll_once(client)
            self._note(last_poll=_NOW)
            return report
        finally:
            close(client)

    def _backoff(self, failures: int) -> float:
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (failures - 1))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def _wait_for_mail(self, client: IMAPClient, seconds: float, use_idle: bool) -> None:
        """Return when new mail may have arrived, after `seconds`, or when stopping."""
        if not use_idle:
            self._set_status("polling")
            deadline = time.monotonic() + seconds
            while self._keep_going() and (left := deadline - time.monotonic()) > 0:
                self._stop.wait(min(self.idle_tick, left))
            return
        client.idle()
        self._set_status("idle")  # only now: the server is listening for changes
        deadline = time.monotonic() + seconds
        # A short tick keeps stop() prompt; idle_check returns at once when data arrives.
        while self._keep_going() and (left := deadline - time.monotonic()) > 0:
            responses = client.idle_check(timeout=min(self.idle_tick, left))
            if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                break
        client.idle_done()

    # -- one pass -------------------------------------------------------------------------

    def poll_once(self, client: IMAPClient) -> PassReport:
        report = PassReport()
        selected = client.select_folder(self.box.folder)
        uidvalidity = int(selected[b"UIDVALIDITY"])
        last_uid = self.state.last_uid(self.name, uidvalidity)
        uids = sorted(client.search(["ALL"]))
        if not uids:
            return report
        sizes = client.fetch(uids, ["RFC822.SIZE"])
        use_move = client.has_capability("MOVE")
        advancing = True  # the cursor only moves over an unbroken run of handled UIDs
        for uid in uids:
            if not self._keep_going():  # stopping, or the lease went to another instance
                break
            if uid not in sizes:  # expunged by someone else since the SEARCH
                continue
            size = int(sizes[uid][b"RFC822.SIZE"])
            too_big = size > self.ingestor.max_message_bytes
            if uid <= last_uid:
                folder = self.box.failed_folder if too_big else self.box.processed_folder
                move(client, [uid], folder, use_move)
                report.already.append(uid)
                logs.info("imap.moved_committed", mailbox=self.name, uid=uid, folder=folder)
                continue
            outcome = (
                self._oversize(client, uid, size)
                if too_big
                else self._ingest(client, uid, uidvalidity, advancing)
            )
            if outcome == "gone":  # expunged by someone else since the SEARCH
                continue
            if outcome == "stored":
                move(client, [uid], self.box.processed_folder, use_move)
                report.stored.append(uid)
                continue
            if outcome == "failed":
                move(client, [uid], self.box.failed_folder, use_move)
                report.failed.append(uid)
                if advancing:
                    self.state.advance(self.name, uidvalidity, uid)
                continue
            report.left.append(uid)
            advancing = False
            if outcome == "tempfail":
                break  # the database or disk is down: the rest waits for the retry too
        return report

    def _oversize(self, client: IMAPClient, uid: int, size: int) -> str:
        limit = self.ingestor.max_message_bytes
        section = f"BODY.PEEK[HEADER]<0.{HEADER_LIMIT}>"
        data = client.fetch([uid], [section]).get(uid, {})
        head = next((v for k, v in data.items() if k.startswith(b"BODY[HEADER]")), b"") or b""
        reason = (
            f"too big: {size} bytes over max_message_bytes {limit}; headers only, the message "
            f"is in IMAP folder {self.box.failed_folder} of {self.box.username}@{self.box.host}"
        )
        try:
            qid = self.state.quarantine_oversize(bytes(head), size, self.recipient, reason)
        except TempFailure as exc:
            logs.warning("imap.tempfail", mailbox=self.name, uid=uid, error=str(exc))
            return "tempfail"
        logs.warning("imap.too_big", mailbox=self.name, uid=uid, size=size, quarantine=qid)
        self.metrics.message(CHANNEL, "too_large")
        return "failed"

    def _ingest(self, client: IMAPClient, uid: int, uidvalidity: int, advancing: bool) -> str:
        data = client.fetch([uid], ["BODY.PEEK[]"]).get(uid, {})
        raw = data.get(b"BODY[]")
        if raw is None:  # expunged between the SEARCH and now
            return "gone"
        envelope = Envelope(
            mail_from=None, recipients=(self.recipient,), channel=CHANNEL, peer=self.name
        )
        started = time.monotonic()
        try:
            deliveries = self.ingestor.ingest(bytes(raw), envelope)
        except Rejected as exc:
            logs.info("imap.rejected", mailbox=self.name, uid=uid, reason=exc.reason)
            self.metrics.message(CHANNEL, "rejected")
            return "failed"
        except TempFailure as exc:
            logs.warning("imap.tempfail", mailbox=self.name, uid=uid, error=str(exc))
            self.metrics.message(CHANNEL, "tempfail")
            return "tempfail"
        except Exception:  # fault barrier: leave it, tell the operator once per UID
            if (uidvalidity, uid) not in self._logged:
                self._logged.add((uidvalidity, uid))
                logs.error("imap.crashed", mailbox=self.name, uid=uid, exc_info=True)
            self.metrics.message(CHANNEL, "error")
            return "crashed"
        elapsed = time.monotonic() - started
        for d in deliveries:
            self.metrics.message(CHANNEL, d.outcome, elapsed)
            logs.info(
                "imap.stored",
                mailbox=self.name,
                uid=uid,
                message_id=d.message_id,
                outcome=d.outcome,
                ticket=d.ticket_id,
            )
        if advancing:
            # Committed: from here a crash before the move must not ingest it again.
            self.state.advance(self.name, uidvalidity, uid)
        if self.on_stored is not None:
            self.on_stored()
        return "stored"
