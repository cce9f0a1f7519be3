"""SMTP and LMTP sessions in child processes of `serve` (`[inbound] smtp_processes = N`).

Why: under load one `serve` process is bound by its GIL, and the database writer (the one
serial step of intake) waited on it behind the SMTP sessions, the parse hand-offs and the
sender checks of every other message. With fronts, serve keeps the writer and the fronts do
everything before the transaction.

- serve opens the listening sockets itself (its addresses, port 0 included, are known at once)
  and starts N children, `python -m mailgate.adapters.smtp.front CONTROL LISTENER...`, which
  all accept on them: the kernel gives each new connection to one of them.
- A child builds the same App from the config and runs aiosmtpd on the inherited sockets. It
  prepares each message (checks, digests, big mails and attachments to the blob store, the
  parse in its own workers, sender checks, screening: Ingestor.prepare) and sends the
  Prepared message over CONTROL. serve runs its transaction in the group commit and answers
  when it is committed (or failed); only then does the child say 250. Nothing durable happens
  in a child: a 250 still means committed, by serve's writer.
- CONTROL frames (frames.py), child -> serve: (id, "ingest", Prepared), (None, "metrics",
  [(channel, outcome, seconds), ...]) (the counts of one turn of the loop in one frame: a
  frame per message cost a send here and a wake-up in serve) and (None, "ready", None) once
  it accepts; serve -> child:
  (id, "ok", deliveries), (id, "tempfail", text) or (id, "crashed", text).
- Stopping: serve sends SIGTERM; a child stops accepting, finishes the DATA in flight (serve
  still answers them), stops its parse workers and exits; serve stops its writer after. When
  serve is gone (even killed), CONTROL ends: every message in flight is answered 451 and the
  child exits. A child that dies is restarted with backoff; its messages in flight were not
  answered 250, so their clients send them again (the receipt makes that a duplicate if the
  commit had happened).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mailgate import frames, gctune, logs, supervise
from mailgate.adapters.smtp import (
    DataBudget,
    InboundHandler,
    InFlight,
    LmtpHandler,
    start_listener,
    store_prepared,
)
from mailgate.adapters.smtp.prepare import prepare, replay_parses
from mailgate.errors import MailgateError, TempFailure
from mailgate.metrics import Metrics
from mailgate.services.ingest import INLINE_RAW_BYTES, CrashElsewhere, Delivery, Envelope, Ingestor

BIG_FRAME = 8 << 20  # bytes; see ServeLink.ingest
Listener = tuple[str, bool, socket.socket]  # name ("smtp", "lmtp"), LMTP?, listening socket


def listening_sockets(listen: str) -> list[socket.socket]:
    """Bound and listening, as asyncio's create_server would bind them: "unix:/path", or
    "host:port" with a socket per address the host resolves to ("": every IPv4 and IPv6
    address); port 0: any free one, the same for all of them."""
    if listen.startswith("unix:"):
        path = listen[len("unix:") :]
        Path(path).unlink(missing_ok=True)  # a stale socket file from a previous run
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.listen(512)
        sock.setblocking(False)
        return [sock]
    host, _, port_text = listen.rpartition(":")
    port = int(port_text)
    found = socket.getaddrinfo(
        host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        for family, _type, _proto, _name, address in dict.fromkeys(
            (f, t, p, n, a) for f, t, p, n, a in found
        ):
            if port == 0 and sockets:  # the first one's free port, for every address
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            # IPv6 sockets only take IPv6 (IPV6_V6ONLY): IPv4 gets its own, as in asyncio.
            sock = socket.create_server(address, family=family, backlog=512)
            sock.setblocking(False)
            sockets.append(sock)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class SmtpFronts:
    """In serve: the listening sockets, the children, and their messages' transactions."""

    def __init__(
        self,
        factory: Callable[[Any], Any],
        config: Any,
        ingestor: Ingestor,
        metrics: Metrics,
        on_stored: Callable[[], None],
        *,
        count: int,
        stop_timeout: float = 60.0,
        max_restart_delay: float = 30.0,
    ) -> None:
        self.factory = factory  # picklable by reference: a module-level function
        self.config = config
        self.ingestor = ingestor
        self.metrics = metrics
        self.on_stored = on_stored
        self.count = count
        self.stop_timeout = stop_timeout
        self.max_restart_delay = max_restart_delay
        self.listeners: list[Listener] = []
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._ready: list[asyncio.Event] = []

    def listen(self, name: str, listen: str, *, lmtp: bool) -> tuple[str, int]:
        """Open the sockets of one listener; its first address, as /healthz shows it."""
        sockets = listening_sockets(listen)
        self.listeners += [(name, lmtp, sock) for sock in sockets]
        address = sockets[0].getsockname()
        return (address[0], address[1]) if isinstance(address, tuple) else (str(address), 0)

    async def start(self, timeout: float = 60.0) -> None:
        """Start every child; return once each accepts on the sockets (so serve says it is
        ready only then), or after `timeout` (a child that could not start is retried)."""
        self._ready = [asyncio.Event() for _ in range(self.count)]
        for index in range(self.count):
            self._tasks.append(asyncio.create_task(self._keep_running(index)))
        waiting = asyncio.gather(*(ready.wait() for ready in self._ready))
        try:
            await asyncio.wait_for(waiting, timeout)
        except TimeoutError:
            logs.warning("smtp_front.slow_start", after=timeout)

    async def stop(self) -> None:
        """Every child finishes its messages in flight and exits; then the sockets close."""
        self._stopping.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for _name, _lmtp, sock in self.listeners:
            sock.close()

    async def _keep_running(self, index: int) -> None:
        def on_exit(code: int | None, restart_in: float, crashed: bool) -> None:
            if crashed:  # the supervision itself failed: the listener must come back anyway
                logs.error("smtp_front.supervisor_crashed", index=index, exc_info=True)
            logs.error("smtp_front.exited", index=index, code=code, restart_in=restart_in)

        await supervise.keep_running(
            lambda: self._supervise(index), self._stopping, on_exit,
            max_delay=self.max_restart_delay,
        )  # fmt: skip

    async def _supervise(self, index: int) -> int:
        proc, ours = await asyncio.to_thread(self._spawn)
        writer: asyncio.StreamWriter | None = None
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            reader, writer = await asyncio.open_unix_connection(sock=ours)
            serving = asyncio.create_task(self._serve(reader, writer, self._ready[index]))
            await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not serving.done():  # asked to stop: the child finishes its messages first
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(asyncio.shield(serving), self.stop_timeout)
                except TimeoutError:
                    logs.error("smtp_front.kill", pid=proc.pid, after=self.stop_timeout)
                    proc.kill()
                    await serving
            else:  # its control link ended: it exits, or is made to (it must not live on)
                try:
                    await asyncio.to_thread(proc.wait, 5)
                except subprocess.TimeoutExpired:
                    logs.error("smtp_front.kill", pid=proc.pid, reason="control link ended")
                    proc.kill()
            code = await asyncio.to_thread(proc.wait)
            logs.info("smtp_front.stopped", index=index, pid=proc.pid, code=code)
            return code
        finally:
            stopping.cancel()
            if writer is not None:
                writer.close()
            else:
                ours.close()
            if proc.poll() is None:  # only when this task itself failed
                proc.kill()
                await asyncio.to_thread(proc.wait)

    def _spawn(self) -> tuple[subprocess.Popen[bytes], socket.socket]:
        ours, theirs = socket.socketpair()
        fds = [theirs.fileno()] + [sock.fileno() for _n, _l, sock in self.listeners]
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", __name__, *(str(fd) for fd in fds)],
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()  # the child holds its own copy; ours would hide its death
        fmt, level = logs.settings()
        budget = self.config.inbound.max_inflight_bytes // self.count
        specs = [(name, lmtp) for name, lmtp, _sock in self.listeners]
        try:
            frames.send(ours, (self.factory, self.config, fmt, level, specs, budget))
        except OSError:  # it died at once: reaped here, restarted by _keep_running
            proc.kill()
            proc.wait()
            ours.close()
            raise
        ours.setblocking(False)
        logs.info("smtp_front.started", pid=proc.pid)
        return proc, ours

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ready: asyncio.Event
    ) -> None:
        """Until the child's end closes; then until the transactions it asked for are done."""
        pending: set[asyncio.Task[None]] = set()
        while True:
            try:
                request_id, verb, arg = await frames.read(reader)
            except (asyncio.IncompleteReadError, ConnectionResetError):
                break  # the child is gone
            except Exception:  # a frame we cannot read: stop listening; the child is ended
                logs.error("smtp_front.bad_frame", exc_info=True)
                break
            if verb == "metrics":
                for counted in arg:
                    self.metrics.message(*counted)
                continue
            if verb == "metric":  # one count (a front started before "metrics")
                self.metrics.message(*arg)
                continue
            if verb == "ready":  # it accepts on the sockets
                ready.set()
                continue
            task = asyncio.create_task(self._answer(writer, request_id, arg))
            pending.add(task)
            task.add_done_callback(pending.discard)
        # Queued transactions still commit (their clients will send again and find them
        # there: a duplicate); serve must not stop its writer before they are done.
        await asyncio.gather(*pending, return_exceptions=True)

    async def _answer(self, writer: asyncio.StreamWriter, request_id: int, prepared: Any) -> None:
        try:
            deliveries = await store_prepared(self.ingestor, prepared)
            reply: tuple[Any, ...] = (request_id, "ok", deliveries)
        except TempFailure as exc:
            reply = (request_id, "tempfail", str(exc))
        except Exception as exc:  # MailgateError included: the child answers 451
            if not isinstance(exc, MailgateError):
                logs.error("smtp_front.store_failed", exc_info=True)
            reply = (request_id, "crashed", f"{type(exc).__name__}: {exc}")
        if reply[1] == "ok":
            self.on_stored()
        if not writer.is_closing():
            writer.write(frames.encode(reply))


