"""Inbound mail parsed in child processes, each parse under a deadline.

A thread cannot be stopped, a process can: `serve` starts a few workers and every ingest hands
its raw bytes to an idle one. A parse that outlives the deadline (the stdlib decodes RFC 2047
words in quadratic time, for one) gets its worker killed and the mail a MailParseError, so it
is quarantined with that reason while the rest of the mail flows; the worker is replaced.
Workers fork from the multiprocessing fork server, a clean single-threaded process, never from
our threaded one. Before `start()` (the CLI commands) parsing runs in the caller's process.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from mailgate import logs
from mailgate.core.mail import InboundMail, MailParseError, parse_mail
from mailgate.errors import TempFailure

START_SECONDS = 60.0  # a worker that is not ready by then is not coming


class ParseCrashed(RuntimeError):
    """The parser raised something unexpected, or its worker died: a crash of this mail."""


Parse = Callable[[bytes], InboundMail]


def _serve(conn: Connection, parse: Parse) -> None:
    """The worker's loop: raw bytes in, ("ok", InboundMail) or an error out, until EOF."""
    conn.send(("ready", None))
    while True:
        try:
            raw = conn.recv_bytes()
        except (EOFError, OSError):  # the parent closed the pipe, or died
            return
        reply: tuple[str, Any]
        try:
            reply = ("ok", parse(raw))
        except MailParseError as exc:
            reply = ("refused", str(exc))
        except Exception as exc:  # handed to the parent, which counts it as a crash
            reply = ("crashed", f"{type(exc).__name__}: {exc}")
        conn.send(reply)


class _Worker:
    def __init__(self, ctx: Any, parse: Parse) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_serve, args=(child, parse), name="mailgate-parse", daemon=True
        )
        self.process.start()
        child.close()
        # The deadline starts once the worker is ready, not while it imports.
        if not self.conn.poll(START_SECONDS):
            self.kill()
            raise TempFailure("parse worker did not start")
        self.conn.recv()

    def kill(self) -> None:
        self.process.kill()
        self.process.join(5)
        self.conn.close()

    def close(self) -> None:
        self.conn.close()  # the worker reads EOF and exits
        self.process.join(5)
        if self.process.is_alive():
            self.kill()


class ParseWorkers:
    """`parse(raw)` with a deadline, on `workers` child processes. `parse` must be a module-level
    function (the workers import it by name)."""

    def __init__(self, workers: int, timeout: float, parse: Parse = parse_mail) -> None:
        self.workers = workers
        self.timeout = timeout
        self.parse = parse
        self._ctx: Any = None
        self._idle: queue.Queue[_Worker | None] | None = None

    def start(self) -> None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["mailgate.core.mail"])  # forks start with the parser loaded
        self._ctx = ctx
        idle: queue.Queue[_Worker | None] = queue.Queue()
        for _ in range(self.workers):
            idle.put(_Worker(ctx, self.parse))
        self._idle = idle
        logs.info("parse_workers.started", workers=self.workers, timeout=self.timeout)

    def stop(self) -> None:
        """Once nothing parses any more (serve stops the listeners and pollers first)."""
        idle, self._idle = self._idle, None
        while idle is not None:
            try:
                worker = idle.get_nowait()
            except queue.Empty:
                break
            if worker is not None:
                worker.close()

    def __call__(self, raw: bytes) -> InboundMail:
        idle = self._idle
        if idle is None:
            return self.parse(raw)
        worker = idle.get()  # waits while every worker is busy
        if worker is not None and not worker.process.is_alive():
            worker.kill()  # died while idle (the OOM killer, say): not this mail's fault
            worker = None
        try:
            worker = worker or _Worker(self._ctx, self.parse)  # None: a killed one, replaced now
            worker.conn.send_bytes(raw)
            if not worker.conn.poll(self.timeout):
                worker.kill()
                worker = None
                logs.warning("parse.deadline", seconds=self.timeout, size=len(raw))
                raise MailParseError(f"over a limit: parsing took more than {self.timeout:g} s")
            kind, value = worker.conn.recv()
        except (EOFError, OSError) as exc:
            if worker is not None:
                with contextlib.suppress(OSError):
                    worker.kill()
                worker = None
            raise ParseCrashed(f"parse worker died: {type(exc).__name__}") from exc
        finally:
            idle.put(worker)
        if kind == "ok":
            return value  # type: ignore[no-any-return]
        if kind == "refused":
            raise MailParseError(value)
        raise ParseCrashed(value)
