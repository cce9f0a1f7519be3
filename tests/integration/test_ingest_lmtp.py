"""Issue 2, point 7: LMTP (RFC 2033) ingests like SMTP, with one reply per accepted recipient
after the data. Spoken over a raw socket: smtplib.LMTP reads a single reply after DATA."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import select

from mailgate.store.models import Receipt, Ticket
from tests.conftest import make_mail
from tests.support.mailflow import LmtpClient, counts, crlf, mail_bytes
from tests.support.peers import Mailgate

SUPPORT = "support@example.com"
BILLING = "billing@example.com"
DATA = Path(__file__).resolve().parents[1] / "data" / "inbound"


def test_two_recipients_get_two_replies_and_one_ticket(mailgate: Mailgate):
    raw = mail_bytes(make_mail(to=f"{SUPPORT}, {BILLING}", subject="Remboursement"))
    client = LmtpClient(mailgate.lmtp_port)
    try:
        at_rcpt, after_data = client.deliver(raw, [SUPPORT, BILLING])
        assert {r: c for r, (c, _) in at_rcpt.items()} == {SUPPORT: 250, BILLING: 250}
        assert [code for code, _ in after_data] == [250, 250]
        # Nothing more was said: the next reply is the one to NOOP.
        assert client.command("NOOP")[0] == 250
    finally:
        client.close()
    with mailgate.app.db.read() as session:
        receipts = list(session.exec(select(Receipt)))
        categories = {t.category for t in session.exec(select(Ticket))}
    # One message is one ticket (issue 9): the address with a category files it.
    assert [r.recipient for r in receipts] == [BILLING]
    assert all(r.channel == "lmtp" and r.ticket_id for r in receipts)
    assert categories == {"Billing"}


def test_a_refused_recipient_gets_550_at_rcpt_and_no_reply_after_data(mailgate: Mailgate):
    raw = mail_bytes(make_mail())
    client = LmtpClient(mailgate.lmtp_port)
    try:
        at_rcpt, after_data = client.deliver(raw, ["nobody@elsewhere.example", SUPPORT])
        assert at_rcpt["nobody@elsewhere.example"][0] == 550
        assert at_rcpt[SUPPORT][0] == 250
        assert [code for code, _ in after_data] == [250]
        assert client.command("NOOP")[0] == 250
    finally:
        client.close()
    n = counts(mailgate.app.db)
    assert (n["ticket"], n["receipt"]) == (1, 1)


def test_lmtp_duplicates_and_garbage_are_answered_250(mailgate: Mailgate):
    raw = mail_bytes(make_mail())
    garbage = crlf((DATA / "garbage.eml").read_bytes())
    client = LmtpClient(mailgate.lmtp_port)
    try:
        for payload in (raw, raw, garbage):
            _, after_data = client.deliver(payload, [SUPPORT])
            assert [code for code, _ in after_data] == [250]
    finally:
        client.close()
    n = counts(mailgate.app.db)
    assert (n["ticket"], n["quarantine"]) == (1, 1)


def test_an_oversized_message_gets_one_552_per_recipient(mailgate: Mailgate):
    limit = mailgate.config.inbound.max_message_bytes
    big = mail_bytes(make_mail(body="0123456789abcdef\n" * (limit // 17 + 1)))
    client = LmtpClient(mailgate.lmtp_port)
    client.sock.settimeout(10)  # a missing reply must fail the test, not hang it
    try:
        _, after_data = client.deliver(big, [SUPPORT, BILLING])
        assert [code for code, _ in after_data] == [552, 552]
        assert client.command("NOOP")[0] == 250
        # The session is still in step: the next message goes through.
        _, after_data = client.deliver(mail_bytes(make_mail()), [SUPPORT])
        assert [code for code, _ in after_data] == [250]
    finally:
        client.close()
    assert counts(mailgate.app.db)["receipt"] == 1


def test_lmtp_on_a_unix_socket_survives_a_restart(config_path: Path, tmp_path: Path):
    sock = tmp_path / "lmtp.sock"
    unix = f'lmtp_listen = "unix:{sock}"'
    config_path.write_text(config_path.read_text().replace('lmtp_listen = "127.0.0.1:0"', unix))
    for attempt in range(2):  # the second start finds the first one's socket file
        mg = Mailgate(config_path)
        try:
            client = LmtpClient(0, unix_path=str(sock))
            try:
                _, after_data = client.deliver(mail_bytes(make_mail()), [SUPPORT])
                assert [code for code, _ in after_data] == [250]
            finally:
                client.close()
            assert counts(mg.app.db)["ticket"] == attempt + 1
        finally:
            mg.stop()
