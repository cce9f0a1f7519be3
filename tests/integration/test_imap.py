"""IMAP intake against a real Dovecot: mail another client APPENDs becomes a ticket and moves to
Processed; IDLE wakes the poller; one broken mailbox never stops another; UIDVALIDITY; a crash
between commit and move; oversized and refused mail go to Failed."""

from __future__ import annotations

import email.policy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlmodel import select

from mailgate import config as config_mod
from mailgate.adapters.imap import ImapPoller, mailbox_key, move
from mailgate.app import App, build
from mailgate.services.ingest import INLINE_RAW_BYTES, Envelope
from mailgate.services.ticket_views import list_tickets
from mailgate.store.models import Outbox, Quarantine
from tests.conftest import make_mail
from tests.support.peers import ROOT, Mailgate, wait_until

if TYPE_CHECKING:
    from tests.support.dovecot import ImapAccount

pytest_plugins = ["tests.support.dovecot"]

SUPPORT = "support@example.com"


def raw_mail(**kwargs: str) -> bytes:
    return make_mail(**kwargs).as_bytes(policy=email.policy.SMTP)


@pytest.fixture
def config_extra(request: pytest.FixtureRequest, imap_account: ImapAccount) -> str:
    """The test's mailbox; parametrize indirectly with a folder name to poll another folder."""
    return imap_account.toml(folder=getattr(request, "param", "INBOX"))


@pytest.fixture
def app(config_path: Path) -> Iterator[App]:
    built = build(config_mod.load(config_path))
    built.db.upgrade()
    yield built
    built.db.dispose()


def poller(app: App, index: int = 0) -> ImapPoller:
    """A fresh poller, as after a restart (it remembers nothing but the database)."""
    box = app.config.imap.mailboxes[index]
    return ImapPoller(
        box, app.ingestor, app.imap_state, app.metrics, recipient=box.address or SUPPORT
    )


def tickets(app: App) -> list[dict]:
    with app.db.read() as session:
        return list_tickets(session, None)


def test_pass_tickets_read_and_unread_mail_and_moves_it_unseen(app: App, imap_account):
    # A person already read the first one in their mail client: it must not be hidden.
    read = imap_account.append(raw_mail(subject="Deja lu"), flags=(b"\\Seen",))
    unread = imap_account.append(raw_mail(subject="Pas encore lu", sender="ana@client.example"))

    report = poller(app).run_once()

    assert report.stored == [read, unread]
    assert sorted(t["subject"] for t in tickets(app)) == ["Deja lu", "Pas encore lu"]
    assert imap_account.messages("INBOX") == {}
    processed = imap_account.messages("Processed")
    assert len(processed) == 2
    flags = {raw.split(b"Subject: ")[1].split(b"\r\n")[0]: f for raw, f in processed.values()}
    assert b"\\Seen" in flags[b"Deja lu"]
    assert b"\\Seen" not in flags[b"Pas encore lu"]  # BODY.PEEK: we read without marking
    with app.db.read() as session:
        kinds = sorted(o.kind for o in session.exec(select(Outbox)))
    assert kinds.count("confirmation") == 2


def test_idle_wakes_the_poller(mailgate: Mailgate, imap_account):
    app = mailgate.app
    name = mailbox_key(app.config.imap.mailboxes[0])
    # poll_seconds is an hour: only an IDLE notification can bring this mail in quickly.
    assert app.config.imap.mailboxes[0].poll_seconds == 3600
    wait_until(lambda: app.mailboxes.get(name) == "idle", 15, "the poller to enter IDLE")

    imap_account.append(raw_mail(subject="Réveille-toi"))

    wait_until(lambda: len(tickets(app)) == 1, 15, "the IDLE wake-up to ticket the mail")
    assert tickets(app)[0]["subject"] == "Réveille-toi"
    wait_until(lambda: len(imap_account.messages("Processed")) == 1, 10, "the move")
    assert imap_account.messages("INBOX") == {}


class TestBrokenMailbox:
    @pytest.fixture
    def config_extra(self, imap_account: ImapAccount) -> str:
        broken = imap_account.toml(username="nobody-here", password="wrong")
        return broken + imap_account.toml()

    def test_a_failing_mailbox_does_not_stop_the_others(self, mailgate: Mailgate, imap_account):
        app = mailgate.app
        bad, good = (mailbox_key(b) for b in app.config.imap.mailboxes)
        wait_until(lambda: app.mailboxes.get(good) == "idle", 15, "the good mailbox to IDLE")
        wait_until(lambda: "LoginError" in app.mailboxes.get(bad, ""), 15, "the login failure")

        imap_account.append(raw_mail(subject="Toujours servi"))

        wait_until(lambda: len(tickets(app)) == 1, 15, "the good mailbox to ticket its mail")
        assert app.mailboxes[good] in ("working", "idle")


@pytest.mark.parametrize("config_extra", ["Support"], indirect=True)
def test_uidvalidity_change_starts_the_cursor_over(app: App, imap_account):
    first = raw_mail(subject="Avant")
    imap_account.append(first, folder="Support")
    assert poller(app).run_once().stored == [1]
    before = imap_account.uidvalidity("Support")

    # The folder is re-created (a restore, a server migration): UIDs start at 1 again.
    with imap_account.client() as c:
        c.delete_folder("Support")
        c.create_folder("Support")
    imap_account.append(raw_mail(subject="Après"), folder="Support")
    imap_account.append(first, folder="Support")  # the old one comes back too
    assert imap_account.uidvalidity("Support") != before

    report = poller(app).run_once()

    # Without the UIDVALIDITY check UID 1 would look handled and "Après" would be lost.
    assert report.stored == [1, 2]
    assert sorted(t["subject"] for t in tickets(app)) == ["Après", "Avant"]


