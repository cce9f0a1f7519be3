"""Issue 2, points 8, 11 and 12: a fault inside mailgate (database locked, a transaction that
fails halfway, a disk that refuses the raw message) answers 451 with no internal detail and
leaves nothing half-stored; SIGTERM finishes the mail in flight and exits 0; SQLite runs in WAL
with synchronous=FULL; `mailgate db upgrade` builds and re-checks the schema."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlmodel import select

from mailgate.errors import TempFailure
from mailgate.services.commit import GroupCommitter
from mailgate.services.ingest import INLINE_RAW_BYTES
from mailgate.store.db import Database
from mailgate.store.models import Receipt
from tests.conftest import make_mail
from tests.support.mailflow import (
    SmtpResult,
    blob_path,
    blob_store_broken,
    counts,
    database_locked,
    inserts_refused,
    mail_bytes,
    run_cli,
    sha256,
    smtp_transaction,
    with_lock_timeout,
)
from tests.support.peers import ROOT, Mailgate, SmtpSink, wait_until, write_config

pytestmark = pytest.mark.postgres  # the database engine matters here: run on both

SUPPORT = "support@example.com"
INTERNALS = re.compile(
    r"error|traceback|exception|sqlite|psycopg|locked|lock|integrity|operational|injected|"
    r"directory|database|blob",
    re.IGNORECASE,
)


@pytest.fixture
def config_path(tmp_path: Path, database_url: str, sink: SmtpSink, config_extra: str) -> Path:
    # PostgreSQL waits on a lock forever by default; the fault must surface within a second.
    url = with_lock_timeout(database_url, 1000)
    return write_config(tmp_path, database_url=url, sink_port=sink.port, extra=config_extra)


def assert_clean_451(result: SmtpResult) -> None:
    assert result.data is not None
    code, text = result.data
    assert code == 451, result.data
    assert not INTERNALS.search(text), f"the reply leaks internals: {text!r}"


def assert_retry_goes_through_once(mg: Mailgate, raw: bytes) -> None:
    assert smtp_transaction(mg.smtp_port, raw, [SUPPORT]).data_code == 250
    n = counts(mg.app.db)
    assert (n["ticket"], n["receipt"], n["message"], n["account"], n["outbox"]) == (1, 1, 1, 1, 2)


# -- point 8: 451 and nothing half-stored ----------------------------------------------------


def test_database_locked_gets_451_and_nothing_is_stored(mailgate: Mailgate, database_url: str):
    raw = mail_bytes(make_mail())
    with database_locked(database_url):
        result = smtp_transaction(mailgate.smtp_port, raw, [SUPPORT])
    assert_clean_451(result)
    assert set(counts(mailgate.app.db).values()) == {0}
    assert_retry_goes_through_once(mailgate, raw)


def test_transaction_failing_halfway_gets_451_and_nothing_is_stored(
    mailgate: Mailgate, database_url: str
):
    raw = mail_bytes(make_mail())
    # The outbound rows are the last inserts: account, ticket, message and receipt came first.
    with inserts_refused(database_url, "outbox"):
        result = smtp_transaction(mailgate.smtp_port, raw, [SUPPORT])
    assert_clean_451(result)
    assert set(counts(mailgate.app.db).values()) == {0}
    assert_retry_goes_through_once(mailgate, raw)


def _big_raw(subject: str = "Imprimante en panne") -> bytes:
    """A mail whose raw bytes are a blob: a smaller one is kept in the database (rawmail)."""
    raw = mail_bytes(make_mail(subject=subject, body="Bonjour, une ligne de texte.\n" * 3000))
    assert len(raw) > INLINE_RAW_BYTES
    return raw


def test_disk_refusing_the_raw_message_gets_451_and_nothing_is_stored(mailgate: Mailgate):
    raw = _big_raw()
    with blob_store_broken(mailgate.config.data_dir):
        result = smtp_transaction(mailgate.smtp_port, raw, [SUPPORT])
    assert_clean_451(result)
    assert set(counts(mailgate.app.db).values()) == {0}
    assert_retry_goes_through_once(mailgate, raw)


# -- point 11: SIGTERM -----------------------------------------------------------------------


class LogWatcher:
    """Collects a subprocess's log lines (stderr) so a test can wait for an event."""

    def __init__(self, stream) -> None:  # type: ignore[no-untyped-def]
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:  # type: ignore[no-untyped-def]
        for raw in stream:
            with self.cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self.cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            return next((m for line in self.lines if (m := regex.search(line))), None)

        with self.cond:
            if not self.cond.wait_for(lambda: found() is not None, timeout):
                raise AssertionError(f"no log line matching {pattern!r}:\n" + "\n".join(self.lines))
            match = found()
            assert match is not None
            return match


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.fixture
def serve_process(tmp_path: Path, database_url: str, sink: SmtpSink) -> Iterator[tuple]:
    (tmp_path / "serve").mkdir()
    cfg = write_config(tmp_path / "serve", database_url=database_url, sink_port=sink.port)
    env = {k: v for k, v in os.environ.items() if k != "MAILGATE_DATABASE_URL"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailgate", "--config", str(cfg), "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        yield proc, LogWatcher(proc.stderr), cfg
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_sigterm_finishes_the_mail_in_flight_and_exits_0(serve_process: tuple, database_url: str):
    proc, log, cfg = serve_process
    log.wait_for(r"event=serve\.ready")
    port = int(log.wait_for(r"event=listener\.started name=smtp address=[\d.]+:(\d+)").group(1))
    data_dir = cfg.parent / "data"
    raw = _big_raw("Envoyé pendant l'arrêt")  # a blob: seen on disk while the database waits
    results: list[SmtpResult] = []
    client = threading.Thread(
        target=lambda: results.append(smtp_transaction(port, raw, [SUPPORT]))
    )
    with database_locked(database_url):
        client.start()
        # The raw message is on disk: the mail is inside ingest, waiting for the database.
        wait_until(lambda: blob_path(data_dir, sha256(raw)).exists(), what="raw message stored")
        proc.send_signal(signal.SIGTERM)
        assert log.wait_for(r"event=serve\.stopping inflight=(\d+)").group(1) == "1"
        wait_until(lambda: refuses_connections(port), what="listener closed")
        assert client.is_alive(), "the mail in flight was answered before its commit"
    client.join(30)
    assert [r.data_code for r in results] == [250]
    assert proc.wait(30) == 0
    db = Database(database_url)
    try:
        n = counts(db)
    finally:
        db.dispose()
    assert (n["ticket"], n["receipt"], n["outbox"]) == (1, 1, 2)


def test_serve_on_a_taken_port_stops_with_one_clear_line(tmp_path: Path, database_url: str):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = write_config(tmp_path, database_url=database_url, sink_port=1)
        busy = f'smtp_listen = "127.0.0.1:{port}"'
        cfg.write_text(cfg.read_text().replace('smtp_listen = "127.0.0.1:0"', busy))
        proc = run_cli(cfg, "serve")
    assert proc.returncode != 0
    err = proc.stderr.decode()
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("mailgate: "), err
    assert str(port) in err


# -- point 12: the database ----------------------------------------------------------------


def test_sqlite_runs_in_wal_mode_with_synchronous_full(tmp_path: Path):
    db = Database(f"sqlite:///{tmp_path / 'wal.db'}")
    try:
        db.upgrade()
        with db.write() as session:
            conn = session.connection()
            pragma = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in (
                    "journal_mode",
                    "synchronous",
                    "busy_timeout",
                    "foreign_keys",
                    "temp_store",
                )
            }
    finally:
        db.dispose()
    assert pragma["journal_mode"] == "wal"
    assert pragma["synchronous"] == 2  # FULL
    assert pragma["busy_timeout"] > 0
    assert pragma["foreign_keys"] == 1
    assert pragma["temp_store"] == 2  # MEMORY: a batch's savepoints write no temporary file


