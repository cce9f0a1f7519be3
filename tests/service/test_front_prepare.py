"""An SMTP front prepares a small mail on its event loop (adapters/smtp/prepare.py): the parse
awaited there, then Ingestor.prepare meeting that parse. What comes out is what preparing it
in a thread gives; mails whose preparing may wait (attachments to store, a big mail) still go
to a thread."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from mailgate.adapters.senderauth import DnsSenderVerifier
from mailgate.adapters.smtp.prepare import ReplayedParse, prepare, replay_parses
from mailgate.services.ingest import INLINE_RAW_BYTES, Envelope, Prepared
from tests.conftest import make_mail
from tests.support.dnsserver import LoopbackDns, dns_server_fixture  # noqa: F401 (fixture)
from tests.support.hygiene import crlf
from tests.support.inprocess import InProcess

SUPPORT = "support@example.com"
ENVELOPE = Envelope(mail_from="client@client.example", recipients=(SUPPORT,))


def mails() -> dict[str, bytes]:
    plain = make_mail(sender="Client <client@client.example>", message_id="<p@client.example>")
    attached = make_mail(sender="Client <client@client.example>", message_id="<a@x.example>")
    attached.add_attachment(b"%PDF-1.4 a small file", maintype="application", subtype="pdf",
                            filename="facture.pdf")  # fmt: skip
    big = make_mail(sender="Client <client@client.example>", body="Bonjour\n" * 9000)
    return {
        "plain": crlf(plain.as_bytes()),
        "attached": crlf(attached.as_bytes()),
        "unparseable": b"no header block here\r\n\r\nBonjour\r\n",
        "big": crlf(big.as_bytes()),
    }


def on_the_loop(service: InProcess, raw: bytes, env: Envelope = ENVELOPE) -> tuple[Prepared, int]:
    """prepare() on a fresh loop: (the Prepared, threads its executor started)."""

    async def run() -> tuple[Prepared, int]:
        executor = ThreadPoolExecutor(max_workers=4)
        asyncio.get_running_loop().set_default_executor(executor)
        prepared = await prepare(service.app.ingestor, raw, env)
        return prepared, len(executor._threads)

    return asyncio.run(run())


def test_a_small_mail_is_prepared_on_the_loop_as_a_thread_would(service: InProcess) -> None:
    app = service.app
    app.parsers.start()
    try:
        raws = mails()
        assert len(raws["big"]) > INLINE_RAW_BYTES >= len(raws["attached"])
        in_thread = {name: app.ingestor.prepare(raw, ENVELOPE) for name, raw in raws.items()}
        replay_parses(app.ingestor)
        assert isinstance(app.ingestor.parse, ReplayedParse)
        for name, raw in raws.items():
            prepared, threads = on_the_loop(service, raw)
            assert prepared == in_thread[name], name
            assert (threads > 0) == (name in ("attached", "big")), name
        assert in_thread["unparseable"].problem == "no header block"
        assert len(in_thread["attached"].mail.attachments) == 1  # type: ignore[union-attr]
    finally:
        app.ingestor.parse = app.parsers
        app.parsers.stop()


def test_a_sender_check_that_needs_dns_is_made_in_a_thread(
    service: InProcess, dns_server: LoopbackDns
) -> None:
    """The first mail from a domain needs DNS answers: its check is tried from the cache on
    the loop (WouldWait, nothing asked), then made in a thread; the next one needs none."""
    app = service.app
    dns_server.txt("client.example", "v=spf1 -all")
    app.parsers.start()
    app.ingestor.verifier = DnsSenderVerifier(resolver=dns_server.address, timeout=2.0)
    try:
        raw = mails()["plain"]
        replay_parses(app.ingestor)
        env = Envelope(mail_from="client@client.example", recipients=(SUPPORT,),
                       peer="192.0.2.7:2525", helo="mx.client.example")  # fmt: skip
        first, threads = on_the_loop(service, raw, env)
        asked = dns_server.queries
        again, threads_again = on_the_loop(service, raw, env)
        assert (threads > 0, threads_again) == (True, 0)
        assert dns_server.queries == asked  # the second one asked nothing
        assert first == again and first.trust.verdict == "fail"  # SPF -all, no DKIM
    finally:
        app.ingestor.verifier = None
        app.ingestor.parse = app.parsers
        app.parsers.stop()
