"""The real `mailgate` command for tests, started from a process that has imported it once.

A test's `mailgate ...` spent ~1 s importing SQLAlchemy, sqlmodel and the models before doing
anything: about 150 such calls made a sixth of the suite's time. This process (one per pytest
worker, `peers.run_cli` starts it) imports them once, then for each request forks a runner,
which forks the command: `python -m mailgate ARGS` as runpy runs it, with the request's
environment, working directory and standard input, its standard output and error in files.
The runner waits for it and answers with its exit status (negative: the signal that killed
it, as subprocess reports) and both outputs. A command therefore still runs in a process of
its own, from `mailgate/__main__.py`, and nothing it does outlives it.

Protocol on a unix socket, one connection per command, in mailgate.frames (what serve and its
children speak): the request {"argv", "env", "cwd", "stdin"}, the answer {"returncode",
"stdout", "stderr"}. Started as `python -m tests.support.cli_zygote SOCKET`, its standard input
a pipe from the test process (it exits when that closes); prints "ready" once it listens.
"""

from __future__ import annotations

import os
import runpy
import selectors
import signal
import socket
import sys
import tempfile
import time
import traceback
from typing import Any

from mailgate import frames


def _command(request: dict[str, Any], folder: str) -> None:
    """In the command's process: become `python -m mailgate ARGS`; never returns."""
    for fd, name, flags in (
        (0, "in", os.O_RDONLY),
        (1, "out", os.O_WRONLY),
        (2, "err", os.O_WRONLY),
    ):
        target = os.open(os.path.join(folder, name), flags)
        os.dup2(target, fd)
        os.close(target)
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()
    os.chdir(request["cwd"])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv = ["mailgate", *request["argv"]]
    code: Any = 0
    try:
        runpy.run_module("mailgate", run_name="__main__", alter_sys=True)
    except SystemExit as stop:  # what the interpreter makes of sys.exit(...)
        code = stop.code
    except BaseException:
        traceback.print_exc()
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: S110  (a closed stream: the interpreter says nothing)
            pass
    os._exit(code & 0xFF)


def _runner(conn: socket.socket) -> None:
    """In a runner: read the request, run the command in a child, answer; never returns."""
    try:
        request = frames.receive(conn)
        with tempfile.TemporaryDirectory(prefix="mailgate-cli-") as folder:
            with open(os.path.join(folder, "in"), "wb") as stdin:
                stdin.write(request["stdin"])
            for name in ("out", "err"):
                open(os.path.join(folder, name), "wb").close()
            pid = os.fork()
            if pid == 0:
                conn.close()
                _command(request, folder)
            _, status = os.waitpid(pid, 0)
            returncode = os.waitstatus_to_exitcode(status)
            answer = {"returncode": returncode}
            for name, key in (("out", "stdout"), ("err", "stderr")):
                with open(os.path.join(folder, name), "rb") as f:
                    answer[key] = f.read()
        frames.send(conn, answer)
    finally:
        os._exit(0)


def main(path: str) -> None:
    # What commands import when they run, imported once here (each forked command has it).
    import mailgate.cli
    import mailgate.services.ticket_views
    import mailgate.wiring  # noqa: F401

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    print("ready", flush=True)
    quiet = os.open(os.devnull, os.O_WRONLY)  # nothing more for the caller's pipe
    os.dup2(quiet, 1)
    os.close(quiet)
    # Standard input is a pipe whose other end only the test process holds: at its end (the
    # test process exited, or was killed), this process ends too.
    watch = selectors.DefaultSelector()
    watch.register(listener, selectors.EVENT_READ)
    watch.register(0, selectors.EVENT_READ)
    while True:
        for key, _ in watch.select():
            if key.fileobj == 0:
                if not os.read(0, 1):
                    listener.close()
                    os._exit(0)
                continue
            conn, _ = listener.accept()
            if os.fork() == 0:
                listener.close()
                _runner(conn)
            conn.close()
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:  # runners that have answered
                pass
        except ChildProcessError:
            pass


if __name__ == "__main__":
    main(sys.argv[1])