# -- the child ------------------------------------------------------------------------------


class ServeLink:
    """The child's requests to serve, many in flight at once, matched by id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[tuple[str, Any]]] = {}
        self.closed = False  # serve's end closed
        self.closing = False  # this front stops: no new message
        self.big = asyncio.Semaphore(1)
        self.counts: list[tuple[str, str, float | None]] = []  # metrics not sent yet

    async def run(self) -> None:
        """Reads answers until serve's end closes; then every waiting request fails."""
        try:
            while True:
                request_id, status, value = await frames.read(self.reader)
                future = self.waiting.pop(request_id, None)
                if future is not None and not future.done():
                    future.set_result((status, value))
        except (asyncio.IncompleteReadError, ConnectionResetError):
            pass
        finally:
            self.closed = True
            for future in self.waiting.values():
                if not future.done():
                    future.set_exception(TempFailure("the serving process is gone"))
            self.waiting.clear()

    async def ingest(self, prepared: Any) -> list[Delivery]:
        if self.closed or self.closing:
            raise TempFailure("the serving process is gone" if self.closed else "stopping")
        request_id = next(self.ids)
        frame = frames.encode((request_id, "ingest", prepared))
        if len(frame) > BIG_FRAME:
            # A huge text or HTML body crosses whole (attachments never do: they are blobs),
            # and serve holds about three times a frame while it reads it: one at a time.
            async with self.big:
                return await self._ask(request_id, frame)
        return await self._ask(request_id, frame)

    async def _ask(self, request_id: int, frame: bytes) -> list[Delivery]:
        if self.closed:
            raise TempFailure("the serving process is gone")
        future: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[request_id] = future
        self.writer.write(frame)
        del frame
        status, value = await future
        if status == "ok":
            return list(value)
        if status == "tempfail":
            raise TempFailure(value)
        raise RuntimeError(f"the serving process could not store it: {value}")

    def metric(self, channel: str, outcome: str, seconds: float | None) -> None:
        """Counted now, sent with the others of this turn of the loop (one frame)."""
        if self.closed:
            return
        if not self.counts:
            asyncio.get_running_loop().call_soon(self.send_counts)
        self.counts.append((channel, outcome, seconds))

    def send_counts(self) -> None:
        counts, self.counts = self.counts, []
        if counts and not self.closed and not self.writer.is_closing():
            self.writer.write(frames.encode((None, "metrics", counts)))


