"""Issue 2, points 2-6 and 8 over real SMTP: a customer's mail becomes a ticket, an account and
two mails; 250 only once it is committed; categories, attachments, the raw message, duplicates,
and clean refusals (550 at RCPT, SIZE and 552)."""

from __future__ import annotations

import json
import re
import smtplib
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from mailgate.core.tokens import ACTIVATE, LinkTokens
from mailgate.keys import Purpose
from mailgate.store.models import Message, Receipt, Ticket
from tests.conftest import make_mail, send
from tests.support.mailflow import (
    blob_path,
    counts,
    files_under,
    mail_bytes,
    outbox_rows,
    sha256,
    smtp_transaction,
)
from tests.support.peers import Mailgate, SmtpSink, wait_until

pytestmark = pytest.mark.postgres  # the database engine matters here: run on both

SUPPORT = "support@example.com"
JEAN = "jean@client.example"
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def tickets_in_db(mg: Mailgate) -> list[Ticket]:
    with mg.app.db.read() as session:
        return list(session.exec(select(Ticket).order_by(Ticket.id)))  # type: ignore[arg-type]


def urls(text: str) -> list[str]:
    return re.findall(r"https?://[^\s\"'<>]+", text)


def html_of(received) -> str:  # type: ignore[no-untyped-def]
    part = received.msg.get_body(("html",))
    assert part is not None, "no HTML part"
    return str(part.get_content())


def all_sent(mg: Mailgate) -> bool:
    return all(r.status == "sent" for r in outbox_rows(mg.app.db))


# -- point 2: 250 only after the commit ------------------------------------------------------


def test_250_means_committed_and_the_cli_sees_the_ticket_at_once(mailgate: Mailgate):
    msg = make_mail(subject="Imprimante en panne au 3e étage")
    result = smtp_transaction(mailgate.smtp_port, mail_bytes(msg), [SUPPORT])
    assert result.data_code == 250
    # Another process, straight after the 250: no waiting, it must already be there.
    tickets = json.loads(mailgate.cli("ticket", "list", "--json").stdout)
    assert len(tickets) == 1
    t = tickets[0]
    assert isinstance(t["id"], int)
    assert t["subject"] == "Imprimante en panne au 3e étage"
    assert t["requester"] == JEAN
    assert t["status"] == "new"
    assert t["category"] is None
    assert t["message_count"] == 1
    for stamp in (t["created_at"], t["updated_at"]):
        assert datetime.fromisoformat(stamp.replace("Z", "+00:00")).utcoffset() == timedelta(0)
    # ... and so are the receipt, the account and both outbound rows (same transaction).
    n = counts(mailgate.app.db)
    assert (n["receipt"], n["message"], n["account"]) == (1, 1, 1)
    assert sorted(r.kind for r in outbox_rows(mailgate.app.db)) == ["activation", "confirmation"]


# -- point 3: the two mails -----------------------------------------------------------------


def test_confirmation_has_reference_subject_portal_link_and_a_reply_address(
    mailgate: Mailgate, sink: SmtpSink
):
    send(mailgate.smtp_port, make_mail(subject="Wi-Fi coupé"))
    (ticket,) = tickets_in_db(mailgate)
    (conf,) = sink.wait_kind("confirmation", to=JEAN)
    base_url = mailgate.config.portal.base_url
    text, html = conf.text(), html_of(conf)
    assert f"#{ticket.id}" in str(conf.msg["Subject"])
    assert f"#{ticket.id}" in text
    # Issue 9: the sender is unverified and new to us, so nothing they chose is echoed back.
    assert "Wi-Fi coupé" not in text and "Wi-Fi coupé" not in str(conf.msg["Subject"])
    assert f"{base_url}/tickets/{ticket.id}" in text
    assert f"{base_url}/tickets/{ticket.id}" in html
    for link in urls(text) + urls(html):
        assert link.startswith(base_url + "/"), f"link not under base_url: {link}"
    (reply_to,) = conf.msg["Reply-To"].addresses
    assert re.fullmatch(r"support\+[a-z0-9-]+@example\.com", reply_to.addr_spec)

    # The reply address leads back to this very ticket.
    send(
        mailgate.smtp_port,
        make_mail(subject="Toujours rien", body="Le Wi-Fi est toujours coupé.\n"),
        rcpts=[reply_to.addr_spec],
    )
    with mailgate.app.db.read() as session:
        messages = list(session.exec(select(Message).where(Message.ticket_id == ticket.id)))
    assert len(messages) == 2
    assert len(tickets_in_db(mailgate)) == 1


