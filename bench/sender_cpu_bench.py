"""CPU per outbound mail of the sender process under a real `serve`, for a first contact's
mix (a confirmation and an activation per message).

    .venv/bin/python bench/sender_cpu_bench.py [--rounds 5] [--messages 300]

Starts `serve` as bench/front_cpu_bench.py does (SQLite, outbound to a local SMTP sink), warms
it up, then sends rounds of ingest_bench's ~5 KB first-contact messages. Around each round,
once the sink holds every mail of it (2 per message), it reads the CPU time (/proc) of the
sender process (mailgate.adapters.sender_process, a child of serve) and prints microseconds
of CPU per mail: best and median over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
from front_cpu_bench import BenchServe, processes
from ingest_bench import (
    Result,
    make_messages,
    run_load,
    stop_profiler,
)
from sink import Sink


def sender_cpu(serve_pid: int, timeout: float = 30.0) -> tuple[int, float]:
    """Serve's sender process (started once serve is up): its pid and CPU seconds so far."""
    deadline = time.monotonic() + timeout
    while True:
        table = processes()
        found = [
            (p, cpu)
            for p, (pp, cpu, cmd, _s) in table.items()
            if pp == serve_pid and "sender_process" in cmd
        ]
        if len(found) == 1:
            return found[0]
        if time.monotonic() > deadline:
            raise RuntimeError(f"expected one sender process under serve, found {len(found)}")
        time.sleep(0.1)


def wait_for_mails(sink: Sink, total: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while sink.tail.mails < total:
        sink.tail.poll()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{sink.tail.mails}/{total} mails at the sink after {timeout}s")
        time.sleep(0.05)  # a bench polling the sink's file, not a test


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=300, help="messages per round")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--size", type=int, default=5000)
    parser.add_argument("--profile", metavar="FILE", help="py-spy (--gil, raw) on the sender")
    args = parser.parse_args()

    bench = BenchServe("mailgate-sender-bench-")
    python, tmp, tag = bench.python, bench.tmp, bench.tag
    sink, port, server = bench.sink, bench.port, bench.server
    per_mail: list[float] = []
    spy: subprocess.Popen[bytes] | None = None
    spy_bin = shutil.which("py-spy", path=str(Path(python).parent))
    owed = 0
    try:
        bench.start()
        for round_no in range(-1, args.rounds):  # round -1: the warm-up, not counted
            count = 40 if round_no < 0 else args.messages
            messages = make_messages(f"{tag}r{round_no + 1}", count, args.size)
            result = Result(server.name, "sender cpu")
            pid, before = sender_cpu(server.pid)
            asyncio.run(run_load("127.0.0.1", port, messages, args.connections, result))
            owed += 2 * count
            wait_for_mails(sink, owed)
            _pid, after = sender_cpu(server.pid)
            if result.errors or result.ok != count:
                print(f"round {round_no}: {result.ok}/{count} accepted, {result.error_samples}")
                return 1
            if round_no < 0:
                if args.profile and spy_bin:
                    argv = [spy_bin, "record", "--pid", str(pid), "--gil", "--rate", "500",
                            "--nonblocking", "--format", "raw", "-o", args.profile]  # fmt: skip
                    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
                    time.sleep(1.0)  # let it attach before the load starts
                continue
            us = (after - before) / (2 * count) * 1e6
            per_mail.append(us)
            print(f"round {round_no + 1}: sender {us:6.1f} us CPU/mail", flush=True)
    finally:
        stop_profiler(spy)
        server.stop()
        sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"sender us CPU per mail, {args.rounds} rounds of {2 * args.messages} mails: "
          f"best {min(per_mail):.1f}, median {statistics.median(per_mail):.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
