"""Real peers for tests: an aiosmtpd SMTP sink that receives mailgate's outbound mail, and a
running `mailgate serve` on port 0 in a background thread. Waiting is on conditions, never
on sleeps."""

from __future__ import annotations

import asyncio
import atexit
import email
import email.policy
import os
import random
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port nothing listens on, for a server a test starts a moment later. Drawn below the
    kernel's ephemeral range: a port from that range (bind to 0) could meanwhile become the
    local end of any outgoing connection on the machine (the tests make many), and the
    server's bind then fails; below it, only another listener could take it (seen: the other
    xdist worker's SMTP clients took test_postfix's socketmap port)."""
    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ranges.read_text().split()[0]) if ranges.exists() else 32768
    rng = random.Random()  # (seeded by the OS: each xdist worker draws its own numbers)
    for _ in range(100):
        port = rng.randrange(min(20000, low - 1000), low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def msg(self) -> EmailMessage:
        return email.message_from_bytes(self.raw, policy=email.policy.default)  # type: ignore[return-value]

    @property
    def kind(self) -> str:
        return str(self.msg["X-Mailgate-Kind"] or "")

    def text(self) -> str:
        body = self.msg.get_body(("plain",))
        return body.get_content() if body is not None else ""  # type: ignore[union-attr]


class _LoopThread:
    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class SmtpSink:
    """A real SMTP server (aiosmtpd) that keeps every message it receives.

    `fail_with` makes it answer DATA with that status (e.g. "451 4.3.0 try later") for
    fault-injection tests."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.cond = threading.Condition()
        self.fail_with: str | None = None
        self._lt = _LoopThread("smtp-sink")
        self.server = self._lt.call(self._start())
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def _start(self) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: SMTP(self, loop=loop), "127.0.0.1", 0)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.fail_with:
            return self.fail_with
        with self.cond:
            self.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )
            self.cond.notify_all()
        return "250 OK"

    def wait_for(
        self, predicate: Callable[[list[Received]], bool] | int, timeout: float = 15.0
    ) -> list[Received]:
        check = (lambda ms: len(ms) >= predicate) if isinstance(predicate, int) else predicate
        with self.cond:
            if not self.cond.wait_for(lambda: check(self.messages), timeout):
                kinds = [(m.kind, m.rcpt_tos) for m in self.messages]
                raise AssertionError(f"sink did not receive the expected mail; got {kinds}")
            return list(self.messages)

    def of_kind(self, kind: str, to: str | None = None) -> list[Received]:
        with self.cond:
            return [m for m in self.messages if m.kind == kind and (to is None or to in m.rcpt_tos)]

    def wait_kind(self, kind: str, to: str | None = None, count: int = 1) -> list[Received]:
        self.wait_for(
            lambda ms: len([m for m in ms if m.kind == kind and (to is None or to in m.rcpt_tos)])
            >= count
        )
        return self.of_kind(kind, to)

    def close(self) -> None:
        self.server.close()
        self._lt.close()


def write_config(
    tmp: Path, *, database_url: str, sink_port: int, extra: str = "", portal: bool = False
) -> Path:
    cfg = tmp / "mailgate.toml"
    portal_listen = f"127.0.0.1:{free_port()}" if portal else ""
    base_url = f"http://{portal_listen}" if portal else "http://127.0.0.1:8025"
    # Tests mail from made-up domains with no DNS behind them: sender checks stay off unless
    # a test turns them on (with a DNS server on loopback, or a trusted authserv_id).
    no_sender_checks = "" if "[security]" in extra else '[security]\nverify_sender = "off"\n'
    cfg.write_text(
        f"""
[mailgate]
hostname = "mg.test"
data_dir = "data"
default_locale = "fr"
# No warm command process: it would add an import of the whole app to every serve a test
# starts. tests/integration/test_cli_warm.py runs the default.
warm_commands = false

[database]
url = "{database_url}"

[inbound]
smtp_listen = "127.0.0.1:0"
# Sessions in serve itself: a child process per serve would add a second or so to every test
# that starts one. tests/integration/test_smtp_fronts.py runs the default (child processes).
smtp_processes = 0
lmtp_listen = "127.0.0.1:0"
max_message_bytes = 200000

[addresses]
support = "support@example.com"

[addresses.categories]
"billing@example.com" = "Billing"

[outbound]
transport = "smtp://127.0.0.1:{sink_port}"
from_name = "Example Support"
retry_base_seconds = 60

[portal]
listen = "{portal_listen}"
base_url = "{base_url}"
{extra}
{no_sender_checks}"""
    )
    return cfg


