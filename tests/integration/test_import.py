"""`mailgate import PATH`: an mbox file or a Maildir becomes tickets, threaded like live mail,
mailing no one; running it again imports nothing twice."""

from __future__ import annotations

import json
import mailbox
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlmodel import select

from mailgate import config as config_mod
from mailgate.app import build
from mailgate.services.ticket_views import list_tickets, show_ticket
from mailgate.store.models import Outbox, Quarantine
from tests.conftest import make_mail
from tests.support.peers import ROOT

pytestmark = pytest.mark.postgres  # the database engine matters here: run on both

QUESTION = "<q1@client.example>"


def history() -> list[bytes]:
    """A support mailbox, deliberately out of order: the reply is stored before its question."""
    reply = make_mail(
        subject="Re: Imprimante en panne",
        body="Toujours en panne ce matin.\n",
        message_id="<q1-reply@client.example>",
        headers={
            "Date": "Tue, 04 Mar 2025 08:00:00 +0100",
            "In-Reply-To": QUESTION,
            "References": QUESTION,
        },
    )
    question = make_mail(message_id=QUESTION, headers={"Date": "Mon, 03 Mar 2025 10:00:00 +0100"})
    billing = make_mail(
        sender="Ana <ana@client.example>",
        to="Billing <billing@example.com>",
        subject="Facture en double",
        message_id="<b1@client.example>",
        headers={"Date": "Mon, 03 Mar 2025 12:00:00 +0000"},
    )
    vacation = make_mail(
        sender="bob@client.example",
        subject="Absent du bureau",
        message_id="<v1@client.example>",
        headers={"Date": "Mon, 03 Mar 2025 13:00:00 +0000", "Auto-Submitted": "auto-replied"},
    )
    return [m.as_bytes() for m in (reply, question, billing, vacation)]


def write_mbox(path: Path) -> Path:
    box = mailbox.mbox(path)
    for raw in history():
        box.add(raw)
    box.flush()
    box.close()
    return path


def write_maildir(path: Path) -> Path:
    box = mailbox.Maildir(path, create=True)
    for raw in history():
        box.add(raw)
    return path


def mailgate(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("MAILGATE_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "mailgate", "--config", str(config_path), *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )


@dataclass
class Stored:
    tickets: list[dict]
    threads: dict[str, list[str]]  # subject -> Message-IDs, in order
    outbox: int
    quarantined: int


def stored(config_path: Path) -> Stored:
    """What the database holds, read in-process (a CLI start per question is slow)."""
    app = build(config_mod.load(config_path))
    try:
        with app.db.read() as session:
            tickets = list_tickets(session, None)
            threads = {
                t["subject"]: [m["message_id"] for m in show_ticket(session, t["id"])["messages"]]
                for t in tickets
            }
            outbox = len(session.exec(select(Outbox)).all())
            held = len(session.exec(select(Quarantine)).all())
    finally:
        app.db.dispose()
    return Stored(tickets, threads, outbox, held)


@pytest.mark.parametrize("make_source", [write_mbox, write_maildir], ids=["mbox", "maildir"])
def test_import_threads_like_live_mail_sends_nothing_and_reruns_idempotently(
    config_path: Path, tmp_path: Path, make_source
):
    source = make_source(tmp_path / "support-history")

    first = mailgate(config_path, "import", str(source))

    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("imported 3, duplicates 0, quarantined 1,")
    assert "import 4/4" in first.stderr  # progress
    db = stored(config_path)
    assert db.threads == {  # the reply, stored first, still found its question's ticket
        "Imprimante en panne": [QUESTION.strip("<>"), "q1-reply@client.example"],
        "Facture en double": ["b1@client.example"],
    }
    categories = {t["subject"]: t["category"] for t in db.tickets}
    assert categories["Facture en double"] == "Billing"  # To: billing@ decided it
    assert (db.outbox, db.quarantined) == (0, 1)  # nobody was mailed

    again = mailgate(config_path, "import", str(source), "--json")

    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert (summary["imported"], summary["duplicates"], summary["quarantined"]) == (0, 4, 0)
    assert stored(config_path) == db


def test_import_of_a_missing_path_fails_with_one_line(config_path: Path, tmp_path: Path):
    proc = mailgate(config_path, "import", str(tmp_path / "nope"))
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        f"mailgate: no such mbox file or Maildir folder: {tmp_path / 'nope'}"
    ]


def test_import_recipient_must_be_ours(config_path: Path, tmp_path: Path):
    proc = mailgate(config_path, "import", str(write_mbox(tmp_path / "m")),
                    "--recipient", "someone@else.example")
    assert proc.returncode == 78
    assert "is not one of our [addresses]" in proc.stderr
