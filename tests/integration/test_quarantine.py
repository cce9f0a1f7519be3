"""Issue 2, point 9: mail that cannot be parsed is accepted, stored and kept in a quarantine the
CLI lists; it never blocks the mail behind it, and an MTA retry does not hold it twice."""

from __future__ import annotations

import json
import smtplib
from pathlib import Path

from sqlmodel import select

from mailgate.store.models import Ticket
from tests.conftest import make_mail
from tests.support.mailflow import (
    blob_path,
    counts,
    crlf,
    mail_bytes,
    outbox_rows,
    sha256,
    smtp_transaction,
)
from tests.support.peers import Mailgate

SUPPORT = "support@example.com"
DATA = Path(__file__).resolve().parents[1] / "data" / "inbound"


def test_broken_mime_and_garbage_are_quarantined_and_the_next_mail_is_ticketed(
    mailgate: Mailgate,
):
    broken = crlf((DATA / "broken_mime.eml").read_bytes())
    garbage = crlf((DATA / "garbage.eml").read_bytes())
    normal = mail_bytes(make_mail(subject="Après le courrier cassé"))
    with smtplib.SMTP("127.0.0.1", mailgate.smtp_port, timeout=30) as s:
        replies = [
            smtp_transaction(mailgate.smtp_port, raw, [SUPPORT], mail_from=sender, client=s)
            for raw, sender in (
                (broken, "billing@broken-mailer.example"),
                (garbage, ""),
                (broken, "billing@broken-mailer.example"),  # the MTA's retry
                (normal, "jean@client.example"),
            )
        ]
    assert [r.data_code for r in replies] == [250, 250, 250, 250]

    held = json.loads(mailgate.cli("quarantine", "list", "--json").stdout)
    by_sha = {q["sha256"]: q for q in held}
    assert set(by_sha) == {sha256(broken), sha256(garbage)}, held
    assert "boundary" in by_sha[sha256(broken)]["reason"].lower()
    assert by_sha[sha256(garbage)]["reason"]
    data_dir = mailgate.config.data_dir
    for raw in (broken, garbage):
        item = by_sha[sha256(raw)]
        assert isinstance(item["id"], int)
        assert item["recipient"] == SUPPORT
        assert item["size"] == len(raw)
        # Small: kept in the database (rawmail), read back as quarantine show/reprocess do.
        assert mailgate.app.ingestor.raw(item["sha256"]) == raw
        assert not blob_path(data_dir, item["sha256"]).exists()

    # The mail behind them became a ticket; the broken one was answered by nobody.
    with mailgate.app.db.read() as session:
        subjects = list(session.exec(select(Ticket.subject)))
    assert subjects == ["Après le courrier cassé"]
    assert not [r for r in outbox_rows(mailgate.app.db) if "broken-mailer" in r.to_addr]
    assert counts(mailgate.app.db)["quarantine"] == 2
