"""Several `mailgate serve` processes on one PostgreSQL (issue 17): each in its own process and
folder, with its own SMTP, LMTP and metrics ports, so a test can SIGKILL one as a power cut
would. Readiness and holdings are read from /healthz."""

from __future__ import annotations

import signal
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import _pg_database, _pg_drop
from tests.support.peers import free_port, launch_serve, wait_until, write_config


class Instance:
    """One `mailgate serve` in a subprocess; `[instance] id` is its name."""

    def __init__(
        self,
        name: str,
        root: Path,
        db_url: str,
        sink: int,
        *,
        lease_seconds: float,
        blobs: str = "",
        extra: str = "",
    ) -> None:
        self.name = name
        self.smtp, self.lmtp, self.http = free_port(), free_port(), free_port()
        folder = root / name
        folder.mkdir()
        extra = (
            (f'[blobs]\nurl = "{blobs}"\n\n' if blobs else "")
            + f'[instance]\nid = "{name}"\nlease_seconds = {lease_seconds}\n\n'
            + f'[metrics]\nlisten = "127.0.0.1:{self.http}"\n\n'
            + extra
        )
        self.config = write_config(folder, database_url=db_url, sink_port=sink, extra=extra)
        text = self.config.read_text()
        text = text.replace('smtp_listen = "127.0.0.1:0"', f'smtp_listen = "127.0.0.1:{self.smtp}"')
        text = text.replace('lmtp_listen = "127.0.0.1:0"', f'lmtp_listen = "127.0.0.1:{self.lmtp}"')
        text = text.replace(
            "retry_base_seconds = 60",
            "retry_base_seconds = 1\nlease_seconds = 4\nfirst_contact_per_hour = 100000",
        )
        self.config.write_text(text)
        self.log = folder / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.launch()
        self.wait_up()

    def launch(self) -> None:
        """Start the process without waiting for it (start several at once)."""
        self.proc = launch_serve(self.config, self.log)

    def wait_up(self) -> None:
        wait_until(self.up, 60, f"instance {self.name} to answer /healthz")

    def up(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            return httpx.get(f"http://127.0.0.1:{self.http}/healthz", timeout=5).is_success
        except httpx.HTTPError:
            return False

    def holds(self) -> list[str]:
        try:
            body = httpx.get(f"http://127.0.0.1:{self.http}/healthz", timeout=5).json()
        except httpx.HTTPError:
            return []
        assert body["instance"] == self.name
        return list(body["holds"])

    def metric(self, name: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.http}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def deliver(inst: Instance, raw: bytes, sender: str, lmtp: bool) -> bool:
    """One delivery attempt; True on 250 (LMTP: for the one recipient)."""
    try:
        if lmtp:
            with smtplib.LMTP("127.0.0.1", inst.lmtp, timeout=30) as c:
                c.sendmail(sender, ["support@example.com"], raw)
        else:
            with smtplib.SMTP("127.0.0.1", inst.smtp, timeout=30) as c:
                c.sendmail(sender, ["support@example.com"], raw)
        return True
    except (OSError, smtplib.SMTPException):
        return False


@pytest.fixture(name="pg_url")
def pg_url_fixture() -> Iterator[str]:
    """A PostgreSQL database of the test's own, dropped after it."""
    url, name = _pg_database()
    yield url
    _pg_drop(name)