class RelayedMetrics(Metrics):
    """The SMTP handler's counts, added to serve's metrics (the child serves no /metrics)."""

    def __init__(self, link: ServeLink) -> None:
        super().__init__()
        self.link = link

    def message(self, channel: str, outcome: str, seconds: float | None = None) -> None:
        self.link.metric(channel, outcome, seconds)


async def remote_ingest(
    ingestor: Ingestor, link: ServeLink, raw: bytes, envelope: Envelope
) -> list[Delivery]:
    """Prepare here; serve commits. A big mail crosses without its bytes (already a blob)."""
    prepared = await prepare(ingestor, raw, envelope)  # on the loop when it need not wait
    crash = prepared.crash
    if crash is not None:  # what recover records, as text (an exception may not pickle)
        prepared.crash = CrashElsewhere(type(crash).__name__, str(crash))
    mail = prepared.mail
    try:
        if prepared.size > INLINE_RAW_BYTES:
            prepared.raw = b""
        deliveries = await link.ingest(prepared)
    finally:
        prepared.raw, prepared.mail = raw, mail
    ingestor.accepted(prepared, deliveries)
    return deliveries


async def run_sessions(app: Any, control: socket.socket, sockets: list[socket.socket],
                       specs: list[tuple[str, bool]], budget_bytes: int) -> int:  # fmt: skip
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.set_default_executor(ThreadPoolExecutor(max_workers=64, thread_name_prefix="front"))
    cfg = app.config
    app.parsers.allow_inline()  # small mail parsed on this loop first
    await asyncio.to_thread(app.parsers.start)
    replay_parses(app.ingestor)  # prepare() parses on the loop, then prepare meets that parse
    if app.ingestor.verifier is not None:
        await asyncio.to_thread(app.ingestor.verifier.warm)
    gctune.settle()  # again: what the parsers' warm-up parse imported and built is kept too
    control.setblocking(False)
    reader, writer = await asyncio.open_unix_connection(sock=control)
    link = ServeLink(reader, writer)
    linked = asyncio.create_task(link.run())
    inflight, budget, metrics = InFlight(), DataBudget(budget_bytes), RelayedMetrics(link)
    ingest = functools.partial(remote_ingest, app.ingestor, link)
    servers = []
    for (name, lmtp), sock in zip(specs, sockets, strict=True):
        handler = (LmtpHandler if lmtp else InboundHandler)(
            app.ingestor, name, inflight, None, metrics=metrics,
            max_recipients=cfg.inbound.max_recipients, budget=budget, ingest=ingest,
        )  # fmt: skip
        servers.append(
            await start_listener("", handler, lmtp=lmtp, hostname=cfg.mailgate.hostname,
                                 max_bytes=cfg.inbound.max_message_bytes, sock=sock)
        )  # fmt: skip
    writer.write(frames.encode((None, "ready", None)))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({stopping, linked}, return_when=asyncio.FIRST_COMPLETED)
    for server in servers:
        server.close()  # this process stops accepting; its siblings go on
    while inflight.count:  # answered, by serve or with 451 once it is gone
        await inflight.idle.wait()
    link.closing = True  # a session still open gets 451 for its next message
    await asyncio.to_thread(app.parsers.stop)
    stopping.cancel()
    link.send_counts()  # (already sent, unless this turn of the loop counted one)
    writer.close()
    app.db.dispose()
    return 0


def main(argv: list[str]) -> int:
    control = socket.socket(fileno=int(argv[0]))
    sockets = [socket.socket(fileno=int(fd)) for fd in argv[1:]]
    try:
        factory, config, log_format, log_level, specs, budget = frames.receive(control)
    except EOFError:
        return 1  # serve went away before the start
    logs.setup(log_format, log_level)
    app = factory(config)
    gctune.settle()
    return asyncio.run(run_sessions(app, control, sockets, specs, budget))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
