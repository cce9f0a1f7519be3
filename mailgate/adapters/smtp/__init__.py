"""SMTP and LMTP listeners (aiosmtpd) on the serve loop.

Unknown recipients are refused at RCPT (550), and recipients beyond `max_recipients` get 452
(RFC 5321 4.5.3.1.8). SIZE is advertised and enforced (552); it is the only limit on the data:
a line of any length is accepted (scripts write 5,000-byte lines; RFC 5321's 1,000 is a
"should" for senders, and refusing them loses real mail). DATA is answered 250 only after
Ingestor.ingest committed; parsing and database work run in a worker thread so the loop keeps
serving other sessions. No reply ever carries exception text: every unexpected error becomes
a 451 and a logged traceback. Replies stay under RFC 5321's 512 octets.

Memory bound: every DATA reserves, before its content is read, the size the client declared
(MAIL FROM SIZE=) or else max_message_bytes, from one budget shared by the SMTP and LMTP
listeners (`[inbound] max_inflight_bytes`). A DATA that does not fit is answered 452 and read
no further; the reservation is released when the mail was stored or refused, or when the
client went away (then once the worker storing it has finished).

A DATA past SPOOL_BYTES is written to an unnamed temporary file next to the blobs as it is
read, and read back in one piece at the end: the message is in memory once, not as a list of
line objects (1.7 times its size) plus their join.
"""

from __future__ import annotations

import asyncio
import re
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import IO, Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import MISSING, SMTP, syntax
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from aiosmtpd.smtp import Session as SmtpSession

from mailgate import logs
from mailgate.adapters.smtp.data import data_pieces
from mailgate.errors import MailgateError, Rejected, TempFailure
from mailgate.metrics import Metrics
from mailgate.services.ingest import Delivery, Envelope, Ingestor, Prepared

Ingest = Callable[[bytes, Envelope], Awaitable[list[Delivery]]]
TEMP_REPLY = "451 4.3.0 Temporary local problem, please try again later"
BUSY_REPLY = "452 4.3.1 Insufficient system storage, try again later"
TOO_MANY_RCPTS_REPLY = "452 4.5.3 Too many recipients"
TOO_BIG_REPLY = "552 5.3.4 Message too big for system"
MAX_TICKETS_SHOWN = 200  # characters of ticket numbers in a 250: far below 512 octets
DEFAULT_MAX_RECIPIENTS = 100  # RFC 5321 4.5.3.1.8: a server must accept at least 100
SPOOL_BYTES = 1 << 20  # a DATA past this goes to a temporary file while it is read

# `<local@domain>` in its everyday form: dot-atom on both sides, nothing to unquote or drop.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(rf"<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>")


