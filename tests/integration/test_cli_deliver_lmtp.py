"""Issue 11: with serve running and its LMTP listener at a fixed address, `mailgate deliver`
hands the mail over LMTP instead of loading the database code; with serve stopped it stores
the mail itself. Exit codes stay CONTRACT.md's: 0 only once serve said 250 (after its commit),
65 for serve's 5xx, 75 for a 4xx or when the answer never came."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from mailgate.store.db import Database
from mailgate.store.models import Ticket
from tests.conftest import make_mail
from tests.support.mailflow import counts, mail_bytes, outbox_rows
from tests.support.peers import ROOT, Mailgate

EX_OK, EX_DATAERR, EX_TEMPFAIL = 0, 65, 75
RECORD_MODULES = """
import atexit, json, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
runpy.run_module("mailgate", run_name="__main__", alter_sys=True)
"""


@pytest.fixture
def socket_path() -> Iterator[Path]:
    # Not tmp_path: a unix socket's path must stay under ~100 bytes.
    folder = Path(tempfile.mkdtemp(prefix="mg-lmtp-"))
    yield folder / "lmtp.sock"
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def lmtp_config(config_path: Path, socket_path: Path) -> Path:
    text = config_path.read_text()
    assert 'lmtp_listen = "127.0.0.1:0"' in text
    config_path.write_text(
        text.replace('lmtp_listen = "127.0.0.1:0"', f'lmtp_listen = "unix:{socket_path}"')
    )
    return config_path


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.upgrade()
    yield database
    database.dispose()


def deliver(
    config: Path, raw: bytes, *args: str, modules: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    prefix = ["-c", RECORD_MODULES, str(modules)] if modules else ["-m", "mailgate"]
    return subprocess.run(
        [sys.executable, *prefix, "--config", str(config), "deliver", *args],
        input=raw, capture_output=True, env=env, timeout=60, cwd=ROOT,
    )


def channels(db: Database) -> list[str]:
    with db.read() as session:
        return [t.channel for t in session.exec(select(Ticket).order_by(Ticket.id))]


def test_deliver_hands_the_mail_to_a_running_serve(
    lmtp_config: Path, db: Database, tmp_path: Path
):
    mg = Mailgate(lmtp_config)
    try:
        raw = mail_bytes(make_mail(subject="Par LMTP", body="Bonjour\n.\nune ligne point\n"))
        modules = tmp_path / "modules.json"
        proc = deliver(lmtp_config, raw, "--sender", "jean@client.example", modules=modules)
        assert proc.returncode == EX_OK, proc.stderr.decode()
        assert proc.stderr == b""
        # Stored by serve: this process never loaded the database code.
        loaded = set(json.loads(modules.read_text()))
        assert not {m for m in loaded if m.split(".")[0] in {"sqlalchemy", "sqlmodel"}}
        assert channels(db) == ["lmtp"]
        assert sorted(r.kind for r in outbox_rows(db)) == ["activation", "confirmation"]
        # The MTA's retry of the same mail is a duplicate, by either path.
        assert deliver(lmtp_config, raw, "--sender", "jean@client.example").returncode == EX_OK
        assert deliver(lmtp_config, raw, "--in-process").returncode == EX_OK
        assert channels(db) == ["lmtp"]
        # --in-process stores here even while serve listens.
        other = mail_bytes(make_mail(sender="paul@client.example", subject="Sur place"))
        proc = deliver(lmtp_config, other, "--sender", "paul@client.example", "--in-process")
        assert proc.returncode == EX_OK, proc.stderr.decode()
        assert channels(db) == ["lmtp", "deliver"]
    finally:
        mg.stop()
    with db.read() as session:
        (first, _) = session.exec(select(Ticket).order_by(Ticket.id))
    assert first.subject == "Par LMTP"


def test_a_refusal_by_serve_exits_65_with_its_reply(lmtp_config: Path, db: Database):
    # More Received: lines than max_received_headers (50): serve's ingest refuses, after DATA.
    raw = b"".join(b"Received: from hop%d.example by mx.example\r\n" % i for i in range(60))
    raw += mail_bytes(make_mail(subject="Boucle"))
    mg = Mailgate(lmtp_config)
    try:
        proc = deliver(lmtp_config, raw, "--sender", "jean@client.example")
    finally:
        mg.stop()
    assert proc.returncode == EX_DATAERR, proc.stderr.decode()
    (line,) = proc.stderr.decode().strip().splitlines()
    assert line.startswith("mailgate: refused: 554 5.4.6"), line
    assert counts(db)["ticket"] == 0


def test_with_serve_stopped_deliver_stores_the_mail_itself(lmtp_config: Path, db: Database):
    raw = mail_bytes(make_mail(subject="Serve arrêté"))
    proc = deliver(lmtp_config, raw, "--sender", "jean@client.example")
    assert proc.returncode == EX_OK, proc.stderr.decode()
    assert channels(db) == ["deliver"]


class ScriptedLmtp:
    """An LMTP peer that accepts the envelope, reads the data, then answers `final` (or hangs
    up without a word when it is None): what a serve that crashes mid-delivery looks like."""

    def __init__(self, path: Path, final: bytes | None) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.final = final
        self.data = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 scripted LMTP\r\n")
            for line in lines:
                verb = line[:4].upper()
                if verb == b"LHLO":
                    conn.sendall(b"250-scripted\r\n250 8BITMIME\r\n")
                elif verb in (b"MAIL", b"RCPT"):
                    conn.sendall(b"250 2.1.0 OK\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go ahead\r\n")
                    for data_line in lines:
                        if data_line == b".\r\n":
                            break
                        self.data += data_line
                    if self.final is not None:
                        conn.sendall(self.final + b"\r\n")
                    return

    def close(self) -> None:
        self.thread.join(10)
        self.server.close()


@pytest.mark.parametrize(
    ("final", "code", "starts"),
    [
        (None, EX_TEMPFAIL, "mailgate: temporary failure: no answer from serve"),
        (b"451 4.3.0 Temporary local problem", EX_TEMPFAIL, "mailgate: temporary failure: 451"),
        (b"552 5.3.4 Message too big for system", EX_DATAERR, "mailgate: refused: 552 5.3.4"),
    ],
    ids=["hangs-up", "4xx", "5xx"],
)
def test_what_serve_answers_after_the_data_decides_the_exit_code(
    lmtp_config: Path, socket_path: Path, db: Database, final: bytes | None, code: int,
    starts: str,
):
    peer = ScriptedLmtp(socket_path, final)
    raw = b"Subject: lignes\n\n.point\nfin\n"  # LF from the pipe, a line starting with a dot
    try:
        proc = deliver(lmtp_config, raw, "--sender", "", "--recipient", "support@example.com")
    finally:
        peer.close()
    assert proc.returncode == code, proc.stderr.decode()
    (line,) = proc.stderr.decode().strip().splitlines()
    assert line.startswith(starts), line
    assert peer.data == b"Subject: lignes\r\n\r\n..point\r\nfin\r\n"  # CRLF, dot-stuffed
    # The outcome was serve's to decide: never stored a second time here.
    assert counts(db)["receipt"] == 0
