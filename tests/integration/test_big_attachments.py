"""Issue 11, big attachments over real SMTP and LMTP: a DATA past 1 MiB is spooled to a
temporary file while it is read, its base64 attachment decoded outside the MIME parser (and,
with the blob store handed to the parse workers, stored by the worker). Whatever the path, the
mail is stored byte for byte, the attachment's digest and size are those of the file sent, the
size limit and the memory budget still refuse, and no temporary file is left behind.
The memory figures are in bench/attachment_memory.py (docs/operations.md)."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailgate.services.ticket_views import show_ticket
from mailgate.store.models import Ticket
from tests.support.bigmail import payload, sha256, with_attachments
from tests.support.hygiene import SUPPORT, count, rows, set_inbound, smtp_data
from tests.support.mailflow import LmtpClient
from tests.support.peers import Mailgate

JEAN = "jean@client.example"


def _leftovers(mg: Mailgate) -> list[str]:
    """Files in the blob root itself: temporary ones (blobs live two folders down)."""
    root = mg.app.blobs.root
    return sorted(p.name for p in root.iterdir() if p.is_file()) if root.exists() else []


def _attachments(mg: Mailgate, ticket_id: int) -> list[dict[str, object]]:
    with mg.app.db.read() as session:
        shown = show_ticket(session, ticket_id)
    assert shown is not None
    (message,) = shown["messages"]
    return [
        {k: a[k] for k in ("filename", "size", "sha256")} for a in message["attachments"]
    ]


def test_a_9_mb_mail_over_smtp_and_lmtp_is_stored_intact(roomy_mailgate: Mailgate):
    mg = roomy_mailgate
    data = payload(7_000_000, 11)
    raw = with_attachments(("archive.bin", data, "base64"), ("note.txt", b"petit", "base64"))
    assert len(raw) > 9_000_000  # past the spool threshold and the worker recycling size
    assert smtp_data(mg.smtp_port, raw) == (250, "2.0.0 Stored (ticket 1)")
    expected = [
        {"filename": "archive.bin", "size": len(data), "sha256": sha256(data)},
        {"filename": "note.txt", "size": 5, "sha256": sha256(b"petit")},
    ]
    assert _attachments(mg, 1) == expected
    assert sha256(mg.app.blobs.get(sha256(data))) == sha256(data)
    assert mg.app.blobs.get(sha256(raw)) == raw  # the raw mail, byte for byte

    other = with_attachments(("archive.bin", data, "base64"), subject="Par LMTP")
    lmtp = LmtpClient(mg.lmtp_port)
    try:
        _, replies = lmtp.deliver(other, [SUPPORT])
    finally:
        lmtp.close()
    assert [code for code, _ in replies] == [250]
    assert _attachments(mg, 2) == expected[:1]
    assert mg.app.blobs.get(sha256(other)) == other
    assert _leftovers(mg) == []


@pytest.fixture
def limited_mailgate(config_path: Path) -> Iterator[Mailgate]:
    """4 MB per message, 6 MB in flight: one full-size DATA and 2 MB more."""
    set_inbound(config_path, max_message_bytes=4_000_000, max_inflight_bytes=6_000_000)
    mg = Mailgate(config_path)
    yield mg
    mg.stop()


def test_a_spooled_data_over_the_size_limit_is_refused_and_the_session_goes_on(
    limited_mailgate: Mailgate,
):
    mg = limited_mailgate
    big = with_attachments(("a.bin", payload(3_500_000), "base64"), subject="Trop gros")
    small = with_attachments(("a.bin", b"ok", "base64"), subject="Ensuite")
    with smtplib.SMTP("127.0.0.1", mg.smtp_port, timeout=60) as client:
        client.ehlo("client.example")
        assert client.mail(JEAN)[0] == 250 and client.rcpt(SUPPORT)[0] == 250
        assert client.data(big)[0] == 552  # read to its end, past the spool threshold
        assert client.mail(JEAN)[0] == 250 and client.rcpt(SUPPORT)[0] == 250
        assert client.data(small)[0] == 250
    assert [t.subject for t in _tickets(mg)] == ["Ensuite"]
    assert _leftovers(mg) == []


def test_a_spooled_data_past_its_size_that_does_not_fit_the_budget_gets_452(
    limited_mailgate: Mailgate,
):
    mg = limited_mailgate
    holder = smtplib.SMTP("127.0.0.1", mg.smtp_port, timeout=60)
    holder.ehlo("client.example")
    assert holder.mail(JEAN)[0] == 250 and holder.rcpt(SUPPORT)[0] == 250
    assert holder.docmd("DATA")[0] == 354  # reserves 4 MB of the 6
    liar = with_attachments(("a.bin", payload(2_000_000), "base64"), subject="Menteur")
    with smtplib.SMTP("127.0.0.1", mg.smtp_port, timeout=60) as client:
        client.ehlo("client.example")
        assert client.mail(JEAN, ["SIZE=1000"])[0] == 250 and client.rcpt(SUPPORT)[0] == 250
        assert client.data(liar)[0] == 452  # 2.7 MB sent for 1 kB declared: no room to grow
    holder.send(with_attachments(("a.bin", b"ok", "base64"), subject="Tenu") + b".\r\n")
    assert holder.getreply()[0] == 250
    holder.quit()
    assert smtp_data(mg.smtp_port, liar)[0] == 250  # room again
    assert sorted(t.subject for t in _tickets(mg)) == ["Menteur", "Tenu"]
    assert count(mg.app.db, Ticket) == 2 and _leftovers(mg) == []


def _tickets(mg: Mailgate) -> list[Ticket]:
    return rows(mg.app.db, Ticket)
