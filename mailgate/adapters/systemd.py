"""sd_notify(3) without libsystemd: datagrams to $NOTIFY_SOCKET.

READY=1 once the listeners are up, STOPPING=1 when shutdown begins, WATCHDOG=1 from the event
loop at half of $WATCHDOG_USEC (so a blocked loop misses its ping and systemd restarts us).
Without NOTIFY_SOCKET (a terminal, tests, another supervisor) every call does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Mapping

from mailgate import logs


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int = 0) -> None:
        # "@name" is Linux's abstract namespace, spelt with a leading NUL byte on the wire.
        self.address = "\0" + address[1:] if address and address.startswith("@") else address
        self.watchdog_usec = watchdog_usec

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], pid: int | None = None) -> Notifier:
        address = environ.get("NOTIFY_SOCKET") or None
        usec = 0
        watchdog_pid = environ.get("WATCHDOG_PID", "")
        # WATCHDOG_PID names the process meant to ping; a child that inherited it must not.
        if not watchdog_pid or watchdog_pid == str(pid if pid is not None else os.getpid()):
            with contextlib.suppress(ValueError):
                usec = max(0, int(environ.get("WATCHDOG_USEC", "0")))
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, state: str) -> bool:
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(state.encode(), self.address)
        except OSError as exc:  # systemd gone or socket unreachable: never fatal
            logs.warning("systemd.notify_failed", state=state.split("=", 1)[0], error=str(exc))
            return False
        return True

    def ready(self, status: str = "") -> None:
        self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings: half the timeout, as sd_watchdog_enabled(3) advises."""
        if not self.address or self.watchdog_usec <= 0:
            return None
        return self.watchdog_usec / 2_000_000

    async def watchdog(self, stop: asyncio.Event) -> None:
        interval = self.watchdog_interval
        if interval is None:
            return
        while not stop.is_set():
            self.notify("WATCHDOG=1")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
