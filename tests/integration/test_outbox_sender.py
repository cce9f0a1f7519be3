"""Issue 2, point 10: outbound mail carries every header CONTRACT.md promises, in the customer's
language; the sender retries temporary failures with capped, jittered backoff, marks permanent
ones failed, and never sends a row twice. The retry tests drive `Sender.run_once()` on an App
that is not serving (so no background sender races them), against the real SMTP sink."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from sqlmodel import select

from mailgate import config as config_mod
from mailgate.app import App, build
from mailgate.clock import FixedClock, as_utc
from mailgate.services.ingest import Envelope
from mailgate.store.models import Ticket
from tests.conftest import make_mail, send
from tests.support.mailflow import crlf, mail_bytes, outbox_rows, run_cli
from tests.support.peers import Mailgate, SmtpSink

pytestmark = pytest.mark.postgres  # the database engine matters here: run on both

SUPPORT = "support@example.com"
JEAN = "jean@client.example"
DATA = Path(__file__).resolve().parents[1] / "data" / "inbound"


# -- headers and language (through `serve`) ---------------------------------------------------


def test_outbound_mail_carries_every_promised_header(mailgate: Mailgate, sink: SmtpSink):
    incoming = make_mail(subject="Écran noir")
    send(mailgate.smtp_port, incoming)
    with mailgate.app.db.read() as session:
        (ticket,) = session.exec(select(Ticket))
    (conf,) = sink.wait_kind("confirmation", to=JEAN)
    (act,) = sink.wait_kind("activation", to=JEAN)
    rows = {r.kind: r for r in outbox_rows(mailgate.app.db)}
    now = datetime.now(UTC)
    for received in (conf, act):
        msg = received.msg
        assert re.fullmatch(r"<[^<>@\s]+@mg\.test>", str(msg["Message-ID"]))
        # The bytes fixed at enqueue time: the Message-ID is the row's.
        assert str(msg["Message-ID"]) == f"<{rows[received.kind].message_id}>"
        assert abs(parsedate_to_datetime(str(msg["Date"])) - now) < timedelta(minutes=5)
        assert msg["X-Mailgate-Kind"] == received.kind
        assert msg["Auto-Submitted"] in ("auto-replied", "auto-generated")
        (sender,) = msg["From"].addresses
        assert (sender.addr_spec, sender.display_name) == (SUPPORT, "Example Support")
        assert [a.addr_spec for a in msg["To"].addresses] == [JEAN]
        assert received.mail_from in ("", "<>"), "automatic mail goes out with the null sender"
        assert msg.get_body(("plain",)) is not None and msg.get_body(("html",)) is not None
    assert conf.msg["Message-ID"] != act.msg["Message-ID"]

    # Mail about the ticket: its number, its reply address, and the customer's thread.
    assert conf.msg["X-Mailgate-Ticket"] == str(ticket.id)
    (reply_to,) = conf.msg["Reply-To"].addresses
    assert re.fullmatch(r"support\+[a-z0-9-]+@example\.com", reply_to.addr_spec)
    assert conf.msg["In-Reply-To"] == incoming["Message-ID"]
    assert incoming["Message-ID"] in str(conf.msg["References"]).split()
    assert conf.msg["Auto-Submitted"] == "auto-replied"


def test_mail_is_answered_in_the_customers_language(mailgate: Mailgate, sink: SmtpSink):
    senders = {
        "anna@client.example": ({"Content-Language": "en-GB"}, "en"),
        "bob@client.example": ({"Accept-Language": "en-US, fr;q=0.5"}, "en"),
        "chloe@client.example": ({}, "fr"),  # nothing said: default_locale
        "denis@client.example": ({"Content-Language": "de-DE"}, "fr"),  # unsupported: default
    }
    for addr, (headers, _) in senders.items():
        send(mailgate.smtp_port, make_mail(sender=addr, headers=headers), mail_from=addr)
    # A real Outlook mail that says Accept-Language: en-US.
    outlook = crlf((DATA / "accept_language_en.eml").read_bytes())
    send(mailgate.smtp_port, outlook, mail_from="raj.patel@northwind.example")
    expected = {addr: lang for addr, (_, lang) in senders.items()}
    expected["raj.patel@northwind.example"] = "en"
    # Words of both versions of the text (issue 9: a first contact gets the neutral one).
    marker = {"en": "A member of our team", "fr": "Un membre de notre équipe"}
    for addr, lang in expected.items():
        (conf,) = sink.wait_kind("confirmation", to=addr)
        assert marker[lang] in conf.text(), (addr, conf.text())
        assert marker["fr" if lang == "en" else "en"] not in conf.text()
        (act,) = sink.wait_kind("activation", to=addr)
        assert ("activate" if lang == "en" else "activer") in act.text(), (addr, act.text())


# -- the sender, driven one pass at a time ----------------------------------------------------


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


def offline_app(config: config_mod.Config, clock: FixedClock | None = None) -> App:
    app = build(config, clock=clock)
    app.db.upgrade()
    return app


@pytest.fixture
def app(config_path: Path, clock: FixedClock) -> Iterator[App]:
    built = offline_app(config_mod.load(config_path), clock)
    yield built
    built.db.dispose()


def ingest(app: App, sender: str = JEAN) -> None:
    raw = mail_bytes(make_mail(sender=sender))
    app.ingestor.ingest(raw, Envelope(mail_from=sender, recipients=(SUPPORT,)))


def due_in(app: App, now: datetime) -> list[float]:
    return [(as_utc(r.next_attempt_at) - now).total_seconds() for r in outbox_rows(app.db)]


def test_outbound_mail_declares_its_language(app: App):
    raw = mail_bytes(make_mail(headers={"Content-Language": "en"}))
    app.ingestor.ingest(raw, Envelope(mail_from=JEAN, recipients=(SUPPORT,)))
    for row in outbox_rows(app.db):
        wire = app.sender.assemble(row)  # what the sender puts on the wire for the row
        msg = email.message_from_bytes(wire, policy=email.policy.default)
        assert msg["Content-Language"] == "en", row.kind


def test_temporary_failure_is_retried_later_with_the_same_bytes_and_sent_once(
    app: App, clock: FixedClock, sink: SmtpSink
):
    ingest(app)
    sink.fail_with = "451 4.3.0 later"
    assert app.sender.run_once() == 2
    rows = outbox_rows(app.db)
    assert [(r.status, r.attempts) for r in rows] == [("queued", 1), ("queued", 1)]
    assert all("451" in r.last_error for r in rows)
    delays = due_in(app, clock.now())
    base = app.config.outbound.retry_base_seconds
    assert all(0 < d <= base for d in delays), delays
    assert sink.messages == []

    assert app.sender.run_once() == 0, "retried before its time"
    sink.fail_with = None
    clock.advance(seconds=max(delays))
    assert app.sender.run_once() == 2
    received = sink.wait_for(2)
    assert sorted(str(m.msg["Message-ID"]) for m in received) == sorted(
        f"<{r.message_id}>" for r in rows
    )
    assert [(r.status, r.attempts) for r in outbox_rows(app.db)] == [("sent", 2), ("sent", 2)]

    clock.advance(days=2)
    assert app.sender.run_once() == 0
    assert len(sink.messages) == 2


def test_permanent_failure_marks_the_row_failed(
    app: App, config_path: Path, clock: FixedClock, sink: SmtpSink
):
    ingest(app)
    sink.fail_with = "550 5.1.1 no"
    assert app.sender.run_once() == 2
    assert [(r.status, r.attempts) for r in outbox_rows(app.db)] == [("failed", 1), ("failed", 1)]
    assert all("550" in r.last_error for r in outbox_rows(app.db))
    sink.fail_with = None
    clock.advance(days=2)
    assert app.sender.run_once() == 0
    assert sink.messages == []
    listed = json.loads(run_cli(config_path, "outbox", "list", "--json").stdout)
    assert {(o["kind"], o["status"], o["attempts"]) for o in listed} == {
        ("confirmation", "failed", 1),
        ("activation", "failed", 1),
    }
    assert all(set(o) >= {"id", "to", "subject", "kind", "status", "attempts", "ticket_id"}
               for o in listed)


def test_backoff_grows_is_capped_and_jittered_then_gives_up(
    config_path: Path, clock: FixedClock, sink: SmtpSink
):
    cfg = config_mod.load(config_path)
    cfg = dataclasses.replace(
        cfg,
        outbound=dataclasses.replace(
            cfg.outbound, max_attempts=6, retry_base_seconds=10, retry_max_seconds=40
        ),
    )
    app = offline_app(cfg, clock)
    try:
        for i in range(3):
            ingest(app, f"client{i}@client.example")
        sink.fail_with = "421 4.7.0 busy"
        delays: list[list[float]] = []
        while any(r.status == "queued" for r in outbox_rows(app.db)):
            assert len(delays) < 10, "never gave up"
            assert app.sender.run_once() == 6
            queued = [r for r in outbox_rows(app.db) if r.status == "queued"]
            if queued:
                delays.append(due_in(app, clock.now()))
                clock.advance(seconds=max(delays[-1]))
        rows = outbox_rows(app.db)
        assert [(r.status, r.attempts) for r in rows] == [("failed", 6)] * 6
        assert len(delays) == 5
        flat = [d for attempt in delays for d in attempt]
        assert all(0 < d <= 40 for d in flat), delays
        assert max(delays[0]) <= 10
        assert min(delays[-1]) > 10, "backoff did not grow"
        assert len({round(d, 6) for d in delays[-1]}) > 1, "no jitter"
        assert sink.messages == []
    finally:
        app.db.dispose()


def test_two_senders_never_send_the_same_row_twice(config_path: Path, sink: SmtpSink):
    cfg = config_mod.load(config_path)
    first, second = offline_app(cfg), offline_app(cfg)
    try:
        for i in range(15):  # 30 rows: more than one claim's worth
            ingest(first, f"client{i}@client.example")
        rows = outbox_rows(first.db)
        assert len(rows) == 30
        start = threading.Barrier(2)
        attempted: list[int] = []

        def drain(app: App) -> None:
            start.wait(30)
            attempted.append(app.sender.run_once())

        threads = [threading.Thread(target=drain, args=(a,)) for a in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sum(attempted) == 30
        received = sink.wait_for(30)
        ids = [str(m.msg["Message-ID"]) for m in received]
        assert len(ids) == len(set(ids)) == 30
        assert set(ids) == {f"<{r.message_id}>" for r in rows}
        assert {r.status for r in outbox_rows(first.db)} == {"sent"}
    finally:
        first.db.dispose()
        second.db.dispose()


def test_maildir_transport_writes_each_row_once(
    config_path: Path, tmp_path: Path, clock: FixedClock
):
    cfg = config_mod.load(config_path)
    maildir = tmp_path / "sent"
    cfg = dataclasses.replace(
        cfg, outbound=dataclasses.replace(cfg.outbound, transport=f"maildir:{maildir}")
    )
    app = offline_app(cfg, clock)
    try:
        ingest(app)
        assert app.sender.run_once() == 2
        assert app.sender.run_once() == 0
        files = sorted((maildir / "new").iterdir())
        ids = {
            str(email.message_from_bytes(f.read_bytes(), policy=email.policy.default)["Message-ID"])
            for f in files
        }
        assert ids == {f"<{r.message_id}>" for r in outbox_rows(app.db)}
        assert len(files) == 2
        assert not list((maildir / "tmp").iterdir())
    finally:
        app.db.dispose()

