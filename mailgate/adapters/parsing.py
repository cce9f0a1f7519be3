"""Inbound mail parsed in child processes, each parse under a deadline.

A thread cannot be stopped, a process can: `serve` starts a few workers and every ingest hands
its raw bytes to an idle one. A parse that outlives the deadline (the stdlib decodes RFC 2047
words in quadratic time, for one) gets its worker killed and the mail a MailParseError, so it
is quarantined with that reason while the rest of the mail flows; the worker is replaced.
Workers fork from the multiprocessing fork server, a clean single-threaded process, never from
our threaded one. Before `start()` (the CLI commands) parsing runs in the caller's process.

Big mail (issue 11: one 25 MB attachment lifted the process tree by ~300 MB): long base64 runs
are decoded outside the MIME parser (core/hollow.py). Given the blob store, a worker writes
every attachment of STORE_BYTES or more itself and sends back a BlobRef (digest and size), so
the parent never receives, unpickles or holds those bytes; `BlobStore.put` of a BlobRef only
checks it is there. A mail of BY_BLOB_BYTES or more, which ingest stored before parsing it, is
not sent through the pipe: the worker maps its blob file (mmap) and core/hollow.py drops each
slice from the worker's pages once scanned or decoded, so the worker never holds the mail whole
(a 34 MB mail lifted it by 36 MiB read whole, by a few MiB mapped). A worker that parsed a
mail of RECYCLE_BYTES or more is replaced, so the memory the parse took goes back to the
system instead of staying in its heap.

On an event loop (`parse_async`, the SMTP fronts' path for mail of INLINE_PARSE_BYTES or less)
the hop to a worker cost more CPU than the parse itself (~0.6 ms against ~0.4 ms for a 5 KB
mail: the pipe, the pickles, the wake-ups and the caches of two processes). So, given an
`inline_budget`, such a mail is parsed right there first, under a timer of that much CPU time:
the budget bounds how long the loop is held. A parse that outlives it is abandoned (the timer's
signal raises OverBudget, a BaseException no `except Exception` swallows) and the mail goes to
a worker under the full deadline, as before; inline parsing then pauses for INLINE_PAUSE seconds,
so a stream of hostile mail holds the loop for at most one budget in each pause. Outcomes are
the workers': the mail, MailParseError (refused), TempFailure, or ParseCrashed for anything
else the parser raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import mmap
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from mailgate import gctune, logs
from mailgate.core.hollow import Raw, parse_hollowed
from mailgate.core.mail import BlobRef, InboundMail, MailParseError, parse_mail
from mailgate.errors import TempFailure
from mailgate.store.blobs import BlobStore

START_SECONDS = 60.0  # a worker that is not ready by then is not coming
STORE_BYTES = 1 << 20  # attachments from this size are stored by the worker, not sent back
BY_BLOB_BYTES = 1 << 20  # mails from this size, already stored, are read by the worker itself
# What a request to a worker is: a digest (the mail is in the blob store), the bytes in the
# next message (a big mail: never copied into one with its tag), or the bytes after the tag.
BY_BLOB, BY_BYTES, INLINE = b"blob:", b"bytes", b"data:"
RECYCLE_BYTES = 8 << 20  # after a mail this big, the worker is replaced by a fresh one
INLINE_PARSE_BYTES = 64 << 10  # parse_async parses mails up to this size on the loop first
INLINE_BUDGET = 0.05  # CPU seconds a parse may hold an SMTP process's loop (allow_inline)
INLINE_PAUSE = 1.0  # seconds without inline parsing after a parse outlived its budget
# A short plain mail whose text is long enough for the language detector: parsed once at
# start() when parsing inline, so the first mail does not pay for the imports and the models.
_WARM_MAIL = (
    b"From: warm@example.invalid\r\nTo: warm@example.invalid\r\nSubject: warm\r\n"
    b"Message-ID: <warm@example.invalid>\r\n\r\n"
    b"Bonjour, mon imprimante ne marche plus depuis ce matin, pouvez-vous m'aider ?\r\n"
)


Parse = Callable[[bytes], InboundMail]


class ParseCrashed(RuntimeError):
    """The parser raised something unexpected, or its worker died: a crash of this mail."""


class OverBudget(BaseException):
    """An inline parse outlived its budget (raised by the timer's signal handler)."""


# The timer of inline parses is ITIMER_PROF, the process's CPU time: a parse descheduled under
# load is not cut short, and SIGALRM stays free for others (pytest-timeout's). Past the budget
# its signal comes again every BUDGET_REPEAT seconds until the parse gives up: a bare `except:`
# on the way (the stdlib's header parser has one) swallows one OverBudget, not the next. The
# handler raises only while a parse is armed, in the main thread: a late signal is ignored.
BUDGET_REPEAT = 0.005
_armed = False


def _on_budget_signal(_signum: int, _frame: object) -> None:
    if _armed:
        raise OverBudget


def parse_within(budget: float, parse: Parse, raw: bytes) -> InboundMail | None:
    """parse(raw), or None if it took more than `budget` seconds of CPU (main thread only)."""
    global _armed
    if signal.getsignal(signal.SIGPROF) is not _on_budget_signal:
        signal.signal(signal.SIGPROF, _on_budget_signal)
    try:
        try:
            _armed = True
            signal.setitimer(signal.ITIMER_PROF, budget, BUDGET_REPEAT)
            return parse(raw)
        finally:
            # First, before any call: the interpreter runs a signal's handler only at a call
            # or a loop's jump, so none can raise between here and the end.
            _armed = False
            signal.setitimer(signal.ITIMER_PROF, 0)
    except OverBudget:
        return None


def _write_blob(blobs: BlobStore, pieces: Iterable[bytes]) -> BlobRef:
    with blobs.writer() as writer:
        for piece in pieces:
            writer.write(piece)
        return writer.commit()


def parse_storing(raw: Raw, parse: Parse, blobs: BlobStore | None) -> InboundMail:
    """parse(raw), big base64 bodies decoded outside the parser; with a blob store, every
    attachment of STORE_BYTES or more written to it and given as a BlobRef."""
    if blobs is None:
        return parse_hollowed(raw, parse)
    mail = parse_hollowed(raw, parse, lambda pieces: _write_blob(blobs, pieces))
    if not any(
        isinstance(a.payload, bytes) and len(a.payload) >= STORE_BYTES for a in mail.attachments
    ):
        return mail
    # Decoded by the parser itself (quoted-printable, a forwarded message...): stored here too.
    return replace(
        mail,
        attachments=tuple(
            replace(a, payload=BlobRef(blobs.put(a.payload), len(a.payload)))
            if isinstance(a.payload, bytes) and len(a.payload) >= STORE_BYTES
            else a
            for a in mail.attachments
        ),
    )


def _open_stored(blobs: BlobStore, digest: str) -> Raw:
    """A big mail the parent already stored: its blob file mapped read-only, else (no local
    file: an object store's blob not cached here) its bytes read from the store once."""
    local = blobs.local_path(digest)
    try:
        with open(local, "rb") as fh:
            return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)  # outlives the fd
    except (OSError, ValueError):  # not here (ValueError: an empty file cannot be mapped)
        return blobs.get(digest)


