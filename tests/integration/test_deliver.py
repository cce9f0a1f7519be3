"""Issue 2, point 7: `mailgate deliver` (a Postfix pipe) reads one message on stdin and exits
0 when stored, 65 when it refuses the message for good, 75 when the MTA should try again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from mailgate.services.ingest import INLINE_RAW_BYTES
from mailgate.store.db import Database
from mailgate.store.models import Quarantine, Ticket
from mailgate.store.schema_version import head_revision
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
from tests.support.peers import ROOT, free_port

pytestmark = pytest.mark.postgres  # the database engine matters here: run on both

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
    # Over INLINE_RAW_BYTES: its raw bytes are a blob (a smaller one goes into the database).
    raw = mail_bytes(make_mail(body="Bonjour, une ligne de texte.\n" * 3000))
    assert len(raw) > INLINE_RAW_BYTES
    with blob_store_broken(data_dir_of(config_path)):
        proc = deliver(config_path, raw)
    assert proc.returncode == EX_TEMPFAIL, proc.stderr.decode()
    assert_one_clear_line(proc.stderr, "mailgate: temporary failure")
    assert set(counts(db).values()) == {0}


# -- issue 11: no migration and no web stack per mail ---------------------------------------

HEAD_ONLY = "database schema is not current: run `mailgate db upgrade`"
# What `deliver` must not load: the portal and its web stack, the SMTP server, the migrations.
NOT_FOR_DELIVER = {"starlette", "uvicorn", "alembic", "aiosmtpd", "imapclient"}
# Runs `python -m mailgate ARGS...` and writes the modules it loaded to the file named first.
RECORD_MODULES = """
import atexit, json, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
runpy.run_module("mailgate", run_name="__main__", alter_sys=True)
"""


def set_revision(db: Database, revision: str) -> None:
    with db.write() as session:
        session.connection().exec_driver_sql(
            f"UPDATE alembic_version SET version_num = '{revision}'"
        )


def deliver_recording_modules(
    config_path: Path, raw: bytes, out: Path, *args: str
) -> tuple[subprocess.CompletedProcess[bytes], set[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    proc = subprocess.run(
        [sys.executable, "-c", RECORD_MODULES, str(out), "--config", str(config_path),
         "deliver", *args],
        input=raw, capture_output=True, env=env, timeout=60, cwd=ROOT,
    )
    return proc, set(json.loads(out.read_text()))


def test_deliver_exits_75_while_the_schema_is_not_current_and_delivers_once_it_is(
    config_path: Path, db: Database
):
    db.upgrade()
    head = head_revision()
    set_revision(db, "0001")  # as if this mailgate were installed and `db upgrade` not run
    raw = mail_bytes(make_mail())
    proc = deliver(config_path, raw)
    assert proc.returncode == EX_TEMPFAIL, proc.stderr.decode()
    assert_one_clear_line(proc.stderr, f"mailgate: temporary failure: {HEAD_ONLY}")
    assert "0001" in proc.stderr.decode() and head in proc.stderr.decode()
    assert set(counts(db).values()) == {0}  # nothing half-stored, nothing migrated
    with db.read() as session:
        assert session.connection().exec_driver_sql(
            "SELECT version_num FROM alembic_version"
        ).scalar() == "0001"
    # Other commands say the same (and do not migrate either).
    listed = run_cli(config_path, "ticket", "list")
    assert listed.returncode == EX_TEMPFAIL
    assert_one_clear_line(listed.stderr, f"mailgate: temporary failure: {HEAD_ONLY}")

    set_revision(db, head)  # what `mailgate db upgrade` leaves; the MTA's retry then delivers
    assert deliver(config_path, raw).returncode == EX_OK
    assert counts(db)["ticket"] == 1


def test_first_deliveries_racing_on_a_new_database_create_its_schema_once(
    config_path: Path, db: Database
):
    """A fresh install whose MTA delivers before `db upgrade` ran: each delivery finds no
    schema and creates it under upgrade()'s lock; the second waits, then finds it done."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mailgate", "--config", str(config_path), "deliver"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            cwd=ROOT,
        )
        for _ in range(2)
    ]
    for i, proc in enumerate(procs):
        raw = mail_bytes(make_mail(sender=f"client{i}@client.example", subject=f"Course {i}"))
        proc.stdin.write(raw)  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
    for proc in procs:
        assert proc.wait(timeout=60) == EX_OK, proc.stderr.read()  # type: ignore[union-attr]
    assert db.revision() == head_revision()
    assert counts(db)["ticket"] == 2


def test_listing_commands_do_not_create_a_schema(config_path: Path, db: Database):
    proc = run_cli(config_path, "outbox", "list")
    assert proc.returncode == EX_TEMPFAIL
    assert_one_clear_line(proc.stderr, f"mailgate: temporary failure: {HEAD_ONLY}")
    assert db.revision() is None


def test_deliver_loads_neither_the_web_stack_nor_the_migrations(
    config_path: Path, db: Database, tmp_path: Path
):
    db.upgrade()  # at install time (a new database would be created, with Alembic, once)
    raw = mail_bytes(make_mail(subject="Sans portail"))
    proc, loaded = deliver_recording_modules(
        config_path, raw, tmp_path / "modules.json", "--sender", "jean@client.example"
    )
    assert proc.returncode == EX_OK, proc.stderr.decode()
    assert proc.stderr == b""  # no log lines without --verbose
    heavy = {m for m in loaded if m in NOT_FOR_DELIVER or m.split(".")[0] in NOT_FOR_DELIVER}
    assert not heavy, sorted(heavy)
    assert "mailgate.app" not in loaded and "mailgate.adapters.portal" not in loaded
    with db.read() as session:
        (ticket,) = session.exec(select(Ticket))
    assert ticket.subject == "Sans portail"


def test_deliver_verbose_logs_on_stderr(config_path: Path):
    raw = mail_bytes(make_mail())
    proc = deliver(config_path, raw, "--verbose")
    assert proc.returncode == EX_OK, proc.stderr.decode()
    assert "event=ingest.accepted" in proc.stderr.decode()