def test_activation_only_for_a_new_account_with_a_72_hour_link(
    mailgate: Mailgate, sink: SmtpSink
):
    send(mailgate.smtp_port, make_mail(subject="Premier problème"))
    (act,) = sink.wait_kind("activation", to=JEAN)
    base_url = re.escape(mailgate.config.portal.base_url)
    tokens = re.findall(rf"{base_url}/activate/([A-Za-z0-9_.\-]+)", act.text())
    assert tokens, act.text()
    token = tokens[0]
    assert f"/activate/{token}" in html_of(act)
    with mailgate.app.db.read() as session:
        account = mailgate.app.accounts.account_for_link(session, ACTIVATE, token)
        assert account is not None and account.email == JEAN
    now = datetime.now(UTC)
    secret = mailgate.app.keys.key(Purpose.LINKS)
    assert LinkTokens(secret, lambda: now + timedelta(hours=71)).read(ACTIVATE, token)
    assert LinkTokens(secret, lambda: now + timedelta(hours=73)).read(ACTIVATE, token) is None

    # The same customer again: a confirmation, no second activation.
    send(mailgate.smtp_port, make_mail(subject="Deuxième problème"))
    first, second = tickets_in_db(mailgate)
    db = mailgate.app.db
    kinds = {t.id: sorted(r.kind for r in outbox_rows(db, t.id)) for t in (first, second)}
    assert kinds == {first.id: ["activation", "confirmation"], second.id: ["confirmation"]}
    sink.wait_kind("confirmation", to=JEAN, count=2)
    wait_until(lambda: all_sent(mailgate), what="every outbox row sent")
    assert len(sink.of_kind("activation", to=JEAN)) == 1
    assert counts(mailgate.app.db)["account"] == 1


# -- point 4: categories --------------------------------------------------------------------


def test_category_addresses_file_tickets_into_their_category(mailgate: Mailgate):
    send(
        mailgate.smtp_port,
        make_mail(to="billing@example.com", subject="Facture en double"),
        rcpts=["Billing@Example.COM"],  # addresses are case-insensitive
    )
    send(mailgate.smtp_port, make_mail(sender="paul@client.example", subject="Mot de passe"))
    assert {t.subject: t.category for t in tickets_in_db(mailgate)} == {
        "Facture en double": "Billing",
        "Mot de passe": None,
    }


# -- point 5: attachments and the raw message, byte for byte ----------------------------------


def test_attachments_and_raw_message_are_kept_byte_for_byte_under_their_hash(
    mailgate: Mailgate, tmp_path: Path
):
    binary = bytes(range(256)) * 150 + b"\x00\r\n\r\n.\r\n\xff"
    legacy_text = "Libellé;Montant\r\nCafé crème;2,50 €\r\n".encode("cp1252")
    msg = make_mail(subject="Pièces jointes")
    msg.add_attachment(
        binary, maintype="application", subtype="octet-stream", filename="../../evil.sh"
    )
    msg.add_attachment(
        legacy_text,
        maintype="text",
        subtype="csv",
        filename="relevé.csv",
        params={"charset": "windows-1252"},
    )
    raw = mail_bytes(msg)
    assert smtp_transaction(mailgate.smtp_port, raw, [SUPPORT]).data_code == 250

    (ticket,) = tickets_in_db(mailgate)
    shown = json.loads(mailgate.cli("ticket", "show", str(ticket.id), "--json").stdout)
    atts = {a["sha256"]: a for a in shown["messages"][0]["attachments"]}
    data_dir = mailgate.config.data_dir
    for payload, ctype in ((binary, "application/octet-stream"), (legacy_text, "text/csv")):
        digest = sha256(payload)
        assert digest in atts, f"{ctype} not stored byte for byte: {list(atts.values())}"
        assert atts[digest]["size"] == len(payload)
        assert atts[digest]["content_type"] == ctype
        assert blob_path(data_dir, digest).read_bytes() == payload
    names = {a["filename"] for a in atts.values()}
    assert "relevé.csv" in names
    assert all("/" not in n and "\\" not in n and not n.startswith(".") for n in names), names

    # Nothing named after the mail anywhere: blobs are named by their hash only.
    everything = files_under(tmp_path)
    assert not [p for p in everything if p.name in ("evil.sh", "relevé.csv")]
    blobs = [p for p in everything if (data_dir / "blobs") in p.parents]
    assert blobs and all(HEX64.match(p.name) for p in blobs), blobs

    # The raw message, exactly as received.
    with mailgate.app.db.read() as session:
        (receipt,) = session.exec(select(Receipt))
        (message,) = session.exec(select(Message))
    assert receipt.raw_sha256 == message.raw_sha256 == sha256(raw)
    # Small enough to be kept in the database (rawmail), not as a blob file.
    assert mailgate.app.ingestor.raw(receipt.raw_sha256) == raw
    assert not blob_path(data_dir, receipt.raw_sha256).exists()


# -- point 6: duplicates ----------------------------------------------------------------------