class DataBudget:
    """The message bytes that DATA transactions in flight may hold together (one event loop:
    no lock needed). Reserved before the content is read, released when it is let go."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def reserve(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def release(self, size: int) -> None:
        self.used -= size


class InFlight:
    """Counts DATA transactions being stored, so shutdown can wait for them."""

    def __init__(self) -> None:
        self.count = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def __enter__(self) -> None:
        self.count += 1
        self.idle.clear()

    def __exit__(self, *exc: object) -> None:
        self.count -= 1
        if self.count == 0:
            self.idle.set()


class InboundHandler:
    def __init__(
        self,
        ingestor: Ingestor,
        channel: str,
        inflight: InFlight,
        on_stored: Any = None,
        metrics: Metrics | None = None,
        *,
        max_recipients: int = DEFAULT_MAX_RECIPIENTS,
        budget: DataBudget | None = None,
        ingest: Ingest | None = None,
    ):
        self.ingestor = ingestor
        self.channel = channel
        self.inflight = inflight
        self.on_stored = on_stored
        self.metrics = metrics or Metrics()
        self.max_recipients = max_recipients
        # Shared by every listener of the process (app.py passes one); unbounded alone.
        self.budget = budget or DataBudget(2**62)
        # Where the message is stored: here (prepare in a thread, await the group commit), or
        # in an SMTP front, by the serving process (adapters/smtp_front.py).
        self.ingest = ingest or self._ingest

    async def handle_RCPT(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: SmtpEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self.max_recipients:
            # The client sends the rest in another transaction (RFC 5321 4.5.3.1.10).
            logs.info("smtp.too_many_rcpts", channel=self.channel, peer=_peer(session))
            return TOO_MANY_RCPTS_REPLY
        if self.ingestor.addresses.resolve(address) is None:
            logs.info("smtp.rcpt_refused", channel=self.channel, peer=_peer(session), rcpt=address)
            return "550 5.1.1 Mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def _store(self, session: SmtpSession, envelope: SmtpEnvelope, rcpts: list[str]) -> str:
        raw = envelope.original_content or b""
        env = Envelope(
            mail_from=envelope.mail_from if envelope.mail_from not in (None, "<>") else "",
            recipients=tuple(rcpts),
            channel=self.channel,
            peer=_peer(session),
            helo=session.host_name or "",
        )
        started = time.monotonic()
        try:
            with self.inflight:
                deliveries = await self.ingest(raw, env)
        except Rejected as exc:
            logs.info("smtp.rejected", channel=self.channel, peer=env.peer, reason=exc.reason)
            self.metrics.message(self.channel, "rejected")
            return exc.smtp_reply()
        except TempFailure as exc:
            logs.warning("smtp.tempfail", channel=self.channel, peer=env.peer, error=str(exc))
            self.metrics.message(self.channel, "tempfail")
            return TEMP_REPLY
        except Exception:  # fault barrier: never lose the mail, never leak the error text
            logs.error("smtp.crashed", channel=self.channel, peer=env.peer, exc_info=True)
            self.metrics.message(self.channel, "error")
            return TEMP_REPLY
        elapsed = time.monotonic() - started
        for d in deliveries:
            self.metrics.message(self.channel, d.outcome, elapsed)
        if self.on_stored is not None:
            self.on_stored()
        return stored_reply([d.ticket_id for d in deliveries if d.ticket_id])

    async def _ingest(self, raw: bytes, env: Envelope) -> list[Delivery]:
        """Ingestor.ingest, with no thread held while the group commit runs: a worker thread
        prepares (parse, digests, sender checks), the loop awaits the commit. Under load the
        writer then shares the GIL with one thread less per message waiting on it."""
        prepared = await asyncio.to_thread(self.ingestor.prepare, raw, env)
        deliveries = await store_prepared(self.ingestor, prepared)
        self.ingestor.accepted(prepared, deliveries)
        return deliveries

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: SmtpEnvelope) -> str:
        return await self._store(session, envelope, list(envelope.rcpt_tos))

    def spool(self) -> IO[bytes]:
        """Scratch space for a big DATA: a temporary file on the blob store's disk."""
        return self.ingestor.blobs.spool()

    async def handle_exception(self, error: Exception) -> str:
        logs.error(
            "smtp.session_error", channel=self.channel, error=type(error).__name__, exc_info=True
        )
        return TEMP_REPLY


class LmtpHandler(InboundHandler):
    """RFC 2033: one reply per recipient after DATA. The message is stored once for all of
    them (one message is one ticket, whichever of our addresses it was sent to), so every
    recipient gets that one outcome."""

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: SmtpEnvelope) -> str:
        reply = await self._store(session, envelope, list(envelope.rcpt_tos))
        return "\r\n".join([reply] * len(envelope.rcpt_tos))


async def store_prepared(ingestor: Ingestor, prepared: Prepared) -> list[Delivery]:
    """A prepared message's transaction in the group commit, awaited; a crash (in it, or on
    the way: `prepared.crash`) is counted, maybe held, in a transaction of its own (rare)."""
    crash = prepared.crash
    if crash is None:
        try:
            return await asyncio.wrap_future(ingestor.submit(prepared))
        except MailgateError:
            raise
        except Exception as exc:
            crash = exc
    return await asyncio.to_thread(ingestor.recover, prepared, crash)


def stored_reply(ticket_ids: list[int]) -> str:
    """The 250 after DATA, its list of tickets cut short so the line stays well under 512."""
    ids = [str(t) for t in dict.fromkeys(ticket_ids)]
    shown: list[str] = []
    for tid in ids:
        if sum(len(x) + 1 for x in shown) + len(tid) > MAX_TICKETS_SHOWN:
            break
        shown.append(tid)
    if not shown:
        return "250 2.0.0 Stored"
    more = f" and {len(ids) - len(shown)} more" if len(shown) < len(ids) else ""
    return f"250 2.0.0 Stored (ticket {','.join(shown)}{more})"


