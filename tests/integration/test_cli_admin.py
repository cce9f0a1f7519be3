"""Issue 12, the agents' desk from the command line: `agent add|list|remove`, `ticket
status|assign|attachment`, the ticket JSON's assignee/deleted/fields, help on every option,
and a listing piped into `head` ending quietly. Each command runs as the real `mailgate`
process against a real database (SQLite, and PostgreSQL when MAILGATE_TEST_DATABASE_URL is
set); tickets arrive through `mailgate deliver`."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from mailgate import config as config_mod
from mailgate.cli import main, parser, safe_filename
from mailgate.core.tokens import ACTIVATE, RESET
from mailgate.services.ingest import Envelope
from mailgate.services.ticket_views import show_ticket
from mailgate.store.db import Database
from mailgate.store.models import Account, Attachment, Message, Outbox, Ticket, TicketEvent
from mailgate.wiring import Core, build_for_ingest
from tests.conftest import make_mail
from tests.support.mailflow import mail_bytes, run_cli
from tests.support.peers import ROOT

# SQLite only with PostgreSQL present too: these test the commands (arguments, output, exit
# codes); what they change runs through the services, which tests/service runs on both.

EX_USAGE, EX_SIGPIPE = 64, 141
BASE_URL = "http://127.0.0.1:8025"  # write_config's [portal] base_url without a portal
ALICE, BOB = "alice@example.com", "bob@example.com"
JEAN, MARIE = "jean@client.example", "marie@client.example"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def config(config_path: Path) -> Path:
    """A config whose database has its schema."""
    upgraded = run_cli(config_path, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr.decode()
    return config_path


@pytest.fixture
def core(config: Path) -> Iterator[Core]:
    """The same services in this process, to look at what the commands did."""
    built = build_for_ingest(config_mod.load(config))
    yield built
    built.db.dispose()


def ok(config: Path, *args: str) -> str:
    """Run a command that must succeed quietly; its standard output."""
    proc = run_cli(config, *args)
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}: {proc.stderr.decode()}"
    assert proc.stderr == b"", proc.stderr.decode()  # no log line without --verbose
    return proc.stdout.decode()


Refused = Callable[..., tuple[int, str]]


@pytest.fixture
def refused(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Refused:
    """Runs a command that must fail with one clear line on stderr; (exit code, that line).
    In this process (main(), the console script's function): no start-up cost per case."""
    monkeypatch.delenv("MAILGATE_DATABASE_URL", raising=False)

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(["--config", str(config), *args])
        out, err = capsys.readouterr()
        assert code != 0, out
        assert err.count("\n") == 1 and err.startswith("mailgate: "), err
        return code, err.strip()

    return run


def deliver(core: Core, msg: EmailMessage, rcpt: str = "support@example.com") -> int:
    """What `mailgate deliver` does with a mail (its ingest path), in this process: a
    command's start-up costs a second on a busy machine, and these mails only set the scene."""
    sender = msg["From"].addresses[0].addr_spec
    envelope = Envelope(mail_from=sender, recipients=(rcpt,), channel="deliver")
    (delivery,) = core.ingestor.ingest(mail_bytes(msg), envelope)
    assert delivery.ticket_id is not None
    return delivery.ticket_id


def open_ticket(core: Core, customer: str = JEAN, subject: str = "Imprimante") -> int:
    return deliver(core, make_mail(sender=customer, subject=subject))


def ticket_json(core: Core, ticket_id: int) -> dict[str, Any]:
    """What `ticket show --json` prints (the same function), read in this process."""
    with core.db.read() as session:
        shown = show_ticket(session, ticket_id)
    assert shown is not None
    return json.loads(json.dumps(shown))


def account(core: Core, email: str) -> Account:
    with core.db.read() as session:
        found = core.accounts.find(session, email)
        assert found is not None
        return found


def events(core: Core, ticket_id: int, kind: str) -> list[TicketEvent]:
    with core.db.read() as session:
        return list(
            session.exec(
                select(TicketEvent)
                .where(TicketEvent.ticket_id == ticket_id, TicketEvent.kind == kind)
                .order_by(col(TicketEvent.id))
            )
        )


def outbox(core: Core, to: str, kind: str) -> list[Outbox]:
    with core.db.read() as session:
        return list(session.exec(select(Outbox).where(Outbox.to_addr == to, Outbox.kind == kind)))


# -- agent add / list ----------------------------------------------------------------------


def test_agent_add_mails_an_activation_link_or_prints_it(
    config: Path, core: Core, refused: Refused
):
    out = ok(config, "agent", "add", ALICE, "--name", "Alice Martin")
    assert out.startswith("agent ") and "activation mail queued" in out
    assert len(outbox(core, ALICE, "activation")) == 1

    # --print-link: the link alone on stdout, no mail; it is a working activation link.
    link = ok(config, "agent", "add", BOB, "--name", "Bob", "--print-link").strip()
    assert link.startswith(f"{BASE_URL}/activate/") and "\n" not in link
    assert outbox(core, BOB, "activation") == []
    with core.db.read() as session:
        opened = core.accounts.account_for_link(session, ACTIVATE, link.rsplit("/", 1)[1])
        assert opened is not None and opened.email == BOB

    # A customer made by their first mail becomes an agent: the same account, promoted.
    open_ticket(core, JEAN)
    jean_id = account(core, JEAN).id
    ok(config, "agent", "add", JEAN, "--name", "Jean")
    promoted = account(core, JEAN)
    assert (promoted.id, promoted.role) == (jean_id, "agent")

    # An agent with a password already gets no link: there is nothing to activate.
    with core.db.write() as session:
        core.accounts.set_password(session, account(core, BOB), PASSWORD)
    proc = run_cli(config, "agent", "add", BOB, "--name", "Bob", "--print-link")
    assert proc.returncode == 0 and proc.stdout == b""
    assert "already active" in proc.stderr.decode()

    code, line = refused("agent", "add", "not-an-address", "--name", "X")
    assert code == EX_USAGE and "not-an-address" in line


def test_agent_list_as_json_and_as_a_table(config: Path, core: Core):
    with core.db.write() as session:
        core.accounts.add_agent(session, ALICE, "Alice Martin")
        core.accounts.add_agent(session, BOB, "Bob Durand")
    open_ticket(core, JEAN)  # a customer: not listed

    agents = json.loads(ok(config, "agent", "list", "--json"))
    assert [a["email"] for a in agents] == [ALICE, BOB]
    first = agents[0]
    assert {"id", "email", "name", "role", "active", "locale", "disabled"} <= first.keys()
    assert isinstance(first["id"], int)
    assert (first["name"], first["role"], first["active"], first["disabled"]) == (
        "Alice Martin",
        "agent",
        False,
        False,
    )

    table = ok(config, "agent", "list").splitlines()
    assert table[0].split()[:3] == ["ID", "EMAIL", "NAME"]
    assert any(ALICE in row and "Alice Martin" in row for row in table[1:])
    assert not any(JEAN in row for row in table)


# -- agent remove --------------------------------------------------------------------------


def test_agent_remove_unassigns_signs_out_and_ends_the_agents_powers(
    config: Path, core: Core, refused: Refused
):
    from mailgate.app import build

    ok(config, "agent", "add", ALICE, "--name", "Alice Martin", "--print-link")
    with core.db.write() as session:
        core.accounts.add_agent(session, BOB, "Bob Durand")
    first = open_ticket(core, JEAN, "Imprimante")
    second = open_ticket(core, MARIE, "Scanner")
    alice = account(core, ALICE)
    with core.db.write() as session:
        for ticket_id in (first, second):
            ticket = session.get(Ticket, ticket_id)
            assert ticket is not None
            core.conversations.agents.assign(session, ticket, alice, alice)
    token_address = core.conversations.reply_address(first, alice.id or 0)

    # Before: Alice's reply through her token acts as an agent's on the ticket.
    deliver(
        core,
        make_mail(sender=f"Alice <{ALICE}>", subject="Re: x", body="Redémarrez."),
        rcpt=token_address,
    )
    assert [m["role"] for m in ticket_json(core, first)["messages"]] == ["customer", "agent"]

    # ...and she has a portal password and a session.
    app = build(config_mod.load(config))
    try:
        with core.db.write() as session:
            core.accounts.set_password(session, account(core, ALICE), PASSWORD)
        signed_in = app.portal.accounts.sign_in(ALICE, PASSWORD, "192.0.2.1", None)
        assert signed_in.ok and app.portal.accounts.current(signed_in.cookie) is not None
        with core.db.read() as session:
            reset_token = core.accounts.links.make(
                RESET, alice.id or 0, account(core, ALICE).security_stamp
            )
            assert core.accounts.account_for_link(session, RESET, reset_token) is not None

        out = ok(config, "agent", "remove", ALICE)
        assert "2 tickets unassigned" in out and f"#{first}" in out and f"#{second}" in out

        # Her tickets are nobody's, each unassignment recorded like an assignment.
        for ticket_id in (first, second):
            assert ticket_json(core, ticket_id)["assignee"] is None
            assign_events = events(core, ticket_id, "assign")
            assert [e.detail for e in assign_events] == [ALICE, ""]
            assert assign_events[-1].actor_id is None  # the operator, not an account
        listed = {a["email"]: a for a in json.loads(ok(config, "agent", "list", "--json"))}
        assert listed[ALICE]["disabled"] is True and listed[ALICE]["disabled_at"]
        assert listed[ALICE]["role"] == "customer" and listed[BOB]["disabled"] is False

        # Her session is over, her password and her links no longer let her in.
        assert app.portal.accounts.current(signed_in.cookie) is None
        assert app.portal.accounts.sign_in(ALICE, PASSWORD, "192.0.2.1", None).status == (
            "bad_credentials"
        )
        with core.db.read() as session:
            assert core.accounts.account_for_link(session, RESET, reset_token) is None
            fresh = core.accounts.links.make(
                RESET, alice.id or 0, account(core, ALICE).security_stamp
            )
            assert core.accounts.account_for_link(session, RESET, fresh) is None

        # Her mail through the same token is a stranger's now: a ticket of her own.
        as_stranger = make_mail(sender=f"Alice <{ALICE}>", subject="Re: x", body="#status solved")
        own = deliver(core, as_stranger, rcpt=token_address)
        after = ticket_json(core, first)
        assert len(after["messages"]) == 2 and after["status"] != "solved"
        assert own not in (first, second) and ticket_json(core, own)["requester"] == ALICE

        # She is told of no new ticket, and cannot be given one.
        third = open_ticket(core, MARIE, "Écran")
        assert {o.ticket_id for o in outbox(core, ALICE, "agent_notification")} == {first, second}
        assert {o.ticket_id for o in outbox(core, BOB, "agent_notification")} >= {third}
        code, line = refused("ticket", "assign", str(third), ALICE)
        assert code == EX_USAGE and "not an agent" in line

        # Removing her again changes nothing; an unknown agent is an error.
        assert "already" in ok(config, "agent", "remove", ALICE)
        code, line = refused("agent", "remove", "nobody@example.com")
        assert code == 1 and "nobody@example.com" in line
        code, line = refused("agent", "remove", JEAN)  # a customer is no agent
        assert code == 1

        # `agent add` enables her again, with her password.
        ok(config, "agent", "add", ALICE, "--name", "Alice Martin")
        again = account(core, ALICE)
        assert (again.role, again.disabled_at) == ("agent", None)
        assert app.portal.accounts.sign_in(ALICE, PASSWORD, "192.0.2.2", None).ok
    finally:
        app.db.dispose()


# -- ticket status / assign ----------------------------------------------------------------


def test_ticket_status_changes_it_as_an_agent_would(config: Path, core: Core, refused: Refused):
    ticket_id = open_ticket(core)
    assert ok(config, "ticket", "status", str(ticket_id), "Pending").strip() == (
        f"ticket {ticket_id}: new -> pending"
    )
    shown = ticket_json(core, ticket_id)
    assert shown["status"] == "pending"
    with core.db.read() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None and ticket.pending_since is not None  # the auto-resolve clock
    ok(config, "ticket", "status", str(ticket_id), "solved")
    assert [e.detail for e in events(core, ticket_id, "status")] == [
        "new->pending",
        "pending->solved",
    ]

    for bad in ("bogus", "new"):  # `new` is no status an agent sets
        code, line = refused("ticket", "status", str(ticket_id), bad)
        assert code == EX_USAGE and repr(bad) in line
    code, line = refused("ticket", "status", "9999", "open")
    assert code == 1 and line == "mailgate: no ticket 9999"
    # The same from the real command: that one line is all of its stderr.
    proc = run_cli(config, "ticket", "status", str(ticket_id), "bogus")
    assert proc.returncode == EX_USAGE and proc.stdout == b""
    assert (
        proc.stderr.decode() == "mailgate: not a status: 'bogus' (one of open, pending, "
        "solved, closed)\n"
    )
    assert ticket_json(core, ticket_id)["status"] == "solved"

    verbose = run_cli(config, "ticket", "status", str(ticket_id), "open", "--verbose")
    assert verbose.returncode == 0 and "event=ticket.status" in verbose.stderr.decode()


def test_ticket_assign_to_an_agent_or_to_nobody(config: Path, core: Core, refused: Refused):
    with core.db.write() as session:
        core.accounts.add_agent(session, ALICE, "Alice Martin")
    ticket_id = open_ticket(core)
    assert ok(config, "ticket", "assign", str(ticket_id), ALICE.upper()).strip() == (
        f"ticket {ticket_id}: assigned to {ALICE}"
    )
    assert ticket_json(core, ticket_id)["assignee"] == ALICE
    table = ok(config, "ticket", "list").splitlines()
    assert "ASSIGNEE" in table[0] and ALICE in table[1]

    code, line = refused("ticket", "assign", str(ticket_id), JEAN)  # a customer
    assert code == EX_USAGE and JEAN in line
    code, line = refused("ticket", "assign", str(ticket_id), "ghost@example.com")
    assert code == EX_USAGE
    code, line = refused("ticket", "assign", "9999", ALICE)
    assert code == 1 and "9999" in line
    assert ticket_json(core, ticket_id)["assignee"] == ALICE

    ok(config, "ticket", "assign", str(ticket_id), "none")
    assert ticket_json(core, ticket_id)["assignee"] is None
    assert [e.detail for e in events(core, ticket_id, "assign")] == [ALICE, ""]


# -- ticket attachment ---------------------------------------------------------------------


def mail_with_attachments(files: list[tuple[str, bytes]]) -> EmailMessage:
    msg = make_mail(sender=JEAN, subject="Pièces jointes")
    for name, data in files:
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return msg


HOSTILE = [
    # (name as a customer's mail client could send it, where it must land)
    ("rapport.pdf", "rapport.pdf"),
    ("../../escape.txt", "escape.txt"),
    ("/etc/cron.d/evil", "etccron.devil"),
    ("..\\..\\windows.txt", "windows.txt"),
    ("..", "attachment"),
    ("", "attachment"),
    ("\x1b[31mred\x07.txt", "[31mred.txt"),  # (PostgreSQL text holds no NUL)
    ("invoice\u202efdp.exe", "invoicefdp.exe"),  # the RTL override that fakes ".pdf"
    ("rapport.pdf", "rapport (3).pdf"),  # a third rapport.pdf: see the pre-existing file
]


def test_ticket_attachment_writes_every_file_safely(
    config: Path, core: Core, tmp_path: Path, refused: Refused
):
    files = [(f"file{i}.bin", f"content {i}".encode()) for i in range(len(HOSTILE))]
    ticket_id = deliver(core, mail_with_attachments(files))
    # The names a mail brings are already cleaned when stored; rows written by other paths
    # (an import, an older version) may hold anything: give the rows the hostile names.
    with core.db.write() as session:
        rows = session.exec(
            select(Attachment)
            .join(Message, col(Message.id) == Attachment.message_pk)
            .where(Message.ticket_id == ticket_id)
            .order_by(col(Attachment.id))
        ).all()
        assert len(rows) == len(HOSTILE)
        for row, (name, _) in zip(rows, HOSTILE, strict=True):
            row.filename = name
            session.add(row)

    out = tmp_path / "deep" / "down" / "out"
    out.mkdir(parents=True)
    (out / "rapport.pdf").write_bytes(b"mine, not theirs")
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"untouched")
    (out / "escape.txt").symlink_to(outside)  # a trap: writing through it would escape

    printed = ok(config, "ticket", "attachment", str(ticket_id), "--out", str(out))
    written = [Path(line) for line in printed.splitlines()]
    assert len(written) == len(HOSTILE)
    expected = [name for _, name in HOSTILE]
    expected[0] = "rapport (2).pdf"  # rapport.pdf was there already
    expected[1] = "escape (2).txt"  # so was escape.txt (the symbolic link)
    expected[4], expected[5] = "attachment", "attachment (2)"
    assert [p.name for p in written] == expected
    for path, (_, data) in zip(written, files, strict=True):
        assert path.parent == out and path.read_bytes() == data
    assert (out / "rapport.pdf").read_bytes() == b"mine, not theirs"
    assert outside.read_bytes() == b"untouched"
    assert sorted(p.name for p in (tmp_path / "deep").rglob("*")) == sorted(
        ["down", "out", "rapport.pdf", "escape.txt", *expected]
    )

    # Without --out: the current folder.
    here = tmp_path / "here"
    here.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailgate",
            "--config",
            str(config),
            "ticket",
            "attachment",
            str(ticket_id),
        ],
        capture_output=True,
        cwd=here,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "MAILGATE_DATABASE_URL"},
    )
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr.decode()
    in_here = ["rapport.pdf", "escape.txt", *expected[2:-1], "rapport (2).pdf"]
    assert proc.stdout.decode().splitlines() == in_here
    assert sorted(p.name for p in here.iterdir()) == sorted(in_here)
    assert (here / "rapport.pdf").read_bytes() == files[0][1]

    code, line = refused("ticket", "attachment", "9999", "--out", str(out))
    assert code == 1 and "9999" in line


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("../../../etc/passwd", "etcpasswd"),
        ("C:\\Windows\\system.ini", "C:Windowssystem.ini"),
        ("  .hidden  ", "hidden"),
        ("...", "attachment"),
        ("tab\there\nnewline", "tabherenewline"),
        ("x" * 300 + ".pdf", "x" * 196 + ".pdf"),
        ("é" * 150, "é" * 100),  # bytes, not characters: 200 bytes of UTF-8
    ],
)
def test_safe_filename(name: str, safe: str):
    assert safe_filename(name) == safe