def test_the_writer_gets_the_same_connection_batch_after_batch(database_url: str):
    """Its page cache (SQLite) and prepared statements (PostgreSQL) stay warm: the pool hands
    out the connection used last, even once it holds several."""
    db = Database(database_url)
    try:
        db.upgrade()
        engine = db.write_engine
        with engine.connect() as first, engine.connect() as second, engine.connect() as third:
            held = {id(c.connection.dbapi_connection) for c in (first, second, third)}
        assert len(held) == 3  # the pool now keeps three connections
        used = []
        for _ in range(4):
            with db.write() as session:
                used.append(id(session.connection().connection.dbapi_connection))
    finally:
        db.dispose()
    assert len(set(used)) == 1, used


def test_db_upgrade_creates_the_schema_and_is_idempotent(config_path: Path, database_url: str):
    proc = run_cli(config_path, "db", "upgrade")
    assert proc.returncode == 0, proc.stderr.decode()
    db = Database(database_url)
    try:
        tables = set(inspect(db.write_engine).get_table_names())
        db.upgrade()  # at head already: a no-op, not an error
        assert set(inspect(db.write_engine).get_table_names()) == tables
    finally:
        db.dispose()
    assert {"alembic_version", "account", "ticket", "message", "receipt", "outbox"} <= tables


