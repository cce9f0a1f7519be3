"""`[inbound] smtp_processes`: SMTP and LMTP sessions in child processes of serve, the
transaction still in serve's writer (adapters/smtp/front.py). Real sockets, real serve, real
child processes: every 250 is a committed ticket, counted in serve's metrics; a front killed
is restarted; serve killed takes its fronts down and frees the port for its restart."""

from __future__ import annotations

import os
import signal
import smtplib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mailgate.adapters.parsing import INLINE_BUDGET
from mailgate.store.db import Database
from mailgate.store.models import Ticket
from tests.conftest import make_mail
from tests.support.hygiene import SUPPORT, count, crlf, set_inbound
from tests.support.peers import (
    Mailgate,
    ServeProcess,
    SmtpSink,
    free_port,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.postgres  # the transaction runs in serve: both databases

FRONT = "mailgate.adapters.smtp.front"


def fronts_of(parent: int) -> list[int]:
    """The SMTP front processes whose parent is `parent`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if FRONT in cmdline and ppid == parent:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def send(port: int | str, i: int, *, lmtp: bool = False, body: str = "") -> str:
    raw = crlf(make_mail(sender=f"Client {i} <front{i}@client.example>", subject=f"Panne {i}",
                         message_id=f"<front-{i}@client.example>",
                         **({"body": body} if body else {})).as_bytes())  # fmt: skip
    if lmtp:  # on a unix socket: `port` is its path
        with smtplib.LMTP(str(port), timeout=30) as client:
            client.sendmail(f"front{i}@client.example", [SUPPORT], raw)
            return client.noop()[1].decode()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo()
        client.mail(f"front{i}@client.example")
        client.rcpt(SUPPORT)
        code, reply = client.data(raw)
        assert code == 250, reply
        return reply.decode()


def test_sessions_in_fronts_store_every_message_once_in_serve(
    tmp_path: Path, database_url: str, sink: SmtpSink
):
    config = write_config(tmp_path, database_url=database_url, sink_port=sink.port)
    lmtp = tmp_path / "lmtp.sock"  # as Postfix reaches it: lmtp:unix:...
    set_inbound(config, smtp_processes=2, lmtp_listen=f"unix:{lmtp}")
    mg = Mailgate(config)  # no test clock: fronts and sender in processes of their own
    try:
        fronts = fronts_of(os.getpid())
        assert len(fronts) == 2, "serve started two SMTP fronts"
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda i: send(mg.smtp_port, i), range(40)))
            list(pool.map(lambda i: send(str(lmtp), i, lmtp=True), range(40, 49)))
        # Over INLINE_RAW_BYTES: a blob already, it crosses to serve without its bytes.
        big = send(mg.smtp_port, 49, body="Le journal joint.\n" + "ligne de journal\n" * 6000)
        assert big.startswith("2.0.0 Stored (ticket ")
        assert all(r.startswith("2.0.0 Stored (ticket ") for r in replies), replies[:3]
        assert len({r for r in replies}) == 40, "one ticket per message"
        db = Database(database_url)
        try:
            assert count(db, Ticket) == 50
        finally:
            db.dispose()
        metrics = mg.app.metrics.registry

        def relayed() -> float:  # the fronts' counts, relayed to serve's /metrics
            return sum(
                metrics.get_sample_value(
                    "mailgate_messages_received_total", {"channel": ch, "outcome": "ticketed"}
                ) or 0
                for ch in ("smtp", "lmtp")
            )  # fmt: skip

        # One-way frames: the last may still be on its way when its 250 is back.
        wait_until(lambda: relayed() == 50, 30, "the fronts' counts in serve's metrics")
        wait_until(lambda: len(sink.messages) == 100, 30, "confirmation and activation each")
    finally:
        mg.stop()
    assert not [pid for pid in fronts if alive(pid)], "the fronts stopped with serve"


def test_a_killed_front_is_restarted_and_a_killed_serve_takes_its_fronts_down(
    tmp_path: Path, sink: SmtpSink
):
    database_url = f"sqlite:///{tmp_path / 'fronts.db'}"
    port = free_port()
    config = write_config(tmp_path, database_url=database_url, sink_port=sink.port)
    set_inbound(config, smtp_processes=1, smtp_listen=f"127.0.0.1:{port}", lmtp_listen="")
    serve = ServeProcess(config, port, tmp_path / "serve.log")
    serve.start()
    assert serve.proc is not None
    try:
        (front,) = fronts_of(serve.proc.pid)
        assert send(port, 1).startswith("2.0.0 Stored")
        os.kill(front, signal.SIGKILL)
        wait_until(lambda: fronts_of(serve.proc.pid) not in ([], [front]), 30, "a new front")
        wait_until(serve.greets, 30, "the new front to answer")
        assert send(port, 2).startswith("2.0.0 Stored")

        (front,) = fronts_of(serve.proc.pid)
        serve.proc.send_signal(signal.SIGKILL)
        serve.proc.wait(30)
        wait_until(lambda: not alive(front), 30, "the front to see serve gone and exit")
        serve.start()  # the port is free again: the front let go of it
        assert send(port, 3).startswith("2.0.0 Stored")
    finally:
        if serve.proc.poll() is None:
            serve.proc.send_signal(signal.SIGTERM)
            assert serve.proc.wait(60) == 0
    db = Database(database_url)
    try:
        assert count(db, Ticket) == 3
    finally:
        db.dispose()


def test_fronts_parse_small_mail_on_their_loop(
    tmp_path: Path, database_url: str, sink: SmtpSink, capfd: pytest.CaptureFixture[str]
):
    """A front parses small mail itself under the budget; serve, whose sessions are in the
    fronts, does not (its parses, IMAP's and the portal's, run in threads: the workers')."""
    config = write_config(tmp_path, database_url=database_url, sink_port=sink.port)
    set_inbound(config, smtp_processes=1)
    mg = Mailgate(config)
    try:
        assert send(mg.smtp_port, 1).startswith("2.0.0 Stored (ticket ")
        assert mg.app.parsers.inline_budget == 0
    finally:
        mg.stop()
    started = [line for line in capfd.readouterr().err.splitlines()
               if "event=parse_workers.started" in line]  # fmt: skip
    assert any(f"inline_budget={INLINE_BUDGET}" in line for line in started), started
