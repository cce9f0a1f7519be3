"""SMTP and LMTP listeners (aiosmtpd) on the serve loop.

Unknown recipients are refused at RCPT (550); SIZE is advertised and enforced (552). DATA is
answered 250 only after Ingestor.ingest committed; parsing and database work run in a worker
thread so the loop keeps serving other sessions. No reply ever carries exception text: every
unexpected error becomes a 451 and a logged traceback.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from aiosmtpd.smtp import Session as SmtpSession

from mailgate import logs
from mailgate.errors import Rejected, TempFailure
from mailgate.metrics import Metrics
from mailgate.services.ingest import Envelope, Ingestor

TEMP_REPLY = "451 4.3.0 Temporary local problem, please try again later"


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
    ):
        self.ingestor = ingestor
        self.channel = channel
        self.inflight = inflight
        self.on_stored = on_stored
        self.metrics = metrics or Metrics()

    async def handle_RCPT(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: SmtpEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
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
                deliveries = await asyncio.to_thread(self.ingestor.ingest, raw, env)
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
        tickets = ",".join(str(d.ticket_id) for d in deliveries if d.ticket_id)
        return f"250 2.0.0 Stored{f' (ticket {tickets})' if tickets else ''}"

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: SmtpEnvelope) -> str:
        return await self._store(session, envelope, list(envelope.rcpt_tos))

    async def handle_exception(self, error: Exception) -> str:
        logs.error(
            "smtp.session_error", channel=self.channel, error=type(error).__name__, exc_info=True
        )
        return TEMP_REPLY


class LmtpHandler(InboundHandler):
    """RFC 2033: one reply per recipient after DATA, each stored on its own."""

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: SmtpEnvelope) -> str:
        replies = [await self._store(session, envelope, [rcpt]) for rcpt in envelope.rcpt_tos]
        return "\r\n".join(replies)


# The replies aiosmtpd itself gives after the data when it refused to keep it (too big, or a
# line over 1000 bytes): one line, whatever the number of recipients.
_DATA_REFUSALS = ("552 Error: Too much mail data", "500 Line too long")


class PerRecipientLMTP(LMTP):
    """RFC 2033 wants one reply per accepted recipient after DATA, refusals included; a single
    reply leaves the client (Postfix) waiting for the rest until it times out."""

    async def push(self, status: Any) -> None:
        text = status.decode() if isinstance(status, bytes) else str(status)
        if text.startswith(_DATA_REFUSALS) and self.envelope is not None:
            for _ in self.envelope.rcpt_tos[1:]:
                await super().push(status)
        await super().push(status)


def _peer(session: SmtpSession) -> str:
    peer = session.peer
    if isinstance(peer, tuple):
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "")


async def start_listener(
    listen: str, handler: InboundHandler, *, lmtp: bool, hostname: str, max_bytes: int
) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    cls = PerRecipientLMTP if lmtp else SMTP

    def factory() -> SMTP:
        return cls(
            handler,
            hostname=hostname,
            data_size_limit=max_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            ident="mailgate",
            loop=loop,
        )

    if listen.startswith("unix:"):
        return await loop.create_unix_server(factory, path=listen[len("unix:") :])
    host, _, port = listen.rpartition(":")
    return await loop.create_server(factory, host=host.strip("[]"), port=int(port))
