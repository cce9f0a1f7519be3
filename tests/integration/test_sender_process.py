"""Issue 11: under `serve` the sender runs in an OS process of its own (rendering and sending
get the second core). It is woken across the process boundary, restarted when it dies, stopped
with `serve`, and it ends by itself when the serving process is killed. A sender killed with
SIGKILL never makes a mail recorded as sent go out again."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import subprocess
import sys
from pathlib import Path

from tests.conftest import make_mail, send
from tests.support.hygiene import set_inbound
from tests.support.mailflow import outbox_rows
from tests.support.peers import ROOT, Mailgate, SmtpSink, free_port, wait_until, write_config

MODULE = b"mailgate.adapters.sender_process"


def sender_processes(parent: int) -> list[int]:
    """Live (not zombie) sender processes whose parent is `parent`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == parent and fields[0] != "Z" and MODULE in cmdline:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; whoever adopted it reaps it when it likes


def sent_metric(mg: Mailgate) -> float:
    text = mg.app.metrics.render()[0].decode()
    found = re.search(r'(?m)^mailgate_outbound_total\{result="sent"\} (\S+)$', text)
    return float(found.group(1)) if found else 0.0


def _first_contact(mg: Mailgate, sink: SmtpSink, sender: str) -> None:
    send(mg.smtp_port, make_mail(sender=sender), mail_from=sender)
    sink.wait_kind("confirmation", to=sender)
    sink.wait_kind("activation", to=sender)


def test_the_sender_runs_apart_is_restarted_after_kill_9_and_sends_nothing_twice(
    config_path: Path, sink: SmtpSink
):
    mg = Mailgate(config_path)
    try:
        _first_contact(mg, sink, "anna@client.example")
        wait_until(lambda: {r.status for r in outbox_rows(mg.app.db)} == {"sent"},
                   what="the mails recorded as sent")  # fmt: skip
        wait_until(lambda: len(sender_processes(os.getpid())) == 1, what="one sender process")
        (first,) = sender_processes(os.getpid())
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: sender_processes(os.getpid()) not in ([], [first]), timeout=30,
                   what="a new sender process")  # fmt: skip

        _first_contact(mg, sink, "bruno@client.example")
        rows = outbox_rows(mg.app.db)
        ids = [str(m.msg["Message-ID"]).strip("<>") for m in sink.messages]
        assert len(ids) == len(set(ids)) == 4, ids
        assert sorted(ids) == sorted(r.message_id for r in rows)
        wait_until(lambda: {r.status for r in outbox_rows(mg.app.db)} == {"sent"})
        # The sender's process reports each batch to serve's metrics.
        wait_until(lambda: sent_metric(mg) == 4, what="mailgate_outbound_total to count 4")
        (second,) = sender_processes(os.getpid())
    finally:
        mg.stop()  # SIGTERM to the sender, which finishes its batch and exits
    assert not alive(second)


def test_the_sender_process_ends_when_serve_is_killed(
    tmp_path: Path, database_url: str, sink: SmtpSink
):
    port = free_port()
    config = write_config(tmp_path, database_url=database_url, sink_port=sink.port)
    set_inbound(config, smtp_listen=f"127.0.0.1:{port}", lmtp_listen="")
    env = {k: v for k, v in os.environ.items() if k != "MAILGATE_DATABASE_URL"}
    with (tmp_path / "serve.log").open("wb") as log:
        serve = subprocess.Popen(
            [sys.executable, "-m", "mailgate", "--config", str(config), "serve"],
            stdout=log, stderr=log, env=env, cwd=ROOT,
        )  # fmt: skip
    try:

        def greets() -> bool:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=5) as s:
                    return s.noop()[0] == 250
            except OSError:
                return False

        wait_until(greets, 60, "mailgate serve to listen")
        send(port, make_mail(sender="carla@client.example"), mail_from="carla@client.example")
        sink.wait_kind("activation", to="carla@client.example")
        wait_until(lambda: len(sender_processes(serve.pid)) == 1, what="the sender process")
        (child,) = sender_processes(serve.pid)
        serve.kill()
        serve.wait(30)
        wait_until(lambda: not alive(child), timeout=30, what="the orphaned sender to end")
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait(30)
