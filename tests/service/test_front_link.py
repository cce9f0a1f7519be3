"""Serve's side of an SMTP front (adapters/smtp/front.py SmtpFronts._serve), on a socketpair
with the real ingest and database: the front's requests are answered one by one, a crash
found while preparing (a parse worker that died) is counted and answered, and the link goes
on serving the next message. The MTA sees 451 for the crash, then 250."""

from __future__ import annotations

import asyncio
import socket

from sqlmodel import select

from mailgate import frames
from mailgate.adapters.smtp.front import SmtpFronts
from mailgate.services.ingest import CrashElsewhere, Envelope
from mailgate.store.models import IngestFailure, Ticket
from tests.conftest import make_mail
from tests.support.hygiene import crlf
from tests.support.inprocess import InProcess

SUPPORT = "support@example.com"


def prepared(service: InProcess, i: int, *, crashed: bool = False):  # type: ignore[no-untyped-def]
    raw = crlf(make_mail(sender=f"Client {i} <link{i}@client.example>",
                         message_id=f"<link-{i}@client.example>").as_bytes())  # fmt: skip
    envelope = Envelope(mail_from=f"link{i}@client.example", recipients=(SUPPORT,))
    message = service.app.ingestor.prepare(raw, envelope)
    if crashed:  # as the front sends it (an exception may not pickle: its kind and text)
        message.crash = CrashElsewhere("EOFError", "the parse worker died")
    return message


def test_a_crash_prepared_in_a_front_is_counted_answered_and_the_link_goes_on(
    service: InProcess,
) -> None:
    app = service.app
    stored: list[int] = []
    fronts = SmtpFronts(None, app.config, app.ingestor, app.metrics, lambda: stored.append(1),
                        count=1)  # fmt: skip
    requests = [(1, prepared(service, 1, crashed=True)), (2, prepared(service, 2))]

    async def exchange() -> list[tuple[object, ...]]:
        serve_end, front_end = socket.socketpair()
        serve_end.setblocking(False)
        front_end.setblocking(False)
        reader, writer = await asyncio.open_unix_connection(sock=serve_end)
        serving = asyncio.create_task(fronts._serve(reader, writer, asyncio.Event()))
        front_reader, front_writer = await asyncio.open_unix_connection(sock=front_end)
        answers = []
        for request_id, message in requests:  # one at a time, as a session waits for each
            front_writer.write(frames.encode((request_id, "ingest", message)))
            answers.append(await asyncio.wait_for(frames.read(front_reader), 30))
        front_writer.close()  # the front goes away: serve's side ends
        await asyncio.wait_for(serving, 30)
        writer.close()
        return answers

    crash_answer, ok_answer = asyncio.run(exchange())
    assert crash_answer[:2] == (1, "crashed") and "parse worker died" in str(crash_answer[2])
    assert ok_answer[:2] == (2, "ok") and ok_answer[2][0].ticket_id is not None
    assert stored == [1], "serve's sender woken for the stored message only"
    with app.db.read() as session:
        failures = session.exec(select(IngestFailure)).all()
        tickets = session.exec(select(Ticket)).all()
    assert [(f.attempts, f.last_error) for f in failures] == [
        (1, "EOFError: the parse worker died")
    ]
    assert len(tickets) == 1
