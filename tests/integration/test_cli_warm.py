"""Admin commands run by serve's warm process (mailgate/cli_warm.py): the real `mailgate`
command against a real `serve` child process. Each command gives the same output and exit
status as run in its own process; the caller's signals reach it; whatever the warm process
cannot run exactly as the caller would (another user, files it sees otherwise, code changed
since it started) runs in the caller's process instead; serve gone takes it down."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mailgate import cli_warm
from tests.conftest import make_mail
from tests.support.hygiene import SUPPORT, crlf, set_inbound
from tests.support.peers import ROOT, ServeProcess, SmtpSink, free_port, wait_until, write_config


def mailgate(
    config: Path, *args: str, local: bool = False, **kw: object
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    if local:
        env["MAILGATE_IN_PROCESS"] = "1"
    return subprocess.Popen(
        [sys.executable, "-m", "mailgate", "--config", str(config), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
        cwd=ROOT, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def run(config: Path, *args: str, local: bool = False) -> tuple[int, str, str]:
    proc = mailgate(config, *args, local=local)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out.decode(), err.decode()


class WarmServe:
    def __init__(self, tmp: Path, transport_port: int) -> None:
        self.port = free_port()
        self.config = write_config(tmp, database_url=f"sqlite:///{tmp / 'warm.db'}",
                                   sink_port=transport_port)  # fmt: skip
        text = self.config.read_text().replace("warm_commands = false", "warm_commands = true")
        self.config.write_text(text)
        set_inbound(self.config, smtp_listen=f"127.0.0.1:{self.port}", lmtp_listen="")
        self.log = tmp / "serve.log"
        self.socket = tmp / "data" / cli_warm.SOCKET_NAME
        self.sink: SmtpSink | None = None
        self.serve = ServeProcess(self.config, self.port, self.log)
        self.serve.start()
        wait_until(lambda: len(self.warm_pids()) == 1, 60, "the warm process to be ready")

    def warm_pids(self) -> list[int]:
        return [
            int(p) for p in re.findall(r"event=cli_warm.ready .*pid=(\d+)", self.log.read_text())
        ]

    def ran(self) -> list[tuple[str, str]]:
        """What the warm process ran: `command=... code=N` of each."""
        return re.findall(r"event=cli_warm.ran command=(\"[^\"]*\"|\S+) pid=\d+ code=(-?\d+)",
                          self.log.read_text())  # fmt: skip

    def ran_until(self, count: int) -> list[tuple[str, str]]:
        """`ran()` once it holds `count` lines: the warm process logs a command after the
        command's caller has its exit status, so the line may come a moment later."""
        wait_until(lambda: len(self.ran()) >= count, 60, f"{count} cli_warm.ran lines")
        return self.ran()

    def refused(self) -> list[str]:
        return re.findall(r"event=cli_warm.refused reason=(\"[^\"]*\"|\S+)", self.log.read_text())

    def stop(self) -> None:
        proc = self.serve.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WarmServe]:
    sink = SmtpSink()
    w = WarmServe(tmp_path_factory.mktemp("warm"), sink.port)
    w.sink = sink
    try:
        yield w
    finally:
        w.stop()
        sink.close()


def test_commands_run_warm_say_what_they_say_in_their_own_process(warm: WarmServe) -> None:
    import smtplib

    raw = crlf(make_mail(sender="Client <warm@client.example>", subject="Écran noir",
                         message_id="<warm-1@client.example>").as_bytes())  # fmt: skip
    with smtplib.SMTP("127.0.0.1", warm.port, timeout=30) as client:
        client.sendmail("warm@client.example", [SUPPORT], raw)
    assert warm.sink is not None
    warm.sink.wait_kind("confirmation", to="warm@client.example")  # the outbox settled
    warm.sink.wait_kind("activation", to="warm@client.example")
    commands = [
        ("ticket", "list"),
        ("ticket", "list", "--json"),
        ("ticket", "show", "1", "--json"),
        ("ticket", "show", "999"),  # exit 1, one line on stderr
        ("account", "list", "--json"),
        ("outbox", "list", "--json"),
        ("quarantine", "list"),
        ("ticket", "status", "1", "bogus"),  # argparse: exit 2, usage on stderr
        ("ticket", "list", "--help"),  # SystemExit(0) from argparse
    ]
    before = len(warm.ran())
    for args in commands:
        local = run(warm.config, *args, local=True)
        warmed = run(warm.config, *args)
        assert warmed == local, args
    assert json_tickets(run(warm.config, "ticket", "list", "--json")[1]) == ["Écran noir"]
    ran = warm.ran_until(before + 10)[before:]
    assert [code for _, code in ran] == ["0", "0", "0", "1", "0", "0", "0", "64", "0", "0"]
    assert ran[0][0] == '"ticket list"'
    # A command that writes: run once, by the warm process, as its own process would.
    code, out, _ = run(warm.config, "agent", "add", "warm-agent@example.com", "--name", "W")
    assert code == 0 and "warm-agent@example.com" in out
    assert warm.ran_until(before + 11)[-1] == ('"agent add"', "0")
    assert run(warm.config, "agent", "list", "--json")[1].count("warm-agent@example.com") == 1
    # Its line logged too: the next test counts the warm process's runs from here.
    assert warm.ran_until(before + 12)[-1] == ('"agent list"', "0")


