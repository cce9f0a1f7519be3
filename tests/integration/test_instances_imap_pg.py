"""Issue 17: one IMAP mailbox (a real Dovecot), two `mailgate serve` processes on one PostgreSQL.
Only the instance holding the mailbox's lease polls it; when that instance is killed with
SIGKILL, the other takes the lease within the bound ([instance] lease_seconds plus one renewal
period), fetches the mail that arrived meanwhile, and that mail makes one ticket.

Runs only with PostgreSQL (MAILGATE_TEST_DATABASE_URL) and Dovecot.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import func
from sqlmodel import select

from mailgate.store.db import Database
from mailgate.store.models import Receipt, Ticket
from tests.conftest import PG_URL, make_mail
from tests.support.instances import Instance, pg_url_fixture  # noqa: F401 (fixture)
from tests.support.peers import SmtpSink, wait_until

if TYPE_CHECKING:
    from tests.support.dovecot import ImapAccount

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not PG_URL, reason="needs PostgreSQL: set MAILGATE_TEST_DATABASE_URL (issue 17)"
    ),
]
pytest_plugins = ["tests.support.dovecot"]

LEASE = 3  # [instance] lease_seconds: renewed every second


def receipts(db: Database) -> Counter[str]:
    with db.read() as session:
        return Counter(session.exec(select(Receipt.message_id)).all())


def test_mailbox_changes_hands_after_sigkill_and_its_mail_is_ticketed_once(
    tmp_path: Path, pg_url: str, imap_account: ImapAccount
) -> None:
    mailbox = f"imap:{imap_account.user}@127.0.0.1:{imap_account.port}/INBOX"
    sink = SmtpSink()
    db = Database(pg_url)
    box = imap_account.toml(poll_seconds=LEASE)  # IDLE picks mail up; a poll as a backstop
    a = Instance("a", tmp_path, pg_url, sink.port, lease_seconds=LEASE, extra=box)
    b = Instance("b", tmp_path, pg_url, sink.port, lease_seconds=LEASE, extra=box)
    try:
        for inst in (a, b):  # started together: one of them takes the lease, the other waits
            inst.launch()
        for inst in (a, b):
            inst.wait_up()
        wait_until(lambda: mailbox in a.holds() + b.holds(), 2 * LEASE, "a holder")
        holder, other = (a, b) if mailbox in a.holds() else (b, a)
        assert mailbox not in other.holds()  # the holder's lease runs: the other stands by

        first = make_mail(sender="ana@client.example", message_id="<imap-1@client.example>")
        imap_account.append(first.as_bytes())
        wait_until(lambda: len(imap_account.messages("Processed")) == 1, 20, "the holder")
        assert receipts(db) == {"imap-1@client.example": 1}

        holder.kill()  # with the mailbox's lease, and its IMAP session
        killed_at = time.monotonic()
        second = make_mail(sender="bob@client.example", message_id="<imap-2@client.example>")
        imap_account.append(second.as_bytes())  # nobody polls it for now
        wait_until(lambda: mailbox in other.holds(), 3 * LEASE, "the other to take over")
        takeover = time.monotonic() - killed_at
        assert takeover < LEASE + LEASE / 3 + 2, takeover

        wait_until(lambda: "imap-2@client.example" in receipts(db), 20, "it to fetch the mail")
        wait_until(lambda: len(imap_account.messages("Processed")) == 2, 20, "it to move it")
        assert imap_account.messages("INBOX") == {}
        assert receipts(db) == {"imap-1@client.example": 1, "imap-2@client.example": 1}
        with db.read() as session:
            assert session.exec(select(func.count()).select_from(Ticket)).one() == 2
        sink.wait_for(lambda ms: {m.rcpt_tos[0] for m in ms if m.kind == "confirmation"}
                      == {"ana@client.example", "bob@client.example"})  # fmt: skip
        print(f"mailbox taken over in {takeover:.1f}s")
    finally:
        a.stop()
        b.stop()
        db.dispose()
        sink.close()
