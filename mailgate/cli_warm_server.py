"""The warm command process (see mailgate/cli_warm.py for what it is and the wire protocol).

`keep_warm` runs in serve: it starts `python -m mailgate.cli_warm_server SOCKET` and starts it
again if it ends (code changed, a crash). Its standard input is a pipe from serve: when that
ends (serve stopping, or gone, even killed), it stops accepting, lets the commands in hand
finish and exits.

The process itself imports what commands use, then only accepts, checks and forks: it stays
single-threaded, so that a fork copies no lock some other thread held.
"""

from __future__ import annotations

import asyncio
import atexit
import io
import json
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, NoReturn

from mailgate import cli_warm, logs, supervise

EX_SOFTWARE = 70
READ_TIMEOUT = 5.0  # a caller that connects and sends nothing holds no one up for longer
STOP_TIMEOUT = 60.0  # serve stopping: commands in hand get this long to finish
NICENESS = 10


def preload() -> None:
    """What the commands import: paid once here instead of per command."""
    import alembic.command  # db upgrade
    import alembic.config  # noqa: F401

    import mailgate.app  # most of mailgate: Starlette, the sender...
    import mailgate.cli
    import mailgate.cli_articles
    import mailgate.store.db
    import mailgate.wiring  # noqa: F401

    try:
        import psycopg  # noqa: F401  (PostgreSQL's driver, when installed)
    except ImportError:
        pass


def code_stamp() -> tuple[tuple[str, int, int], ...]:
    """mailgate's loaded modules and the import path's folders as (path, mtime, size): a
    change means an upgrade since this process started, which would run the old code."""
    files = {
        getattr(module, "__file__", None)
        for name, module in list(sys.modules.items())
        if name == "mailgate" or name.startswith("mailgate.")
    }
    entries = [*sorted(f for f in files if f), *(p for p in sys.path if p)]
    stamp = []
    for entry in entries:
        try:
            st = os.stat(entry)
        except OSError:
            continue
        stamp.append((entry, st.st_mtime_ns, st.st_size))
    return tuple(stamp)


class Refused(Exception):
    """This command cannot run here as it would in the caller's own process."""


class WarmServer:
    def __init__(self, sock_path: Path) -> None:
        self.path = sock_path
        self.children: dict[int, tuple[socket.socket, str]] = {}  # pid: connection, command
        self.stopping = False
        self.listener: socket.socket | None = None
        self.inode = 0
        self.stamp: tuple[tuple[str, int, int], ...] = ()
        self.wake_r, self.wake_w = os.pipe()
        self.selector = selectors.DefaultSelector()

    def run(self) -> int:
        preload()
        if threading.active_count() != 1:  # forking would copy a lock another thread holds
            logs.error("cli_warm.threads", count=threading.active_count())
            return 2
        self.stamp = code_stamp()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select through the pipe
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop())
        self.listener = self._bind()
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(0, selectors.EVENT_READ, "parent")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        while not (self.stopping and not self.children):
            for key, _ in self.selector.select():
                if key.data == "accept" and not self.stopping:
                    self._accept()
                elif key.data == "parent" and not os.read(0, 512):
                    self.selector.unregister(0)
                    self._stop()
                elif key.data == "wake":
                    while _drain(self.wake_r):
                        pass
            self._reap()
        return 0

    def _bind(self) -> socket.socket:
        # The data folder may not exist yet (PostgreSQL, and no blob written so far): without
        # it the bind failed, and serve restarted this process until something made it.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(os.fspath(tmp))
        os.chmod(tmp, 0o600)  # serve's user only (peer credentials are checked too)
        sock.listen(64)
        os.replace(tmp, self.path)  # a stale socket of a killed predecessor is replaced at once
        self.inode = os.stat(self.path).st_ino
        return sock

    def _stop(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        if self.listener is not None:
            self.selector.unregister(self.listener)
            self.listener.close()
            try:
                if os.stat(self.path).st_ino == self.inode:  # not a successor's
                    self.path.unlink()
            except OSError:
                pass

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        fds: list[int] = []
        try:
            conn.settimeout(READ_TIMEOUT)
            request, fds = _read_request(conn)
            self._check(conn, request)
            pid = os.fork()
        except Refused as exc:
            logs.info("cli_warm.refused", reason=str(exc))  # the caller runs it itself
            _send(conn, f"local {exc}\n")
            conn.close()
        except (OSError, ValueError, KeyError, TypeError) as exc:  # a bad request, fork failed
            logs.warning("cli_warm.request_failed", error=f"{type(exc).__name__}: {exc}")
            _send(conn, "local failed\n")
            conn.close()
        else:
            if pid == 0:
                self._become_command(conn, request, fds)
            self.children[pid] = (conn, _command_words(request["argv"]))
            _send(conn, "run\n")
        finally:
            for fd in fds:
                os.close(fd)

    def _check(self, conn: socket.socket, request: dict[str, Any]) -> None:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        if uid != os.getuid():
            raise Refused("another user")
        for path, dev, ino in request["landmarks"]:
            try:
                st = os.stat(path)
            except OSError:
                raise Refused(f"{path} not seen here") from None
            if (st.st_dev, st.st_ino) != (dev, ino):
                raise Refused(f"{path} is another file here")
        if code_stamp() != self.stamp:
            self._stop()  # exit once the commands in hand end: serve starts a fresh one
            raise Refused("code changed")

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn, command = self.children.pop(pid, (None, ""))
            if conn is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if code < 0:  # killed by a signal, it could not say it: a shell's 128+N
                code = 128 - code
                _send(conn, f"exit {code}\n")
            conn.close()
            logs.info("cli_warm.ran", command=command, pid=pid, code=code)

    def _become_command(
        self, conn: socket.socket, request: dict[str, Any], fds: list[int]
    ) -> NoReturn:
        """In the forked child: the caller's command, as its own process would run it."""
        code = EX_SOFTWARE
        try:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self.selector.close()
            for sock in (self.listener, *(c for c, _ in self.children.values())):
                if sock is not None:
                    sock.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            for fd in fds:
                if fd > 2:
                    os.close(fd)
            fds.clear()
            os.chdir(request["cwd"])
            os.umask(request["umask"])
            os.environ.clear()
            os.environ.update(request["env"])
            sys.stdin, sys.stdout, sys.stderr = _streams(request["streams"])
            sys.argv = [request["argv0"], *request["argv"]]
            conn.settimeout(None)
            threading.Thread(target=_relay_signals, args=(conn,), daemon=True).start()
            from mailgate.cli import main

            code = main(request["argv"])
        except SystemExit as exc:
            code = _exit_code(exc.code)
        except KeyboardInterrupt:
            code = 130
        except BaseException:
            traceback.print_exc()
            code = EX_SOFTWARE
        finally:
            # Done: the caller leaving once it reads the status is no hangup of ours.
            for sig in cli_warm.FORWARDED_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
            try:
                atexit._run_exitfuncs()  # what the interpreter runs at a normal exit
                sys.stdout.flush()
                sys.stderr.flush()
            except BaseException:  # a reader gone: as the interpreter's own exit, 120
                code = code or 120
            _send(conn, f"exit {code}\n")
            os._exit(code)


def _command_words(argv: list[str]) -> str:
    """The command, for the log: its first two words, no option values (an address...)."""
    from mailgate.cli import command_words

    return " ".join(command_words(argv)[:2])


def _drain(fd: int) -> bool:
    try:
        return bool(os.read(fd, 512))
    except BlockingIOError:
        return False


def _send(conn: socket.socket, text: str) -> None:
    try:
        conn.sendall(text.encode())
    except OSError:  # the caller left
        pass


def _read_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 3)
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise ValueError(f"{len(fds)} descriptors instead of 3")
    try:
        while len(data) < 4 or len(data) < 4 + struct.unpack("!I", data[:4])[0]:
            if len(data) >= 4 and struct.unpack("!I", data[:4])[0] > cli_warm.MAX_REQUEST:
                raise ValueError("request too large")
            more = conn.recv(65536)
            if not more:
                raise ValueError("request cut short")
            data += more
        request = json.loads(data[4:])
        if not isinstance(request, dict):
            raise ValueError("request is not an object")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return request, fds


