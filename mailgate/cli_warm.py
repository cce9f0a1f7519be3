"""Admin commands run by a warm process while serve runs (issue 11: a CLI call under 300 ms).

A `mailgate` command pays for its imports before it does anything: SQLAlchemy and sqlmodel
alone take 0.4-0.8 s on a 2-core machine. While serve runs it keeps one more child,
`python -m mailgate.cli_warm SOCKET`, that has imported them once and then only waits on
DATA_DIR/cli.sock (mode 0600). For each command it forks a child that runs it as a new
`mailgate` process would (`mailgate.cli.main`): with the caller's arguments, environment,
working directory and umask, on the caller's own standard input, output and error (the three
descriptors cross the socket, SCM_RIGHTS). The exit status goes back to the caller, whose
Ctrl-C reaches the command. As Postfix's postqueue asks its showq daemon.

The caller runs the command itself, as before, whenever the warm process cannot stand in for
it exactly:
- no warm process answers (serve stopped, `[mailgate] warm_commands = false`);
- MAILGATE_IN_PROCESS=1 in the environment;
- the command is not one of WARM_COMMANDS: only commands whose only paths are the config and
  the database go warm (`ticket attachment` writes files, `import` reads them, `oauth` and
  `deliver` have their own ways, `serve` is serve);
- the caller is another user (peer credentials): the warm process runs as serve's user;
- the warm process does not see the caller's working directory, config file or data folder
  as the same files (systemd's PrivateTmp and ProtectHome give serve other /tmp and /home);
- the code or the installed packages changed since the warm process started: it then exits
  and serve starts a fresh one.

Wire protocol on the unix socket (one connection per command):
- caller -> warm: a 4-byte length and a JSON request, with its stdin, stdout and stderr as
  SCM_RIGHTS; then, while it waits, one byte per signal it got (SIGINT, SIGTERM, SIGHUP);
- warm -> caller: "run\\n" (the command started) or "local REASON\\n" (run it yourself), and
  after "run", "exit N\\n" when the command ended (N as a shell reports it: 128+signal for a
  command killed by one).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SOCKET_NAME = "cli.sock"
MAX_REQUEST = 1 << 20
# Command word -> its subcommands that may run warm (None: the word alone is the command).
WARM_COMMANDS: dict[str, frozenset[str] | None] = {
    "ticket": frozenset({"list", "show", "status", "assign"}),
    "account": frozenset({"list"}),
    "agent": frozenset({"add", "list", "remove"}),
    "outbox": frozenset({"list", "send"}),
    "quarantine": frozenset({"list", "show", "reprocess", "delete"}),
    "jobs": frozenset({"run"}),
    "db": frozenset({"upgrade"}),
    "articles": frozenset({"list", "delete"}),
    "check-config": None,
}
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EX_SOFTWARE = 70


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME


def path_fits(path: Path) -> bool:
    """A unix socket's path is at most 107 bytes (sun_path)."""
    return len(os.fsencode(path)) < 108


# -- the caller's side: stdlib only, it runs before any heavy import ----------------------


def warm_eligible(words: Sequence[str]) -> bool:
    """`words`: the command line's words that are not options, in order."""
    if not words or words[0] not in WARM_COMMANDS:
        return False
    subs = WARM_COMMANDS[words[0]]
    return subs is None or (len(words) > 1 and words[1] in subs)


def _landmarks(paths: Sequence[Path]) -> list[tuple[str, int, int]]:
    """(path, device, inode) of each path that exists: the warm side checks it sees the same."""
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        out.append((os.path.abspath(path), st.st_dev, st.st_ino))
    return out


def request_for(argv: Sequence[str], landmarks: Sequence[Path]) -> dict[str, Any]:
    umask = os.umask(0o022)
    os.umask(umask)
    streams = (sys.stdin, sys.stdout, sys.stderr)
    return {
        "argv": list(argv),
        "argv0": sys.argv[0] if sys.argv else "mailgate",
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "umask": umask,
        "landmarks": _landmarks([Path("."), *landmarks]),
        "streams": [(getattr(s, "encoding", None), getattr(s, "errors", None)) for s in streams],
    }


def run_warm(sock_path: Path, request: dict[str, Any]) -> int | None:
    """The command's exit status, run by the warm process; None: run it yourself."""
    if os.environ.get("MAILGATE_IN_PROCESS") == "1" or not path_fits(sock_path):
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(os.fspath(sock_path))
        body = json.dumps(request).encode()
        payload = struct.pack("!I", len(body)) + body
        sent = socket.send_fds(conn, [payload], [0, 1, 2])  # our stdin, stdout and stderr
        conn.sendall(payload[sent:])
        reader = conn.makefile("rb")
        first = reader.readline()
    except OSError:  # none there, refused, or it went away: as if serve were stopped
        conn.close()
        return None
    if first != b"run\n":
        conn.close()
        return None  # "local ...": this command, here, must run in our own process
    return _wait_for_exit(conn, reader)


def _wait_for_exit(conn: socket.socket, reader: Any) -> int:
    previous = {}

    def forward(signum: int, _frame: Any) -> None:
        try:
            conn.send(bytes([signum]))
        except OSError:
            pass

    for sig in FORWARDED_SIGNALS:
        previous[sig] = signal.signal(sig, forward)
    try:
        while True:
            line = reader.readline()
            if not line:
                print("mailgate: the command's process ended without an exit status",
                      file=sys.stderr)  # fmt: skip
                return EX_SOFTWARE
            if line.startswith(b"exit "):
                return int(line[5:])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        conn.close()