def plain_path(arg: str) -> tuple[str, str] | None:
    """(address, the rest) when `arg` opens with a plain `<local@domain>` followed by nothing
    or by blanks and parameters (what aiosmtpd's parser returns then), else None."""
    found = _PLAIN_PATH.match(arg)
    if found is None:
        return None
    rest = arg[found.end() :]
    if rest[:1] not in ("", " ", "\t"):
        return None
    rest = rest.lstrip(" \t")
    return None if rest.startswith("(") else (found.group(1), rest)  # a comment: theirs


def _declared_size(mail_options: list[str]) -> int:
    """The client's SIZE= from MAIL FROM (RFC 1870), 0 when it gave none."""
    for option in mail_options:
        key, _, value = option.partition("=")
        if key.upper() == "SIZE" and value.isdigit():
            return int(value)
    return 0


class MailgateSMTP(SMTP):
    """aiosmtpd's SMTP with our DATA: a memory reservation before the content is read, and
    no line-length refusal (aiosmtpd answers "500 Line too long" past 1,000 bytes and has no
    setting for it: its `line_length_limit` is also the stream buffer's size)."""

    event_handler: InboundHandler
    _timeout_at = 0.0  # the idle deadline: the last command's time plus the timeout
    _timer_pending = False  # _timeout_handle is scheduled and has not run

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd's idle timeout (from the last command), without a new timer per command
        (a cancel and a call_later each, four a message): the deadline moves, and the timer,
        when it runs before it, waits again for the rest."""
        at = self.loop.time() + (duration or self._timeout_duration)
        self._timeout_at = at
        handle = self._timeout_handle
        if (
            self._timer_pending
            and handle is not None
            and not handle.cancelled()
            and handle.when() <= at
        ):
            return
        if handle is not None:
            handle.cancel()
        self._timeout_handle = self.loop.call_at(at, self._timeout_due)
        self._timer_pending = True

    def _timeout_due(self) -> None:
        self._timer_pending = False
        if self.loop.time() < self._timeout_at:  # commands came since: the rest of the wait
            self._timeout_handle = self.loop.call_at(self._timeout_at, self._timeout_due)
            self._timer_pending = True
            return
        self._timeout_cb()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's address parsing, with a shortcut for the everyday `<local@domain>`: its
        own parser (email's RFC 5322 tokenizer, and a class made on every call) was a quarter
        of the event loop's time under load. Anything else goes to aiosmtpd unchanged."""
        found = plain_path(arg)
        if found is None:
            return super()._getaddr(arg)
        address, rest = found
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest

    async def refuse_data(self, status: str) -> None:
        """The reply after the final dot when the data was not kept: one, for SMTP."""
        await self.push(status)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        budget = self.event_handler.budget
        limit = self.data_size_limit or 0
        reserved = min(_declared_size(self.envelope.mail_options) or limit, limit) or limit
        if not budget.reserve(reserved):
            logs.warning(
                "smtp.memory_busy", peer=_peer(self.session), want=reserved, used=budget.used
            )
            self._set_post_data_state()  # the transaction is over: MAIL FROM again
            await self.push(BUSY_REPLY)
            return
        handed_over = False
        try:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            content, refusal, reserved = await self._read_data(budget, reserved, limit)
            if refusal:
                await self.refuse_data(refusal)
                self._set_post_data_state()
                return
            self.envelope.content = self.envelope.original_content = content
            del content
            # The handler stores in a worker thread that a lost connection cannot stop: the
            # bytes stay reserved until it is done, not merely until this coroutine is.
            task = asyncio.ensure_future(self._call_handler_hook("DATA"))
            handed_over = True
            held = reserved
            task.add_done_callback(lambda _t: budget.release(held))
            status = await asyncio.shield(task)
        finally:
            if not handed_over:
                budget.release(reserved)
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    async def _read_data(
        self, budget: DataBudget, reserved: int, limit: int
    ) -> tuple[bytes, str, int]:
        """Read up to the lone dot: (content, "" or the refusal, bytes now reserved). Over the
        size limit or the budget the data is dropped but read to its end (RFC 5321 4.2.5)."""
        chunks: list[bytes] = []
        spool: IO[bytes] | None = None
        size = 0
        refusal = ""
        pieces = data_pieces(self._reader)  # many lines at a time (data.py)
        try:
            while self.transport is not None:
                try:
                    chunk = await anext(pieces)
                except StopAsyncIteration:  # the lone dot
                    break
                except asyncio.CancelledError:  # the connection was lost
                    self._writer.close()
                    raise
                size += len(chunk)
                if not refusal and limit and size > limit:
                    refusal = TOO_BIG_REPLY
                elif not refusal and size > reserved:
                    # More than the client declared: take the rest of max_message_bytes at once.
                    grow = max(limit - reserved, size - reserved)
                    if budget.reserve(grow):
                        reserved += grow
                    else:
                        refusal = BUSY_REPLY
                if not refusal:
                    chunks.append(chunk)
                    if spool is not None or size > SPOOL_BYTES:
                        try:
                            spool = spool or self.event_handler.spool()
                            spool.writelines(chunks)
                        except (OSError, TempFailure) as exc:  # disk full: the client retries
                            logs.warning(
                                "smtp.spool_failed", peer=_peer(self.session), error=str(exc)
                            )
                            refusal = TEMP_REPLY
                        chunks.clear()
                if refusal:
                    chunks.clear()  # let go of the bytes now, keep reading to the dot
                    if spool is not None:
                        spool.close()
                        spool = None
            content = b""
            if spool is None:
                content = b"".join(chunks)
            elif not refusal:
                try:
                    content = await asyncio.to_thread(_read_back, spool)
                except OSError as exc:
                    logs.warning("smtp.spool_failed", peer=_peer(self.session), error=str(exc))
                    refusal = TEMP_REPLY
        finally:
            chunks.clear()
            if spool is not None:
                spool.close()
        return content, refusal, reserved


