"""The sd_notify protocol against a real AF_UNIX datagram socket, as systemd would hold it:
READY=1 once listening, WATCHDOG=1 at half WATCHDOG_USEC, STOPPING=1 on SIGTERM, exit 0."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.peers import ROOT

WATCHDOG_USEC = 1_000_000  # pings every 0.5 s


class NotifySocket:
    def __init__(self, abstract: bool) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._dir = ""
        if abstract:
            name = f"mailgate-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
        else:
            self._dir = tempfile.mkdtemp(prefix="mgnotify-", dir="/tmp")
            path = os.path.join(self._dir, "notify.sock")
            self.sock.bind(path)
            self.env_value = path

    def next_message(self, timeout: float) -> list[str]:
        """The next datagram, split into its assignments (raises TimeoutError)."""
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode().split("\n")

    def wait_for(self, wanted: str, timeout: float = 20.0) -> tuple[list[str], list[list[str]]]:
        """Read until a datagram holds `wanted`; returns it and the ones before it."""
        end = time.monotonic() + timeout
        before: list[list[str]] = []
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {wanted} within {timeout}s; got {before}")
            message = self.next_message(left)
            if wanted in message:
                return message, before
            before.append(message)

    def close(self) -> None:
        self.sock.close()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest) -> Iterator[NotifySocket]:
    s = NotifySocket(abstract=request.param == "abstract")
    yield s
    s.close()


@pytest.mark.parametrize("log_format", ["kv", "json"])
def test_ready_watchdog_stopping_and_clean_exit(
    config_path: Path, notify_socket: NotifySocket, log_format: str
):
    env = {
        **os.environ,
        "NOTIFY_SOCKET": notify_socket.env_value,
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
    }
    env.pop("MAILGATE_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailgate", "--config", str(config_path), "serve",
         "--log-format", log_format],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        ready, _ = notify_socket.wait_for("READY=1")
        assert any(line.startswith("STATUS=listening: smtp") for line in ready)
        # Two pings in a row prove it is periodic, not a one-off at start-up.
        notify_socket.wait_for("WATCHDOG=1", timeout=5)
        started = time.monotonic()
        notify_socket.wait_for("WATCHDOG=1", timeout=5)
        assert time.monotonic() - started < WATCHDOG_USEC / 1e6  # inside the timeout

        proc.send_signal(signal.SIGTERM)
        notify_socket.wait_for("STOPPING=1", timeout=10)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr.decode()
    lines = stderr.decode().splitlines()
    if log_format == "json":  # journald -> log shipper: every line must parse
        events = [json.loads(line)["event"] for line in lines]
    else:
        events = [line.split(" event=")[1].split(" ")[0] for line in lines]
    assert events[-1] == "serve.stopped" and "serve.ready" in events


def test_no_notify_socket_means_no_notification():
    """Run under a terminal or another supervisor: nothing is sent, serve still works."""
    from mailgate.adapters.systemd import Notifier

    quiet = Notifier.from_environ({"WATCHDOG_USEC": "1000000"})
    assert not quiet.enabled and quiet.watchdog_interval is None
    assert quiet.notify("READY=1") is False
    # WATCHDOG_PID names another process: a child that inherited the variables stays silent.
    other = Notifier.from_environ(
        {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, pid=2
    )
    assert other.watchdog_interval is None
    mine = Notifier.from_environ(
        {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "2"}, pid=2
    )
    assert mine.watchdog_interval == 0.5