# -- ticket JSON ---------------------------------------------------------------------------


OLD_KEYS = {
    "id",
    "subject",
    "status",
    "requester",
    "category",
    "created_at",
    "updated_at",
    "message_count",
}


def test_ticket_json_has_assignee_deleted_and_fields(config: Path, core: Core):
    plain = open_ticket(core, JEAN, "Sans champs")
    filled = open_ticket(core, MARIE, "Avec champs")
    with core.db.write() as session:
        alice = core.accounts.add_agent(session, ALICE, "Alice Martin")
        ticket = session.get(Ticket, filled)
        assert ticket is not None
        # As the portal's form stores them (customer_id, problem, broadcaster), and a
        # deletion by the customer.
        ticket.customer_ref = "C-1234"
        ticket.problem = "No picture"
        ticket.customer_deleted_at = datetime.now(UTC) - timedelta(minutes=1)
        core.conversations.agents.assign(session, ticket, alice, alice)

    listed = {t["id"]: t for t in json.loads(ok(config, "ticket", "list", "--json"))}
    shown = {
        ticket_id: json.loads(ok(config, "ticket", "show", str(ticket_id), "--json"))
        for ticket_id in (plain, filled)
    }
    for ticket_id in (plain, filled):
        for data in (listed[ticket_id], shown[ticket_id]):
            assert OLD_KEYS | {"assignee", "deleted", "fields"} <= data.keys()
        assert "messages" in shown[ticket_id]
    for data in (listed[plain], shown[plain]):
        assert (data["assignee"], data["deleted"]) == (None, False)
        assert data["fields"] == {"customer_id": None, "problem": None, "broadcaster": None}
    for data in (listed[filled], shown[filled]):
        assert (data["assignee"], data["deleted"]) == (ALICE, True)
        assert data["fields"] == {
            "customer_id": "C-1234",
            "problem": "No picture",
            "broadcaster": None,
        }


