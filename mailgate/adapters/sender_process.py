"""The outbound sender in an OS process of its own, so that rendering and sending get the
second core instead of waiting for the GIL behind the ingest writer.

The serving process runs `SenderProcess.run(stop)` as a task. It starts
`python -m mailgate.adapters.sender_process EVENTS WRITES` with one end of two socketpairs,
and sends it, pickled, the composition root (`mailgate.app.build`, by reference) and the
loaded config: the child builds the same App and runs its `Sender.serve_forever`. Then:

- EVENTS, parent -> child: one byte per wake-up (`Sender.wakeup`, set by the SMTP handlers and
  the portal after each store; coalesced, never more than one unread);
- EVENTS, child -> parent: one line per batch, "sent=N retried=N failed=N", added to the
  serving process's metrics (`mailgate_outbound_total`);
- WRITES: the child's two write transactions per batch (lease, record) are run by the serving
  process in its group commits, in turn with the ingest jobs. On SQLite a second process
  taking the write lock itself is starved by a busy ingest writer (measured: seconds per
  transaction under load). A record serve cannot take (it is gone, or shutting down) the child
  writes itself: a mail that went out is always recorded.

The child stops after the batch in hand (its mails in flight finish, the batch is recorded, the
mails not yet tried are given back) on SIGTERM or SIGINT, and when the socket ends: the serving
process is gone, even killed with SIGKILL. A child that dies is restarted with backoff.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from mailgate import frames, gctune, logs, supervise
from mailgate.errors import TempFailure
from mailgate.metrics import Metrics
from mailgate.services.outbox_queue import ClaimedRow, OutboxQueue, Outcome
from mailgate.store.models import Outbox

Write = Callable[[Callable[[Any], Any]], Any]  # GroupCommitter.run: a job in a group commit

RESULTS = ("sent", "retried", "failed")


class SenderProcess:
    """Supervises the sender's process from the serving process's event loop."""

    def __init__(
        self,
        factory: Callable[[Any], Any],
        config: Any,
        wakeup: asyncio.Event,
        metrics: Metrics,
        *,
        write: Write | None = None,
        queue: OutboxQueue | None = None,
        stop_timeout: float = 60.0,
        max_restart_delay: float = 30.0,
    ) -> None:
        self.factory = factory  # picklable by reference: a module-level function
        self.config = config
        self.wakeup = wakeup
        self.metrics = metrics
        # With both, the child's leases and records go through `write` (serve's committer).
        self.write = write if queue is not None else None
        self.queue = queue
        self.stop_timeout = stop_timeout
        self.max_restart_delay = max_restart_delay

    async def run(self, stop: asyncio.Event) -> None:
        def on_exit(code: int | None, delay: float, crashed: bool) -> None:
            if crashed:
                logs.error("sender.supervisor_crashed", exc_info=True)
            logs.error("sender.exited", code=code, restart_in=delay)

        await supervise.keep_running(
            lambda: self._supervise(stop), stop, on_exit, max_delay=self.max_restart_delay
        )

    async def _supervise(self, stop: asyncio.Event) -> int:
        proc, ours, writes = await asyncio.to_thread(self._spawn)
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        forward = asyncio.create_task(self._forward_wakeups(writer))
        reports = asyncio.create_task(self._read_reports(reader))
        stopped = asyncio.create_task(stop.wait())
        helpers = [forward, stopped]
        if writes is not None:
            helpers.append(asyncio.create_task(self._serve_writes(writes)))
        try:
            await asyncio.wait({reports, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not reports.done():  # asked to stop: the child finishes its batch first
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(asyncio.shield(reports), self.stop_timeout)
                except TimeoutError:
                    logs.error("sender.kill", pid=proc.pid, after=self.stop_timeout)
                    proc.kill()
            return await asyncio.to_thread(proc.wait)
        finally:
            for task in helpers:
                task.cancel()
            writer.close()
            if writes is not None:
                writes.close()
            if proc.poll() is None:  # only when this task itself failed
                proc.kill()
                await asyncio.to_thread(proc.wait)

    def _spawn(self) -> tuple[subprocess.Popen[bytes], socket.socket, socket.socket | None]:
        ours, theirs = socket.socketpair()
        writes, their_writes = socket.socketpair() if self.write else (None, None)
        fds = [theirs.fileno()] + ([their_writes.fileno()] if their_writes else [])
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", __name__, *(str(fd) for fd in fds)],
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
            )
        finally:
            # The child holds its own copies; ours would hide its death.
            for sock in (theirs, their_writes):
                if sock is not None:
                    sock.close()
        fmt, level = logs.settings()
        _send_frame(ours, (self.factory, self.config, fmt, level))
        ours.setblocking(False)
        if writes is not None:
            writes.setblocking(False)
        return proc, ours, writes

    async def _serve_writes(self, sock: socket.socket) -> None:
        """Runs each of the child's leases and records as a job of serve's group commits."""
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        while True:
            try:
                verb, arg = await frames.read(reader)
            except (asyncio.IncompleteReadError, ConnectionResetError):
                return  # the child is gone
            try:
                reply: tuple[str, Any] = ("ok", await asyncio.to_thread(self._run_job, verb, arg))
            except Exception as exc:  # told to the child, which writes itself or retries
                if not isinstance(exc, TempFailure):
                    logs.error("sender.write_failed", exc_info=True, job=verb)
                reply = ("failed", f"{type(exc).__name__}: {exc}")
            writer.write(frames.encode(reply))
            try:
                await writer.drain()
            except ConnectionResetError:
                return

    def _run_job(self, verb: str, arg: Any) -> Any:
        assert self.write is not None and self.queue is not None
        queue = self.queue
        if verb == "claim":
            return self.write(lambda s: queue.claim_columns_in(s, arg))
        return self.write(lambda s: queue.settle_in(s, arg))

    async def _forward_wakeups(self, writer: asyncio.StreamWriter) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            # Bytes still unread mean the child is already due to wake: no pile-up.
            if writer.transport.get_write_buffer_size() == 0:
                writer.write(b"w")

    async def _read_reports(self, reader: asyncio.StreamReader) -> None:
        """Until the child's end of the socket closes: it exited, or was killed."""
        while True:
            try:
                line = await reader.readline()
            except ConnectionResetError:  # it exited with wake-up bytes unread
                return
            if not line:
                return
            for field in line.decode("ascii", "replace").split():
                name, _, number = field.partition("=")
                if name in RESULTS and number.isdigit():
                    for _ in range(int(number)):
                        self.metrics.outbound_result(name)


