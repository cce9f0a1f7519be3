"""CPU per inbound message in an SMTP front and its parse workers, under a real `serve`.

    .venv/bin/python bench/front_cpu_bench.py [--rounds 5] [--messages 400] [--connections 8]

Starts `mailgate serve` as ingest_bench does (SQLite, outbound to a local SMTP sink, one SMTP
front: `[inbound] smtp_processes = 1`), warms it up, then sends rounds of ingest_bench's ~5 KB
first-contact messages. Around each round it reads the CPU time (utime + stime, /proc) of the
front process, of its descendants (the fork server and the parse workers), of serve itself and
of its sender process, and prints microseconds of CPU per message: best and median over the
rounds. CPU time, not wall time: other work on the machine slows the run but hardly moves these
figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
from ingest_bench import (
    ROOT,
    SUPPORT,
    VENV_PY,
    Result,
    Server,
    free_port,
    make_messages,
    run_load,
    stop_profiler,
    tag_of,
    write_config,
)
from sink import Sink

TICK = os.sysconf("SC_CLK_TCK")


def processes() -> dict[int, tuple[int, float, str, float]]:
    """pid -> (parent pid, CPU seconds, command line, of which system) of every process."""
    found: dict[int, tuple[int, float, str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        user, system = int(fields[11]) / TICK, int(fields[12]) / TICK
        found[int(entry.name)] = (int(fields[1]), user + system, cmd, system)
    return found


def descendants(table: dict[int, tuple[int, float, str, float]], pid: int) -> set[int]:
    tree, frontier = set(), [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, (pp, *_rest) in table.items() if pp == parent and p not in tree]
        tree.update(children)
        frontier.extend(children)
    return tree


def cpu_by_role(serve_pid: int) -> dict[str, float]:
    """CPU seconds so far: serve alone, the SMTP front alone, the front's descendants (and
    the system part of each: syscalls, wake-ups), and serve's sender process."""
    table = processes()
    fronts = [
        p for p, (pp, _c, cmd, _s) in table.items() if pp == serve_pid and "smtp.front" in cmd
    ]
    below = set().union(*(descendants(table, f) for f in fronts)) if fronts else set()
    senders = [
        p for p, (pp, _c, cmd, _s) in table.items() if pp == serve_pid and "sender_process" in cmd
    ]
    return {
        "front": sum(table[p][1] for p in fronts),
        "  its system": sum(table[p][3] for p in fronts),
        "parse workers": sum(table[p][1] for p in below if p in table),
        "  their system": sum(table[p][3] for p in below if p in table),
        "serve": table[serve_pid][1] if serve_pid in table else 0.0,
        "  serve's system": table[serve_pid][3] if serve_pid in table else 0.0,
        "sender": sum(table[p][1] for p in senders),
        "  sender's system": sum(table[p][3] for p in senders),
    }


def start_spy(out: str | None, serve_pid: int) -> subprocess.Popen[bytes] | None:
    """py-spy on the front (and its parse workers), GIL holders only: where the CPU goes."""
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not out or spy is None:
        return None
    table = processes()
    front = next(
        p for p, (pp, _c, cmd, _s) in table.items() if pp == serve_pid and "smtp.front" in cmd
    )
    argv = [spy, "record", "--pid", str(front), "--subprocesses", "--gil", "--rate", "250",
            "--nonblocking", "--format", "raw", "-o", out]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # let it attach before the load starts
    return proc


class BenchServe:
    """A `mailgate serve` as ingest_bench starts it (SQLite, one SMTP front, outbound to a
    local SMTP sink), in a temporary folder: the set-up this bench and sender_cpu_bench share."""

    def __init__(self, prefix: str) -> None:
        self.python = str(VENV_PY if VENV_PY.exists() else Path(sys.executable))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
        self.env["PYTHONPATH"] = str(ROOT)
        self.tmp = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        os.chmod(self.tmp, 0o755)  # smtp-sink runs as nobody and writes in tmp/sink
        self.tag = f"{os.getpid()}x"
        (self.tmp / "sink").mkdir()
        self.sink = Sink(self.tmp / "sink", free_port(), self.python, "auto", group=tag_of)
        self.port = free_port()
        self.config = self.tmp / "mailgate.toml"
        write_config(
            self.config,
            {
                ("mailgate", "data_dir"): str(self.tmp / "data"),
                ("database", "url"): f"sqlite:///{self.tmp / 'data' / 'mailgate.db'}",
                ("inbound", "smtp_listen"): f"127.0.0.1:{self.port}",
                ("inbound", "lmtp_listen"): "",
                ("inbound", "smtp_processes"): 1,
                ("addresses", "support"): SUPPORT,
                ("outbound", "transport"): f"smtp://127.0.0.1:{self.sink.port}",
                ("outbound", "first_contact_per_hour"): 1_000_000,
                ("portal", "listen"): "",
                ("metrics", "listen"): "",
            },
        )
        argv = [self.python, "-m", "mailgate", "--config", str(self.config), "serve"]
        self.server = Server("mailgate", argv, self.port, self.tmp / "mailgate.log", self.env)

    def start(self) -> None:
        """The sink, the schema (`db upgrade`, the install step), then serve."""
        self.sink.start()
        upgrade = [self.python, "-m", "mailgate", "--config", str(self.config), "db", "upgrade"]
        subprocess.run(upgrade, check=True, env=self.env, cwd=ROOT, capture_output=True)
        self.server.start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=400, help="messages per round")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--size", type=int, default=5000)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--profile", metavar="FILE", help="py-spy (--gil, raw) on the front and its workers"
    )
    args = parser.parse_args()

    bench = BenchServe("mailgate-frontbench-")
    tmp, tag, sink, port, server = bench.tmp, bench.tag, bench.sink, bench.port, bench.server
    per_role: dict[str, list[float]] = {}
    spy: subprocess.Popen[bytes] | None = None
    try:
        bench.start()
        for round_no in range(-1, args.rounds):  # round -1: the warm-up, not counted
            count = 40 if round_no < 0 else args.messages
            messages = make_messages(f"{tag}r{round_no + 1}", count, args.size)
            result = Result(server.name, "front cpu")
            before = cpu_by_role(server.pid)
            asyncio.run(run_load("127.0.0.1", port, messages, args.connections, result))
            after = cpu_by_role(server.pid)
            if result.errors or result.ok != count:
                print(f"round {round_no}: {result.ok}/{count} accepted, {result.error_samples}")
                return 1
            if round_no < 0:
                spy = start_spy(args.profile, server.pid)
                continue
            line = []
            for role in before:
                us = (after[role] - before[role]) / count * 1e6
                per_role.setdefault(role, []).append(us)
                line.append(f"{role} {us:6.0f}")
            print(f"round {round_no + 1}: us CPU/msg: " + ", ".join(line), flush=True)
    finally:
        stop_profiler(spy)
        server.stop()
        sink.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    fronts = [f + w for f, w in zip(per_role["front"], per_role["parse workers"], strict=True)]
    print(f"-- us CPU per message, {args.rounds} rounds of {args.messages} (best / median)")
    for role, values in [*per_role.items(), ("front + workers", fronts)]:
        print(f"{role:16} {min(values):7.0f} {statistics.median(values):7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
