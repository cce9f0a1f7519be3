"""Issue 4, poison and quarantine: a mail whose processing crashes gets 451 (its MTA retries)
until its third crash, then is quarantined with the error and answered 250, while the mail
behind it flows; `mailgate quarantine list|show|reprocess|delete` (JSON with --json) lets an
operator decide, and nothing leaves the quarantine on its own."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from mailgate.services.poison import MAX_CRASHES
from mailgate.store.models import IngestFailure, Outbox, Receipt, Ticket
from tests.conftest import make_mail, send
from tests.support.hygiene import count, crlf, held, poison_trigger, rows, smtp_data
from tests.support.peers import Mailgate


def _mail(subject: str, sender: str = "jean@client.example") -> bytes:
    return crlf(make_mail(sender=sender, subject=subject).as_bytes())


def test_a_crashing_mail_is_quarantined_at_its_third_crash_and_the_mail_behind_flows(
    mailgate: Mailgate, database_url: str
):
    db = mailgate.app.db
    poison = _mail("poison pill")
    with poison_trigger(database_url):
        codes = []
        for attempt in range(MAX_CRASHES):
            codes.append(smtp_data(mailgate.smtp_port, poison)[0])
            assert smtp_data(mailgate.smtp_port, _mail(f"normal {attempt}"))[0] == 250
        assert codes == [451] * (MAX_CRASHES - 1) + [250]
        (failure,) = rows(db, IngestFailure)
        assert failure.attempts == MAX_CRASHES and "injected fault" in failure.last_error
        (item,) = json.loads(mailgate.cli("quarantine", "list", "--json").stdout)
        assert item["reason"].startswith(f"processing crashed {MAX_CRASHES} times: ")
        assert "injected fault" in item["reason"]
        # The MTA retrying once more finds it already kept: 250 and nothing new.
        assert smtp_data(mailgate.smtp_port, poison)[0] == 250
        assert len(held(db)) == 1 and count(db, IngestFailure) == 1
        assert sorted(t.subject for t in rows(db, Ticket)) == [
            f"normal {i}" for i in range(MAX_CRASHES)
        ]
    # The bug is fixed (the trigger is gone): the operator releases the mail.
    out = json.loads(mailgate.cli("quarantine", "reprocess", str(item["id"]), "--json").stdout)
    assert out["outcome"] == "ticketed"
    (released,) = rows(db, Ticket, Ticket.subject == "poison pill")
    assert out["ticket_id"] == released.id
    assert [o.kind for o in rows(db, Outbox, Outbox.ticket_id == released.id)].count(
        "confirmation") == 1
    assert [r.outcome for r in rows(db, Receipt, Receipt.raw_sha256 == item["sha256"])] == [
        "ticketed"]
    assert held(db) == []


def test_quarantine_commands_list_show_reprocess_and_delete(mailgate: Mailgate):
    db = mailgate.app.db
    # Three automatic mails matching no ticket: kept aside, unanswered.
    for name in ("noreply", "postmaster", "mailer-daemon"):
        send(mailgate.smtp_port, make_mail(sender=f"{name}@client.example",
                                           subject=f"From {name}"),
             mail_from=f"{name}@client.example")
    listed = json.loads(mailgate.cli("quarantine", "list", "--json").stdout)
    assert [q["envelope_from"] for q in listed] == [
        "mailer-daemon@client.example", "postmaster@client.example", "noreply@client.example"]
    for q in listed:
        assert isinstance(q["id"], int) and q["status"] == "held"
        assert q["received_at"].endswith("Z") and q["recipient"] == "support@example.com"
        assert "automatic" in q["reason"] and q["size"] > 0 and len(q["sha256"]) == 64
    table = mailgate.cli("quarantine", "list").stdout.decode()
    assert table.splitlines()[0].split() == ["ID", "RECEIVED_AT", "REASON", "RECIPIENT", "SIZE"]
    assert len(table.splitlines()) == 1 + len(listed)

    newest, middle, oldest = (q["id"] for q in listed)
    shown = json.loads(mailgate.cli("quarantine", "show", str(oldest), "--json").stdout)
    assert shown["id"] == oldest and "Subject: From noreply" in shown["headers"]

    # Nothing expires on its own, however long it waits.
    mailgate.app.jobs.run_all(datetime.now(UTC) + timedelta(days=400))
    assert len(held(db)) == 3

    out = json.loads(mailgate.cli("quarantine", "reprocess", str(oldest), "--json").stdout)
    assert out["outcome"] == "ticketed" and isinstance(out["ticket_id"], int)
    assert [t.subject for t in rows(db, Ticket)] == ["From noreply"]
    assert mailgate.cli("quarantine", "delete", str(middle)).stdout.decode().strip() == \
        f"deleted {middle}"
    assert [q["id"] for q in json.loads(mailgate.cli("quarantine", "list", "--json").stdout)] \
        == [newest]
    everything = json.loads(mailgate.cli("quarantine", "list", "--all", "--json").stdout)
    assert {(q["id"], q["status"]) for q in everything} == {(newest, "held"),
                                                            (oldest, "reprocessed")}

    failed = mailgate.cli("quarantine", "show", str(middle), check=False)
    assert failed.returncode == 1
    assert failed.stderr.decode().splitlines() == [f"mailgate: no quarantined mail {middle}"]
    again = mailgate.cli("quarantine", "reprocess", str(oldest), check=False)
    assert again.returncode == 1  # released once, not twice