def _close(raw: Raw) -> None:
    if isinstance(raw, mmap.mmap):
        with contextlib.suppress(BufferError):  # still exported: unmapped when collected
            raw.close()


def _serve(conn: Connection, parse: Parse, blobs: BlobStore | None) -> None:
    """The worker's loop: raw bytes in, ("ok", InboundMail) or an error out, until EOF."""
    # A stop signal (systemd's SIGTERM to every process of the unit, Ctrl-C's SIGINT to the
    # terminal's process group) ends an idle worker at once, and a busy one after the parse
    # in hand: killed midway, that mail would count a crash (quarantined at the third).
    busy, stop = False, False

    def on_stop(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True
        if not busy:
            raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    gctune.settle()
    conn.send(("ready", None))
    while not stop:
        raw: Raw
        try:
            tag = conn.recv_bytes()
            busy = True
            if tag.startswith(INLINE):
                raw = tag[len(INLINE) :]
            elif tag.startswith(BY_BLOB) and blobs is not None:
                raw = _open_stored(blobs, tag[len(BY_BLOB) :].decode("ascii"))
            else:
                raw = conn.recv_bytes()
        except (EOFError, OSError):  # the parent closed the pipe, or died
            return
        reply: tuple[str, Any]
        try:
            reply = ("ok", parse_storing(raw, parse, blobs))
        except MailParseError as exc:
            reply = ("refused", str(exc))
        except TempFailure as exc:  # the blob store is full or gone: the mail waits
            reply = ("tempfail", str(exc))
        except Exception as exc:  # handed to the parent, which counts it as a crash
            reply = ("crashed", f"{type(exc).__name__}: {exc}")
        finally:
            _close(raw)
        del raw
        # pickle itself, not conn.send: multiprocessing's pickler copies the copyreg table
        # for every message. The parent reads it with pickle.loads.
        conn.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
        busy = False


class _Worker:
    def __init__(self, ctx: Any, parse: Parse, blobs: BlobStore | None) -> None:
        # parse_async's registration of the pipe with its event loop, kept from one parse to
        # the next (an add_reader and a remove_reader per mail were two epoll_ctl calls): the
        # loop and a duplicate of the pipe's descriptor, so a thread that closes the pipe (a
        # big mail's parse, a kill) never leaves the loop watching a number reused since.
        self.watch: tuple[asyncio.AbstractEventLoop, int] | None = None
        self.waiter: asyncio.Future[bytes | None] | None = None  # parse_async's, for a reply
        # A thread parsed on it since (a big mail): the loop may still hold a wake-up for that
        # reply, which the thread has read; parse_async then registers the pipe afresh (the
        # removal cancels that wake-up), so it never reads a reply that is not there yet.
        self.shared = False
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_serve, args=(child, parse, blobs), name="mailgate-parse", daemon=True
        )
        self.process.start()
        child.close()
        # The deadline starts once the worker is ready, not while it imports.
        if not self.conn.poll(START_SECONDS):
            self.kill()
            raise TempFailure("parse worker did not start")
        self.conn.recv()

    def watch_on(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Registered with `loop` for its replies (kept until the pipe ends or a reply comes
        that no parse of the loop waits for); False if another running loop has it."""
        if self.shared:
            self.shared = False
            if self.watch is not None and self.watch[0] is loop:
                self.unwatch()
        if self.watch is not None:
            if self.watch[0] is loop:
                return True
            if not self.watch[0].is_closed():
                return False
            self.unwatch()
        fd = os.dup(self.conn.fileno())
        try:
            loop.add_reader(fd, self._on_readable)
        except BaseException:
            os.close(fd)
            raise
        self.watch = (loop, fd)
        return True

    def unwatch(self) -> None:
        """On the watching loop's thread, or once that loop is closed."""
        if self.watch is None:
            return
        loop, fd = self.watch
        self.watch = None
        if not loop.is_closed():
            loop.remove_reader(fd)
        os.close(fd)

    def _on_readable(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is None:  # a thread's parse, or the end of an idle worker: stop watching
            self.unwatch()
            return
        if waiter.done():
            return
        try:  # read here: left unread, the pipe would wake the loop again before the parse
            waiter.set_result(self.conn.recv_bytes())
        except (EOFError, OSError) as exc:
            waiter.set_exception(exc)

    def _drop_watch(self) -> None:
        """Before the pipe closes: the loop's registration goes now when this is its thread
        (or it is closed); from another thread the loop drops it at the end it reads."""
        if self.watch is None:
            return
        loop = self.watch[0]
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop or loop.is_closed():
            self.unwatch()

    def kill(self) -> None:
        self._drop_watch()
        self.process.kill()
        self.process.join(5)
        self.conn.close()

    def close(self) -> None:
        self._drop_watch()
        self.conn.close()  # the worker reads EOF and exits
        self.process.join(5)
        if self.process.is_alive():
            self.kill()


class ParseWorkers:
    """`parse(raw)` with a deadline, on `workers` child processes. `parse` must be a module-level
    function (the workers import it by name). With `blobs`, big attachments come back as
    BlobRefs, already stored."""

    def __init__(
        self,
        workers: int,
        timeout: float,
        parse: Parse = parse_mail,
        blobs: BlobStore | None = None,
        recycle_bytes: int = RECYCLE_BYTES,
        inline_budget: float = 0.0,
    ) -> None:
        self.workers = workers
        self.timeout = timeout
        self.parse = parse
        self.blobs = blobs
        self.recycle_bytes = recycle_bytes
        self.inline_budget = 0.0
        self.allow_inline(inline_budget)
        self._inline_paused_until = 0.0
        self._ctx: Any = None
        self._idle: queue.Queue[_Worker | None] | None = None
        self._slots: asyncio.Semaphore | None = None  # parse_async's turns: one per worker

    def allow_inline(self, budget: float = INLINE_BUDGET) -> None:
        """parse_async parses small mail on its loop first, within `budget` (the module's
        docstring; never more than the deadline itself); 0 turns it off. Before start(): for
        the process that runs SMTP sessions, whose parser start() then warms up."""
        self.inline_budget = min(budget, self.timeout)

    def start(self) -> None:
        ctx = multiprocessing.get_context("forkserver")
        # Forks start with the parser loaded.
        ctx.set_forkserver_preload(["mailgate.core.mail", "mailgate.adapters.parsing"])
        self._ctx = ctx
        idle: queue.Queue[_Worker | None] = queue.Queue()
        for _ in range(self.workers):
            idle.put(self._spawn())
        self._idle = idle
        if self.inline_budget:  # imports and models loaded now, not on the first mail
            with contextlib.suppress(Exception):
                parse_hollowed(_WARM_MAIL, self.parse)
        logs.info(
            "parse_workers.started",
            workers=self.workers,
            timeout=self.timeout,
            inline_budget=self.inline_budget,
        )

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

    def _stored(self, raw: bytes) -> str | None:
        """The digest of a big mail already in the blob store (ingest stores the raw message
        before parsing it), else None."""
        if self.blobs is None or len(raw) < BY_BLOB_BYTES:
            return None
        digest = hashlib.sha256(raw).hexdigest()
        return digest if self.blobs.exists(digest) else None

    def _request(self, raw: bytes) -> bytes:
        """What the worker is sent first: the digest of a big mail it reads from the blob
        store, the tag of a big mail sent next on its own, or a small mail after its tag
        (one message: one write here, one read there)."""
        stored = self._stored(raw)
        if stored is not None:
            return BY_BLOB + stored.encode("ascii")
        return BY_BYTES if len(raw) >= BY_BLOB_BYTES else INLINE + raw

    def _spawn(self) -> _Worker:
        return _Worker(self._ctx, self.parse, self.blobs)

    def _recycle(self, worker: _Worker) -> _Worker | None:
        """A fresh worker for one that parsed a big mail (its heap keeps what the parse took);
        None if it will not start (the next parse tries again)."""
        with contextlib.suppress(OSError):
            worker.close()
        try:
            return self._spawn()
        except TempFailure:
            return None

    @property
    def started(self) -> bool:
        return self._idle is not None

    async def parse_async(self, raw: bytes) -> InboundMail:
        """`self(raw)` for a mail under BY_BLOB_BYTES, awaited on an event loop instead of
        holding a thread: the reply is waited for with the loop's reader on the pipe. Same
        deadline, outcomes and errors; a worker to (re)start is started in a thread. With an
        inline budget, a small mail is parsed on the loop first (the module's docstring)."""
        idle = self._idle
        if idle is None or len(raw) >= BY_BLOB_BYTES:
            return await asyncio.to_thread(self, raw)
        if self._inline_now(raw):
            mail = self._parse_inline(raw)
            if mail is not None:
                return mail
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers)
        async with self._slots:  # the loop's parses wait here, not in idle.get()
            try:
                worker = idle.get_nowait()
            except queue.Empty:  # a thread has one (a big mail): wait for it there
                worker = await asyncio.to_thread(idle.get)
            try:
                if worker is None:  # a killed one, replaced now
                    worker = await asyncio.to_thread(self._spawn)
                request = INLINE + raw
                try:
                    worker.conn.send_bytes(request)  # (fits the pipe: the worker reads it all)
                except OSError:  # it died while idle: not this mail's fault (see __call__)
                    worker.kill()
                    worker = None
                    worker = await asyncio.to_thread(self._spawn)
                    worker.conn.send_bytes(request)
                del request
                reply = await _reply(worker, self.timeout)
                if reply is None:
                    worker.kill()
                    worker = None
                    logs.warning("parse.deadline", seconds=self.timeout, size=len(raw))
                    raise MailParseError(f"over a limit: parsing took more than {self.timeout:g} s")
                kind, value = pickle.loads(reply)  # noqa: S301
                del reply
            except (EOFError, OSError) as exc:
                if worker is not None:
                    with contextlib.suppress(OSError):
                        worker.kill()
                    worker = None
                raise ParseCrashed(f"parse worker died: {type(exc).__name__}") from exc
            except BaseException:  # cancelled while it parses: its reply would be the next's
                if worker is not None:
                    with contextlib.suppress(OSError):
                        worker.kill()
                    worker = None
                raise
            finally:
                idle.put(worker)
        return _outcome(kind, value)

    def _inline_now(self, raw: bytes) -> bool:
        return (
            self.inline_budget > 0
            and len(raw) <= INLINE_PARSE_BYTES
            and time.monotonic() >= self._inline_paused_until
            and threading.current_thread() is threading.main_thread()
        )

    def _parse_inline(self, raw: bytes) -> InboundMail | None:
        """The mail parsed here within the budget, its error raised as a worker's would be;
        None if it outlived the budget (a worker parses it then)."""
        try:
            mail = parse_within(self.inline_budget, self._parse_small, raw)
        except (MailParseError, TempFailure):
            raise
        except Exception as exc:  # as a worker reports it: a crash of this mail
            raise ParseCrashed(f"{type(exc).__name__}: {exc}") from exc
        if mail is None:
            self._inline_paused_until = time.monotonic() + INLINE_PAUSE
            logs.info("parse.over_budget", seconds=self.inline_budget, size=len(raw))
        return mail

    def _parse_small(self, raw: bytes) -> InboundMail:
        return parse_hollowed(raw, self.parse)  # (no run long enough to be hollowed)

    def __call__(self, raw: bytes) -> InboundMail:
        idle = self._idle
        if idle is None:
            return parse_hollowed(raw, self.parse)
        worker = idle.get()  # waits while every worker is busy
        if worker is not None:
            worker.shared = True  # (see _Worker.shared)
        try:
            worker = worker or self._spawn()  # None: a killed one, replaced now
            request = self._request(raw)
            try:
                worker.conn.send_bytes(request)
            except OSError:  # its end is closed: it died while idle (the OOM killer, say),
                worker.kill()  # not this mail's fault; found here, not by a check per mail
                worker = None
                worker = self._spawn()
                worker.conn.send_bytes(request)
            if request == BY_BYTES:
                worker.conn.send_bytes(raw)
            if not worker.conn.poll(self.timeout):
                worker.kill()
                worker = None
                logs.warning("parse.deadline", seconds=self.timeout, size=len(raw))
                raise MailParseError(f"over a limit: parsing took more than {self.timeout:g} s")
            kind, value = pickle.loads(worker.conn.recv_bytes())  # noqa: S301  (our worker)
        except (EOFError, OSError) as exc:
            if worker is not None:
                with contextlib.suppress(OSError):
                    worker.kill()
                worker = None
            raise ParseCrashed(f"parse worker died: {type(exc).__name__}") from exc
        finally:
            if worker is not None and len(raw) >= self.recycle_bytes:
                worker = self._recycle(worker)
            idle.put(worker)
        return _outcome(kind, value)


def _outcome(kind: str, value: Any) -> InboundMail:
    """A worker's reply: the mail, or the error it stands for."""
    if kind == "ok":
        return value  # type: ignore[no-any-return]
    if kind == "refused":
        raise MailParseError(value)
    if kind == "tempfail":
        raise TempFailure(value)
    raise ParseCrashed(value)


async def _reply(worker: _Worker, timeout: float) -> bytes | None:
    """The worker's reply, read by its watch on the loop; None after `timeout`."""
    loop = asyncio.get_running_loop()
    if not worker.watch_on(loop):  # (another running loop has it: watched for this reply)
        return worker.conn.recv_bytes() if await _readable(worker.conn, timeout) else None
    waiter: asyncio.Future[bytes | None] = loop.create_future()
    worker.waiter = waiter
    deadline = loop.call_later(timeout, _settle, waiter)  # (wait_for costs a task more)
    try:
        return await waiter
    finally:
        deadline.cancel()
        worker.waiter = None


def _settle(waiter: asyncio.Future[bytes | None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _readable(conn: Connection, timeout: float) -> bool:
    """Whether `conn` has something to read (a reply, or the end) within `timeout`."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[bool] = loop.create_future()

    def settle(value: bool) -> None:
        if not ready.done():
            ready.set_result(value)

    fd = conn.fileno()
    loop.add_reader(fd, settle, True)
    deadline = loop.call_later(timeout, settle, False)  # (wait_for costs a task more)
    try:
        return await ready
    finally:
        deadline.cancel()
        loop.remove_reader(fd)