def json_tickets(out: str) -> list[str]:
    import json

    return [t["subject"] for t in json.loads(out)]


def test_what_the_warm_process_cannot_run_exactly_runs_in_the_callers_process(
    warm: WarmServe,
) -> None:
    before_ran, before_refused = len(warm.ran()), len(warm.refused())
    # Asked not to, and a command with paths of its own: the caller runs them.
    assert run(warm.config, "ticket", "list", local=True)[0] == 0
    assert run(warm.config, "ticket", "attachment", "--help")[0] == 0
    assert len(warm.ran()) == before_ran
    # A file the caller names that the warm process sees as another (its own /tmp under
    # systemd's PrivateTmp, say): refused, the caller runs it.
    request = cli_warm.request_for(["ticket", "list"], [])
    path, dev, ino = request["landmarks"][0]
    request["landmarks"] = [(path, dev, ino + 1)]
    assert cli_warm.run_warm(warm.socket, request) is None
    # Another user (the socket and its folders opened to all for this test): refused by peer
    # credentials.
    with opened_to_all(warm.socket):
        as_nobody = subprocess.run(
            ["/usr/bin/python3", "-c", NOBODY_CLIENT, str(ROOT), str(warm.socket)],
            capture_output=True, timeout=60, preexec_fn=lambda: os.setuid(65534),
        )  # fmt: skip
    assert as_nobody.stdout == b"None\n", as_nobody.stderr
    assert warm.refused()[before_refused:] == [f'"{path} is another file here"', '"another user"']
    assert len(warm.ran()) == before_ran


@contextmanager
def opened_to_all(sock: Path) -> Iterator[None]:
    """The socket writable, and its folders up to /tmp enterable, by every user."""
    paths = [sock, *(p for p in sock.parents if p != Path("/tmp") and p.is_relative_to("/tmp"))]
    modes = {p: p.stat().st_mode & 0o7777 for p in paths}
    try:
        for p in paths:
            os.chmod(p, modes[p] | (0o666 if p == sock else 0o111))
        yield
    finally:
        for p, mode in modes.items():
            os.chmod(p, mode)


# Run by /usr/bin/python3 as user nobody (the venv's interpreter lives under /root).
NOBODY_CLIENT = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from mailgate import cli_warm
print(cli_warm.run_warm(Path(sys.argv[2]), cli_warm.request_for(["ticket", "list"], [])))
"""


def test_code_changed_since_the_warm_process_started_is_run_by_the_caller_and_a_new_one_starts(
    warm: WarmServe,
) -> None:
    before_ran = len(warm.ran())
    old = warm.warm_pids()[-1]
    os.utime(cli_warm.__file__)  # touched, as an upgrade would: its mtime is now
    assert run(warm.config, "ticket", "list")[0] == 0
    assert warm.refused()[-1] == '"code changed"'
    wait_until(lambda: warm.warm_pids()[-1] != old, 60, "a fresh warm process")
    assert "event=cli_warm.exited code=0" in warm.log.read_text()
    assert len(warm.ran()) == before_ran  # the refused one ran in the caller's process
    assert run(warm.config, "ticket", "list")[0] == 0
    assert len(warm.ran_until(before_ran + 1)) == before_ran + 1


def test_the_callers_ctrl_c_reaches_the_command_and_serve_killed_takes_the_warm_process_down(
    tmp_path: Path,
) -> None:
    # The outbound transport: a port that accepts and never greets. `check-config` connects
    # to it and waits: a command that runs until interrupted.
    silent = socket.create_server(("127.0.0.1", 0))
    w = WarmServe(tmp_path, silent.getsockname()[1])
    try:
        proc = mailgate(w.config, "check-config")
        silent.settimeout(60)
        conn, _ = silent.accept()  # the command is at work, in the warm process
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert w.ran_until(1)[-1] == ("check-config", "130")
        conn.close()

        warm_pid = w.warm_pids()[-1]
        assert w.serve.proc is not None
        w.serve.proc.send_signal(signal.SIGKILL)
        w.serve.proc.wait(30)
        wait_until(lambda: not Path(f"/proc/{warm_pid}").exists() or zombie(warm_pid), 30,
                   "the warm process to see serve gone and exit")  # fmt: skip
        assert not w.socket.exists()
        assert run(w.config, "ticket", "list")[0] == 0  # serve stopped: run by the caller
    finally:
        w.stop()
        silent.close()


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True