def test_same_message_id_to_the_same_address_makes_one_ticket(mailgate: Mailgate):
    raw = mail_bytes(make_mail())
    # An MTA retry: the same bytes, then the same message relayed with one more hop.
    retried = b"Received: from relay2.client.example by mx.example.com; retry\r\n" + raw
    replies = [
        smtp_transaction(mailgate.smtp_port, r, [SUPPORT]).data_code for r in (raw, raw, retried)
    ]
    assert replies == [250, 250, 250]
    n = counts(mailgate.app.db)
    assert (n["ticket"], n["message"], n["receipt"], n["outbox"]) == (1, 1, 1, 2)


def test_concurrent_deliveries_of_one_message_make_one_ticket(mailgate: Mailgate):
    raw = mail_bytes(make_mail())
    codes: list[int] = []
    start = threading.Barrier(4)

    def deliver() -> None:
        with smtplib.SMTP("127.0.0.1", mailgate.smtp_port, timeout=30) as s:
            s.ehlo()
            s.mail(JEAN)
            s.rcpt(SUPPORT)
            start.wait(30)
            codes.append(s.data(raw)[0])

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert codes == [250] * 4
    n = counts(mailgate.app.db)
    assert (n["ticket"], n["receipt"], n["outbox"]) == (1, 1, 2)


def test_mail_without_message_id_gets_a_stable_one(mailgate: Mailgate):
    first = make_mail(subject="Sans identifiant")
    del first["Message-ID"]
    raw = mail_bytes(first)
    assert smtp_transaction(mailgate.smtp_port, raw, [SUPPORT]).data_code == 250
    assert smtp_transaction(mailgate.smtp_port, raw, [SUPPORT]).data_code == 250
    assert counts(mailgate.app.db)["ticket"] == 1

    other = make_mail(subject="Sans identifiant non plus", body="Un autre problème.\n")
    del other["Message-ID"]
    send(mailgate.smtp_port, mail_bytes(other))
    with mailgate.app.db.read() as session:
        ids = [m.message_id for m in session.exec(select(Message).order_by(Message.id))]  # type: ignore[arg-type]
    assert len(ids) == 2
    assert all(ids) and ids[0] != ids[1]
    # The id is a valid Message-ID our outbound mail can thread on.
    assert all(re.fullmatch(r"[^<>\s@]+@[^<>\s@]+", i) for i in ids), ids


# -- point 8: refusals ------------------------------------------------------------------------


def test_foreign_recipients_get_550_at_rcpt(mailgate: Mailgate):
    raw = mail_bytes(make_mail())
    result = smtp_transaction(
        mailgate.smtp_port,
        raw,
        ["someone@elsewhere.example", "support@example.net", "support@example.com.evil", SUPPORT],
    )
    codes = {r: c for r, (c, _) in result.rcpt.items()}
    assert codes == {
        "someone@elsewhere.example": 550,
        "support@example.net": 550,
        "support@example.com.evil": 550,
        SUPPORT: 250,
    }
    assert result.data_code == 250
    with mailgate.app.db.read() as session:
        assert [r.recipient for r in session.exec(select(Receipt))] == [SUPPORT]

    only_foreign = smtp_transaction(
        mailgate.smtp_port, mail_bytes(make_mail()), ["someone@elsewhere.example"]
    )
    assert only_foreign.rcpt["someone@elsewhere.example"][0] == 550
    assert only_foreign.data is None
    assert counts(mailgate.app.db)["ticket"] == 1


def _mail_of_size(size: int) -> bytes:
    head = mail_bytes(make_mail(body="x\n")).rstrip(b"\r\n").rsplit(b"\r\n", 1)[0] + b"\r\n"
    filler = size - len(head)
    lines, rest = divmod(filler, 80)
    body = (b"y" * 78 + b"\r\n") * lines
    body += b"z" * (rest - 2) + b"\r\n" if rest >= 2 else b""
    raw = head + body
    while len(raw) < size:  # rest was 1: one more byte on the last full line
        raw = raw[:-2] + b"y\r\n"
    assert len(raw) == size
    return raw


def test_size_is_advertised_and_mail_over_max_message_bytes_gets_552(mailgate: Mailgate):
    limit = mailgate.config.inbound.max_message_bytes
    with smtplib.SMTP("127.0.0.1", mailgate.smtp_port, timeout=30) as s:
        s.ehlo()
        assert s.has_extn("size")
        assert int(s.esmtp_features["size"]) == limit

        # Declared too big: refused at MAIL FROM.
        assert s.mail(JEAN, [f"SIZE={limit + 1}"])[0] == 552
        s.rset()

        # Not declared: refused after the data, and the session stays usable.
        over = smtp_transaction(mailgate.smtp_port, _mail_of_size(limit + 1), [SUPPORT], client=s)
        assert over.data_code == 552
        assert counts(mailgate.app.db)["receipt"] == 0

        at_limit = smtp_transaction(mailgate.smtp_port, _mail_of_size(limit), [SUPPORT], client=s)
        assert at_limit.data_code == 250
    assert counts(mailgate.app.db)["ticket"] == 1