def _read_back(spool: IO[bytes]) -> bytes:
    """The whole spooled DATA as one bytes object (read() sizes it from the file: no copy)."""
    spool.flush()
    spool.seek(0)
    return spool.read()


class PerRecipientLMTP(MailgateSMTP, LMTP):
    """RFC 2033 wants one reply per accepted recipient after DATA, refusals included; a single
    reply leaves the client (Postfix) waiting for the rest until it times out."""

    async def refuse_data(self, status: str) -> None:
        assert self.envelope is not None
        for _ in self.envelope.rcpt_tos:
            await self.push(status)


def _peer(session: SmtpSession) -> str:
    peer = session.peer
    if isinstance(peer, tuple):
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "")


async def start_listener(
    listen: str,
    handler: InboundHandler,
    *,
    lmtp: bool,
    hostname: str,
    max_bytes: int,
    sock: socket.socket | None = None,
) -> asyncio.AbstractServer:
    """Listen on `listen`, or accept on `sock` (bound and listening already: an SMTP front
    accepts on the socket the serving process opened, as its siblings do)."""
    loop = asyncio.get_running_loop()
    cls = PerRecipientLMTP if lmtp else MailgateSMTP

    def factory() -> MailgateSMTP:
        return cls(
            handler,
            hostname=hostname,
            data_size_limit=max_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            ident="mailgate",
            loop=loop,
        )

    if sock is not None and sock.family == socket.AF_UNIX:
        # The socket file is serve's: a front that stops must not remove it (Python 3.13's
        # servers do, unless told), or Postfix loses the path while serve restarts the front.
        keep = {"cleanup_socket": False} if sys.version_info >= (3, 13) else {}
        return await loop.create_unix_server(factory, sock=sock, **keep)
    if sock is not None:
        return await loop.create_server(factory, sock=sock)
    if listen.startswith("unix:"):
        return await loop.create_unix_server(factory, path=listen[len("unix:") :])
    host, _, port = listen.rpartition(":")
    return await loop.create_server(factory, host=host.strip("[]"), port=int(port))