def test_a_locked_database_surfaces_as_temp_failure_from_the_writer(database_url: str):
    db = Database(with_lock_timeout(database_url, 200), busy_timeout_ms=200)
    db.upgrade()
    committer = GroupCommitter(db)
    committer.start()
    try:
        with database_locked(database_url), pytest.raises(TempFailure):
            committer.run(lambda session: session.exec(select(Receipt)).all())
    finally:
        committer.stop()
        db.dispose()


def test_a_job_submitted_while_the_writer_stops_is_run_or_refused(tmp_path: Path):
    db = Database(f"sqlite:///{tmp_path / 'stop.db'}")
    db.upgrade()
    committer = GroupCommitter(db)
    committer.start()
    busy, release = threading.Event(), threading.Event()

    def slow(session) -> None:  # type: ignore[no-untyped-def]
        busy.set()
        release.wait(10)

    first = threading.Thread(target=committer.run, args=(slow,), daemon=True)
    first.start()
    assert busy.wait(10)
    stopper = threading.Thread(target=committer.stop, daemon=True)
    stopper.start()
    wait_until(lambda: committer._queue.qsize() == 1, what="stop() queued its sentinel")
    outcome: list[object] = []

    def late() -> None:
        try:
            outcome.append(committer.run(lambda session: session.exec(select(Receipt)).all()))
        except Exception as exc:  # refusing is fine too (e.g. TempFailure)
            outcome.append(exc)

    latecomer = threading.Thread(target=late, daemon=True)
    latecomer.start()
    wait_until(lambda: committer._queue.qsize() == 2 or bool(outcome), what="late job queued")
    release.set()
    stopper.join(10)
    latecomer.join(3)
    db.dispose()
    assert outcome, "the late job was neither run nor refused: its caller waits forever"


def test_a_submitted_job_resolves_after_its_commit_and_a_cancelled_one_never_runs(
    tmp_path: Path,
):
    """The SMTP listener awaits `submit`'s future instead of holding a thread on it. A job
    whose caller gave up before it ran (its future cancelled) is dropped, never half-run;
    once running, it cannot be cancelled: its result is always delivered."""
    db = Database(f"sqlite:///{tmp_path / 'submit.db'}")
    db.upgrade()
    committer = GroupCommitter(db)
    committer.start()
    busy, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def slow(session) -> str:  # type: ignore[no-untyped-def]
        busy.set()
        release.wait(10)
        ran.append("slow")
        return "slow"

    try:
        first = committer.submit(slow)
        assert busy.wait(10)
        assert not first.cancel(), "a running job is past cancelling"
        dropped = committer.submit(lambda session: ran.append("dropped"))
        kept = committer.submit(lambda session: ran.append("kept") or len(ran))
        assert dropped.cancel()
        release.set()
        assert first.result(10) == "slow"
        assert kept.result(10) == 2
        assert ran == ["slow", "kept"]
    finally:
        release.set()
        committer.stop()
        db.dispose()
