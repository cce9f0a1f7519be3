"""Issue 2, point 7: `mailgate deliver` (a Postfix pipe) reads one message on stdin and exits
0 when stored, 65 when it refuses the message for good, 75 when the MTA should try again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from mailgate.store.db import Database
from mailgate.store.models import Quarantine, Ticket
from tests.conftest import make_mail
from tests.support.mailflow import (
    blob_store_broken,
    counts,
    data_dir_of,
    inserts_refused,
    mail_bytes,
    outbox_rows,
    run_cli,
    sha256,
)
from tests.support.peers import free_port

EX_OK, EX_DATAERR, EX_TEMPFAIL = 0, 65, 75
DATA = Path(__file__).resolve().parents[1] / "data" / "inbound"


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def deliver(config_path: Path, raw: bytes, *args: str, env: dict[str, str] | None = None):
    return run_cli(config_path, "deliver", *args, stdin=raw, env=env)


def assert_one_clear_line(stderr: bytes, starts: str, crash: bool = False) -> None:
    """The last line says what happened; only a real crash may log a traceback before it."""
    text = stderr.decode()
    if not crash:
        assert "Traceback" not in text, text
    assert text.strip().splitlines()[-1].startswith(starts), text


def test_deliver_stores_the_mail_and_exits_0(config_path: Path, db: Database):
    raw = mail_bytes(make_mail(to="billing@example.com", subject="Facture"))
    proc = deliver(
        config_path, raw, "--recipient", "billing@example.com", "--sender", "jean@client.example"
    )
    assert proc.returncode == EX_OK, proc.stderr.decode()
    # A retry by the MTA is harmless.
    assert deliver(config_path, raw, "--recipient", "billing@example.com").returncode == EX_OK
    with db.read() as session:
        (ticket,) = session.exec(select(Ticket))
    assert (ticket.subject, ticket.category, ticket.channel) == ("Facture", "Billing", "deliver")
    assert sorted(r.kind for r in outbox_rows(db)) == ["activation", "confirmation"]


def test_deliver_keeps_unparseable_mail_in_quarantine_and_exits_0(
    config_path: Path, db: Database
):
    raw = (DATA / "garbage.eml").read_bytes()
    proc = deliver(config_path, raw)
    assert proc.returncode == EX_OK, proc.stderr.decode()
    with db.read() as session:
        (held,) = session.exec(select(Quarantine))
    assert held.raw_sha256 == sha256(raw)
    assert held.reason
    assert counts(db)["ticket"] == 0


@pytest.mark.parametrize(
    "case",
    ["oversized", "not-our-recipient"],
)
def test_deliver_exits_65_on_a_message_it_refuses(config_path: Path, db: Database, case: str):
    limit = 200_000  # tests/support/peers.py writes max_message_bytes = 200000
    if case == "oversized":
        raw = mail_bytes(make_mail(body="0123456789abcdef\n" * (limit // 17 + 1)))
        assert len(raw) > limit
        args: tuple[str, ...] = ()
    else:
        raw = mail_bytes(make_mail())
        args = ("--recipient", "someone@elsewhere.example")
    proc = deliver(config_path, raw, *args)
    assert proc.returncode == EX_DATAERR, proc.stderr.decode()
    assert_one_clear_line(proc.stderr, "mailgate: refused")
    n = counts(db)
    assert (n["receipt"], n["ticket"], n["outbox"]) == (0, 0, 0)


def test_deliver_exits_75_when_the_database_is_gone(config_path: Path):
    gone = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/mailgate"
    proc = deliver(
        config_path, mail_bytes(make_mail()), env={"MAILGATE_DATABASE_URL": gone}
    )
    assert proc.returncode == EX_TEMPFAIL, proc.stderr.decode()
    assert_one_clear_line(proc.stderr, "mailgate: temporary failure")


def test_deliver_exits_75_and_stores_nothing_when_the_transaction_fails(
    config_path: Path, db: Database, database_url: str
):
    raw = mail_bytes(make_mail())
    db.upgrade()  # the schema must exist before a trigger can be put on it
    # The database refuses the last insert of the transaction: nothing before it may remain.
    with inserts_refused(database_url, "outbox"):
        proc = deliver(config_path, raw)
    assert proc.returncode == EX_TEMPFAIL, proc.stderr.decode()
    assert_one_clear_line(proc.stderr, "mailgate: temporary failure", crash=True)
    assert set(counts(db).values()) == {0}
    # The MTA's retry then goes through, exactly once.
    assert deliver(config_path, raw).returncode == EX_OK
    n = counts(db)
    assert (n["ticket"], n["receipt"], n["outbox"]) == (1, 1, 2)


def test_deliver_exits_75_when_the_disk_refuses_the_raw_message(
    config_path: Path, db: Database
):
    raw = mail_bytes(make_mail())
    with blob_store_broken(data_dir_of(config_path)):
        proc = deliver(config_path, raw)
    assert proc.returncode == EX_TEMPFAIL, proc.stderr.decode()
    assert_one_clear_line(proc.stderr, "mailgate: temporary failure")
    assert set(counts(db).values()) == {0}