def _streams(specs: list[list[Any]]) -> tuple[Any, Any, Any]:
    """New sys.stdin/stdout/stderr on descriptors 0-2, encoded as the caller's were."""
    (in_enc, in_err), (out_enc, out_err), (err_enc, err_err) = specs
    stdin = open(0, encoding=in_enc, errors=in_err, closefd=False)
    stdout = open(1, "w", encoding=out_enc, errors=out_err, closefd=False)
    stderr = open(2, "w", encoding=err_enc, errors=err_err or "backslashreplace", closefd=False)
    if isinstance(stdout, io.TextIOWrapper) and os.isatty(1):
        stdout.reconfigure(line_buffering=True)
    if isinstance(stderr, io.TextIOWrapper):
        stderr.reconfigure(line_buffering=True)
    return stdin, stdout, stderr


def _relay_signals(conn: socket.socket) -> None:
    """The caller's signals, one byte each; the caller gone is a hangup, as a terminal's."""
    while True:
        try:
            data = conn.recv(64)
        except OSError:
            data = b""
        if not data:
            os.kill(os.getpid(), signal.SIGHUP)
            return
        for signum in data:
            if signum in cli_warm.FORWARDED_SIGNALS:
                os.kill(os.getpid(), signum)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


# -- in serve --------------------------------------------------------------------------------


async def keep_warm(sock_path: Path, stop: asyncio.Event) -> None:
    """serve's task: the warm process, started again when it ends, until `stop`."""

    async def run_once() -> int | None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", __name__, os.fspath(sock_path), logs.settings()[0],
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        try:
            if await proc.stdout.readline() == b"ready\n":
                logs.info("cli_warm.ready", socket=os.fspath(sock_path), pid=proc.pid)
            ended = asyncio.create_task(proc.wait())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({ended, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not ended.done():
                proc.stdin.close()  # it stops accepting; commands in hand finish
                try:
                    await asyncio.wait_for(asyncio.shield(ended), STOP_TIMEOUT)
                except TimeoutError:
                    proc.kill()
            return await ended
        finally:
            if proc.returncode is None:  # this task itself failed or was cancelled
                proc.kill()
                await proc.wait()

    def on_exit(code: int | None, delay: float, crashed: bool) -> None:
        if crashed:
            logs.error("cli_warm.supervisor_crashed", exc_info=True)
        logs.warning("cli_warm.exited", code=code, restart_in=delay)

    await supervise.keep_running(run_once, stop, on_exit)


if __name__ == "__main__":
    logs.setup("json" if sys.argv[2:] == ["json"] else "kv")
    try:
        # Mail before admin commands: its imports at serve's start, and the commands, yield
        # the CPU to intake (best effort: systemd's SystemCallFilter refuses setpriority).
        os.nice(NICENESS)
    except OSError:
        pass
    sys.exit(WarmServer(Path(sys.argv[1])).run())