class Mailgate:
    """`serve` running in a background thread, as in production, on port 0."""

    def __init__(self, config_path: Path, clock: Any = None) -> None:
        from mailgate import config as config_mod
        from mailgate import logs
        from mailgate.app import build, serve

        logs.setup()
        self.config_path = config_path
        self.config = config_mod.load(config_path)
        self.app = build(self.config, clock=clock)
        self._lt = _LoopThread("mailgate")
        self._stop: asyncio.Event | None = None
        ready = threading.Event()

        async def make_stop() -> asyncio.Event:
            return asyncio.Event()

        self._stop = self._lt.call(make_stop())
        self._task = asyncio.run_coroutine_threadsafe(
            serve(self.app, self._stop, on_ready=lambda _app: ready.set(), install_signals=False),
            self._lt.loop,
        )
        if not ready.wait(30):
            self._task.result(1)
            raise RuntimeError("mailgate did not start")
        self.smtp_port = self.app.listeners["smtp"][1]
        self.lmtp_port = self.app.listeners.get("lmtp", ("", 0))[1]

    def stop(self) -> None:
        if self._stop is not None:
            self._lt.loop.call_soon_threadsafe(self._stop.set)
            self._task.result(30)
            self._stop = None
        self._lt.close()

    def cli(self, *args: str, check: bool = True, stdin: bytes | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run the real `mailgate` command against this instance's config."""
        return run_cli(self.config_path, *args, check=check, stdin=stdin, env=env)


def run_cli(
    config_path: Path,
    *args: str,
    check: bool = True,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """The real `mailgate` command, in a process of its own, against a config: its database
    is the config's unless `env` names another (MAILGATE_DATABASE_URL is not inherited).
    `check`: a non-zero exit fails the test, with the command's standard error.

    The process is forked from tests/support/cli_zygote.py, which has the imports done;
    MAILGATE_TEST_CLI_FRESH=1 starts a new interpreter for each command instead."""
    full_env = {k: v for k, v in os.environ.items() if k != "MAILGATE_DATABASE_URL"}
    full_env.update(env or {})
    argv = ["--config", str(config_path), *args]
    if os.environ.get("MAILGATE_TEST_CLI_FRESH") == "1":
        proc = subprocess.run(
            [sys.executable, "-m", "mailgate", *argv],
            input=stdin, capture_output=True, env=full_env, timeout=60, cwd=ROOT,
        )  # fmt: skip
    else:
        proc = _zygote().run(argv, full_env, stdin or b"", timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"mailgate {' '.join(args)} exited {proc.returncode}: {proc.stderr.decode()}"
        )
    return proc


class _Zygote:
    """tests/support/cli_zygote.py for this test process, stopped when it exits."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="mailgate-zygote-")
        self.path = os.path.join(self.folder, "socket")
        env = {k: v for k, v in os.environ.items() if k != "MAILGATE_DATABASE_URL"}
        # Its standard input is held open here and never written: it exits once this process
        # has gone, however it went.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.cli_zygote", self.path],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()  # once it listens (or b"" if it died)
        self.proc.stdout.close()
        if ready.strip() != b"ready":
            self.proc.wait(10)
            raise RuntimeError(f"the CLI zygote did not start (exit {self.proc.returncode})")
        atexit.register(self.stop)

    def run(
        self, argv: list[str], env: dict[str, str], stdin: bytes, timeout: float
    ) -> subprocess.CompletedProcess[bytes]:
        from mailgate import frames

        request = {
            "argv": argv,
            "env": env,
            "cwd": str(ROOT),
            "stdin": stdin,
        }
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(self.path)
            try:
                frames.send(sock, request)
                answer = frames.receive(sock)
            except TimeoutError as exc:
                raise subprocess.TimeoutExpired(["mailgate", *argv], timeout) from exc
        return subprocess.CompletedProcess(
            [sys.executable, "-m", "mailgate", *argv],
            answer["returncode"],
            answer["stdout"],
            answer["stderr"],
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # its signal to exit
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


_zygotes: dict[int, _Zygote] = {}


def _zygote() -> _Zygote:
    """This process's zygote (a fork of a test process gets its own), started if need be."""
    found = _zygotes.get(os.getpid())
    if found is None or not found.alive():
        found = _zygotes[os.getpid()] = _Zygote()
    return found


def launch_serve(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`mailgate serve` in a process of its own, its output appended to `log`; not waited for."""
    env = {k: v for k, v in os.environ.items() if k != "MAILGATE_DATABASE_URL"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "mailgate", "--config", str(config), "serve"],
            stdout=out, stderr=out, env=env, cwd=ROOT,
        )  # fmt: skip


class ServeProcess:
    """`mailgate serve` as a child process, as systemd runs it: started and waited for until
    its SMTP port greets, killed with SIGKILL."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config, self.port, self.log = config, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = launch_serve(self.config, self.log)
        wait_until(self.greets, 60, "mailgate serve to listen")

    def greets(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=5) as s:
                return s.noop()[0] == 250
        except OSError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll a condition that has no notification channel (e.g. a database row)."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)