# -- help, quiet pipes ---------------------------------------------------------------------


def _undocumented(p: argparse.ArgumentParser, path: str) -> list[str]:
    missing = []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {c.dest: c.help for c in action._choices_actions}
            for name, child in action.choices.items():
                if not helps.get(name):
                    missing.append(f"{path} {name}")
                missing += _undocumented(child, f"{path} {name}")
        elif not action.help:
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_command_and_option_has_help():
    assert _undocumented(parser(), "mailgate") == []


def test_a_listing_piped_into_head_ends_quietly(config: Path, database_url: str):
    db = Database(database_url)
    try:
        now = datetime.now(UTC)
        with db.write() as session:
            jean = Account(email=JEAN, security_stamp=uuid.uuid4().hex, created_at=now)
            session.add(jean)
            session.flush()
            session.add_all(
                Ticket(
                    subject=f"Ticket {i} " + "x" * 200,
                    requester_id=jean.id or 0,
                    created_at=now,
                    updated_at=now,
                    last_exchange_at=now,
                )
                for i in range(600)
            )
    finally:
        db.dispose()
    mailgate = Path(sys.executable).with_name("mailgate")  # the console script itself
    env = {k: v for k, v in os.environ.items() if k != "MAILGATE_DATABASE_URL"}
    for listing in (["ticket", "list", "--json"], ["ticket", "list"]):
        # Far more than a pipe holds (64 KiB): the writes after `head` left must fail.
        listed = subprocess.Popen(
            [str(mailgate), "--config", str(config), *listing],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        assert listed.stdout is not None and listed.stderr is not None
        head = subprocess.Popen(["head", "-1"], stdin=listed.stdout, stdout=subprocess.PIPE)
        listed.stdout.close()  # head is the only reader: once it exits, writes fail (EPIPE)
        first_line, _ = head.communicate(timeout=60)
        err = listed.stderr.read()
        listed.wait(timeout=60)
        assert first_line.decode().startswith("[" if "--json" in listing else "ID")
        assert err == b"", err.decode()  # no BrokenPipeError traceback, no "Exception ignored"
        assert listed.returncode == EX_SIGPIPE