_COLUMNS = tuple(c.name for c in Outbox.__table__.columns)  # type: ignore[attr-defined]


_send_frame = frames.send
_receive_frame = frames.receive


# -- the child ----------------------------------------------------------------------------------


class WritesThroughServe:
    """The sender's queue in its own process: leases and records run in serve's group commits
    (see the module's docstring); the child's own queue (direct transactions) when serve cannot."""

    def __init__(self, own: OutboxQueue, sock: socket.socket) -> None:
        self.own = own
        self.sock = sock
        self.lease = own.lease

    def _call(self, verb: str, arg: Any) -> Any:
        _send_frame(self.sock, (verb, arg))
        status, value = _receive_frame(self.sock)
        if status != "ok":
            raise TempFailure(value)
        return value

    def claim_due(self, limit: int = 100) -> list[ClaimedRow]:
        try:
            rows = self._call("claim", limit)
        except (OSError, EOFError):
            return []  # serve is gone: the child is about to stop, it starts nothing new
        return [ClaimedRow(**row) for row in rows]

    def settle(self, outcomes: list[Outcome]) -> dict[int, str]:
        try:
            return dict(self._call("settle", list(outcomes)))
        except (OSError, EOFError, TempFailure) as exc:
            # The mails went out: record them ourselves (a second record of a batch serve did
            # record, its answer lost, changes nothing: see OutboxQueue.settle_in).
            logs.warning("sender.record_directly", rows=len(outcomes), reason=str(exc))
            return self.own.settle(outcomes)


def main(argv: list[str]) -> int:
    sock = socket.socket(fileno=int(argv[0]))
    try:
        factory, config, log_format, log_level = _receive_frame(sock)
    except EOFError:
        return 1  # serve went away before the start
    logs.setup(log_format, log_level)
    stopping = threading.Event()
    # A signal must also end a wait in select(): its handler only sets a flag.
    sig_r, sig_w = os.pipe()
    os.set_blocking(sig_w, False)
    signal.set_wakeup_fd(sig_w)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    app = factory(config)
    gctune.settle()
    sender = app.sender
    if len(argv) > 1:
        sender.queue = WritesThroughServe(sender.queue, socket.socket(fileno=int(argv[1])))

    def report(counts: Counter[str]) -> None:
        line = " ".join(f"{name}={counts[name]}" for name in RESULTS if counts[name])
        try:
            sock.sendall(line.encode("ascii") + b"\n")
        except OSError:
            stopping.set()  # the serving process is gone

    sender.on_settled = report
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(sig_r, selectors.EVENT_READ)

    def wait(timeout: float) -> bool:
        woken = False
        for key, _ in selector.select(timeout):
            if key.fileobj is sock:
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    stopping.set()  # the serving process is gone
                woken = True
            else:
                os.read(sig_r, 512)
        return woken

    logs.info("sender.started", pid=os.getpid())
    try:
        sender.serve_forever(wait, stopping.is_set)
    finally:
        app.db.dispose()
    logs.info("sender.stopped", pid=os.getpid())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