def test_commit_then_crash_before_move_tickets_once(app: App, imap_account):
    raw = raw_mail(subject="Une seule fois")
    uid = imap_account.append(raw)
    # A previous run committed this message and died before the cursor and the move.
    app.ingestor.ingest(raw, Envelope(mail_from=None, recipients=(SUPPORT,), channel="imap"))

    report = poller(app).run_once()

    assert report.stored == [uid]  # fetched again; the Message-ID dedupe says "duplicate"
    assert len(tickets(app)) == 1
    with app.db.read() as session:
        assert len(list(session.exec(select(Outbox).where(Outbox.kind == "confirmation")))) == 1
    assert list(imap_account.messages("Processed")) and imap_account.messages("INBOX") == {}


def test_commit_and_cursor_then_crash_before_move_only_moves(app: App, imap_account):
    raw = raw_mail(subject="Déjà engagé")
    uid = imap_account.append(raw)
    name = mailbox_key(app.config.imap.mailboxes[0])
    uidvalidity = imap_account.uidvalidity("INBOX")
    # This time the cursor was saved too: the restarted poller must not even fetch it.
    app.ingestor.ingest(raw, Envelope(mail_from=None, recipients=(SUPPORT,), channel="imap"))
    app.imap_state.last_uid(name, uidvalidity)
    app.imap_state.advance(name, uidvalidity, uid)

    report = poller(app).run_once()

    assert (report.already, report.stored) == ([uid], [])
    assert len(tickets(app)) == 1
    assert len(imap_account.messages("Processed")) == 1


def test_oversized_mail_goes_to_failed_and_quarantine_unfetched(app: App, imap_account):
    limit = app.config.inbound.max_message_bytes
    big = raw_mail(subject="Trop gros", body=("x" * 76 + "\n") * (limit // 77 + 100))
    assert len(big) > limit
    uid = imap_account.append(big)

    report = poller(app).run_once()

    assert report.failed == [uid]
    assert tickets(app) == []
    failed = imap_account.messages("Failed")
    assert [len(raw) for raw, _ in failed.values()] == [len(big)]
    assert imap_account.messages("INBOX") == {}
    with app.db.read() as session:
        (q,) = session.exec(select(Quarantine)).all()
    assert q.size == len(big) and "too big" in q.reason and q.channel == "imap"
    kept = app.blobs.get(q.raw_sha256)
    assert kept.startswith(b"From: ") and b"Subject: Trop gros" in kept
    assert len(kept) < 4096  # the headers only: the body was never fetched


def test_refused_mail_goes_to_failed(app: App, imap_account):
    looping = raw_mail(subject="Boucle")
    looping = b"".join(b"Received: from hop%d\r\n" % i for i in range(60)) + looping
    uid = imap_account.append(looping)

    report = poller(app).run_once()

    assert report.failed == [uid]
    assert tickets(app) == []
    assert len(imap_account.messages("Failed")) == 1


def test_temporary_failure_leaves_the_mail_for_the_next_pass(app: App, imap_account):
    # Over INLINE_RAW_BYTES: its raw bytes are a blob (a smaller one goes into the database).
    raw = raw_mail(subject="Disque plein", body="Bonjour, une ligne de texte.\n" * 3000)
    assert len(raw) > INLINE_RAW_BYTES
    uid = imap_account.append(raw)
    blobs = app.blobs.root
    blobs.parent.mkdir(parents=True, exist_ok=True)
    blobs.write_text("not a folder")  # the blob store cannot write: a real OSError -> 451-like

    first = poller(app).run_once()

    assert first.left == [uid] and first.stored == []
    assert list(imap_account.messages("INBOX")) == [uid]  # untouched, still unseen
    assert imap_account.messages("INBOX")[uid][1] == ()
    assert tickets(app) == []

    blobs.unlink()  # the operator frees the disk
    assert poller(app).run_once().stored == [uid]
    assert len(tickets(app)) == 1


def test_move_without_move_capability_expunges_only_ours(imap_account):
    ours = imap_account.append(raw_mail(subject="À déplacer"))
    theirs = imap_account.append(raw_mail(subject="Supprimé ailleurs"), flags=(b"\\Deleted",))
    with imap_account.client() as c:
        c.create_folder("Processed")
        c.select_folder("INBOX")
        move(c, [ours], "Processed", use_move=False)  # COPY + \Deleted + UID EXPUNGE
    # Someone else's \Deleted message is theirs to expunge, not ours.
    assert list(imap_account.messages("INBOX")) == [theirs]
    assert len(imap_account.messages("Processed")) == 1


class TestCheckConfig:
    @pytest.fixture
    def config_extra(self, imap_account: ImapAccount) -> str:
        return (
            imap_account.toml()
            + imap_account.toml(password="wrong")
            + imap_account.toml(folder="Nowhere")
        )

    def test_one_line_per_mailbox(self, config_path: Path, imap_account):
        proc = subprocess.run(
            [sys.executable, "-m", "mailgate", "--config", str(config_path), "check-config"],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )
        lines = [x for x in proc.stdout.splitlines() if " imap " in x]
        assert proc.returncode == 78, proc.stdout + proc.stderr
        user = imap_account.user
        assert len(lines) == 3
        assert lines[0].startswith(f"ok   imap {user}@127.0.0.1:") and "login ok" in lines[0]
        assert "will create Processed, Failed" in lines[0]
        assert lines[1].startswith("FAIL imap") and "AUTHENTICATIONFAILED" in lines[1]
        assert lines[2].startswith("FAIL imap") and "'Nowhere' does not exist" in lines[2]
