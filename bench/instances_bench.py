"""Several instances benchmark (issue 17): one `mailgate serve` against two on one PostgreSQL.

`make bench` (or `.venv/bin/python bench/instances_bench.py --help`). See bench/README.md.

Two rounds, each on a fresh PostgreSQL database, outbound mail to one local SMTP sink (Postfix's
smtp-sink when installed, else bench/sink.py):

  1. ingest: N first-contact messages (~5 KB, each from its own sender), flat out, over C SMTP
     connections to each instance (one instance: C connections; two: C to each, the messages
     split evenly, as two MX would share them). Measured: ack msg/s (until the last 250) and
     sustained msg/s (until the last of the 2N confirmation and activation mails is at the
     sink), and the CPU seconds of every process involved;
  2. outbound: M activation mails (default 2N) queued in one transaction while the instances
     idle, then one message to each instance wakes its sender; measured: mails/s from that
     commit until the last of the M mails is at the sink (one sender, then two sharing the
     outbox through `FOR UPDATE SKIP LOCKED`).

Reported: one against two for both, and their ratio (issue 17's goal: two instances on two
cores at >= 1.6x one). Every process of the run shares the machine's cores (PostgreSQL, the
sink and this client too): the CPU table says where the time went. Exit 1 when a message was
refused, a ticket or a mail is missing or doubled, or an outbox did not drain: a fast figure
that lost mail is never printed as a success. The ratio itself is reported, not enforced.

Blobs stay on each instance's disk: an S3-compatible store shared by both (as in production)
would add its PUTs, and an emulator on these same cores would measure the emulator.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # mailgate, for fill_outbox
from ingest_bench import (
    DEFAULT_PG,
    MAILS_PER_MESSAGE,
    ROOT,
    SUPPORT,
    VENV_PY,
    PgDatabase,
    Result,
    Server,
    Store,
    free_port,
    log_problems,
    make_messages,
    run_load,
    tag_of,
    write_config,
)
from sink import Sink, process_cpu_seconds

GOAL_RATIO = 1.6  # issue 17: two instances on two cores at >= 1.6x one (reported)
WARMUP = 10  # messages to each instance before measuring (imports, templates, pools)
QUICK_MESSAGES = 300
SECRET = "instances-bench-shared-secret-0123456789abcdefghijklmnop"  # one secret, all instances


@dataclass
class Round:
    """One or two instances, from ingest to the outbound drain."""

    instances: int
    ingest: Result | None = None
    ingest_last: float | None = None  # time.time() of the last owed mail at the sink
    outbound_mails: int = 0
    outbound_seconds: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU s during ingest
    ingest_wall: float = 0.0  # first message -> last mail at the sink
    lines: list[str] = field(default_factory=list)
    honest: bool = False
    failure: str = ""

    @property
    def ack_rate(self) -> float:
        return self.ingest.rate if self.ingest else 0.0

    @property
    def sustained(self) -> float:
        if self.ingest is None or self.ingest_last is None:
            return 0.0
        return self.ingest.ok / max(self.ingest_last - self.ingest.start_wall, 1e-9)

    @property
    def outbound_rate(self) -> float:
        return self.outbound_mails / self.outbound_seconds if self.outbound_seconds else 0.0


def postgres_cpu_seconds(database: str) -> float:
    """CPU seconds of the PostgreSQL backends serving `database` (their process title names
    it): other databases' work on the same server is not counted, nor the WAL writer's."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("postgres:") and f" {database} " in title:
            total += process_cpu_seconds(int(entry.name))
    return total


def roles_cpu_seconds(pids: list[int]) -> dict[str, float]:
    """CPU seconds of each instance's process tree by role: the serving process (SMTP, ingest
    writer, leases), its parse workers, its sender process."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    out = {"serve": 0.0, "parse workers": 0.0, "sender": 0.0}
    for root in pids:
        tree, frontier = [root], [root]
        while frontier:
            parent = frontier.pop()
            children = [p for p, pp in parents.items() if pp == parent]
            tree += children
            frontier += children
        for pid in tree:
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            role = "serve" if pid == root else "sender" if b"sender_process" in argv else (
                "parse workers"
            )
            out[role] += process_cpu_seconds(pid)
    return out


def self_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def progress(line: str) -> None:
    print(f"  .. {line}", flush=True)


def wait_group(
    sink: Sink, group: str, expected: int, timeout: float, servers: list[Server]
) -> float | None:
    """time.time() at which the sink held `expected` mails for `group` (None: not in time, or
    an instance died)."""
    deadline = time.monotonic() + timeout
    while True:
        sink.tail.poll()
        if sink.tail.per_group[group] >= expected:
            return sink.tail.last_at.get(group, time.time())
        if time.monotonic() > deadline:
            return None
        if any(s.proc is not None and s.proc.poll() is not None for s in servers):
            return None
        time.sleep(0.005)


def instance_config(folder: Path, name: str, url: str, sink: Sink, port: int) -> Path:
    folder.mkdir()
    config = folder / "mailgate.toml"
    write_config(
        config,
        {
            ("mailgate", "data_dir"): str(folder / "data"),
            ("mailgate", "secret_key"): SECRET,
            ("database", "url"): url,
            ("inbound", "smtp_listen"): f"127.0.0.1:{port}",
            ("inbound", "lmtp_listen"): "",
            ("addresses", "support"): SUPPORT,
            ("outbound", "transport"): f"smtp://127.0.0.1:{sink.port}",
            ("outbound", "first_contact_per_hour"): 1_000_000,  # the bench measures speed
            ("portal", "listen"): "",
            ("metrics", "listen"): "",
            ("instance", "id"): name,
        },
    )
    return config


def fill_outbox(config: Path, tag: str, count: int) -> None:
    """`count` activation mails queued through mailgate's own Mailer (sender_bench's fill)."""
    from sender_bench import fill

    from mailgate import config as config_mod
    from mailgate.app import build

    app = build(config_mod.load(config, environ={}))
    try:
        fill(app, count, tag=f"-{tag}-")
    finally:
        app.db.dispose()


async def load(servers: list[Server], tag: str, count: int, args: argparse.Namespace) -> Result:
    """`count` messages split evenly across `servers`, C connections each, all at once."""
    messages = make_messages(tag, count, args.size)
    parts = [Result(s.name, tag) for s in servers]
    await asyncio.gather(
        *(
            run_load("127.0.0.1", s.port, messages[k :: len(servers)], args.connections, part)
            for k, (s, part) in enumerate(zip(servers, parts, strict=True))
        )
    )
    whole = Result("+".join(s.name for s in servers), tag, messages=count)
    whole.ok = sum(p.ok for p in parts)
    whole.errors = sum(p.errors for p in parts)
    whole.error_samples = [e for p in parts for e in p.error_samples]
    whole.latencies = [x for p in parts for x in p.latencies]
    whole.start_wall = min(p.start_wall for p in parts)
    whole.end_wall = max(p.end_wall for p in parts)
    whole.elapsed = whole.end_wall - whole.start_wall
    return whole


def run_round(
    count: int, pg: PgDatabase, sink: Sink, python: str, env: dict[str, str], tmp: Path,
    tag: str, args: argparse.Namespace,
) -> Round:  # fmt: skip
    rnd = Round(count)
    base = f"{tag}i{count}"
    pg.create()  # a fresh database: both rounds start from empty tables
    servers: list[Server] = []
    configs: list[Path] = []
    for k in range(count):
        name = "ab"[k]
        port = free_port()
        config = instance_config(tmp / f"{base}{name}", name, pg.url, sink, port)
        argv = [python, "-m", "mailgate", "--config", str(config), "serve"]
        servers.append(Server(f"mailgate/{name}", argv, port, config.parent / "serve.log", env))
        configs.append(config)
    store: Store | None = None
    try:
        for server in servers:
            server.start()  # the first creates the schema; the second finds it there
        store = Store(pg.url)
        # Warm-up: every instance's listener, parse workers, writer and sender, end to end.
        warm = asyncio.run(load(servers, f"{base}warm", WARMUP * count, args))
        if warm.errors or wait_group(sink, f"{base}warm", MAILS_PER_MESSAGE * warm.ok, 120,
                                     servers) is None:  # fmt: skip
            raise RuntimeError(f"warm-up failed: {warm.error_samples}\n{servers[0].tail()}")

        # 1. ingest
        pids = [s.pid for s in servers]
        def cpu_now() -> dict[str, float]:
            return {**roles_cpu_seconds(pids), "postgres": postgres_cpu_seconds(pg.name),
                    "sink": sink.cpu_seconds(), "bench client": self_cpu_seconds()}  # fmt: skip

        cpu0 = cpu_now()
        group = f"{base}tp"
        rnd.ingest = result = asyncio.run(load(servers, group, args.messages, args))
        sink.tail.poll()
        progress(
            f"{count} instance(s): {result.ok}/{result.messages} accepted at {result.rate:.0f} "
            f"msg/s, {result.errors} errors; {sink.tail.per_group[group]} of "
            f"{MAILS_PER_MESSAGE * result.ok} mails at the sink, {store.backlog()} unsent"
        )
        rnd.ingest_last = wait_group(sink, group, MAILS_PER_MESSAGE * result.ok,
                                     args.drain_timeout, servers)  # fmt: skip
        rnd.cpu = {k: v - cpu0[k] for k, v in cpu_now().items()}
        if rnd.ingest_last is None:
            raise RuntimeError(f"the outbox did not drain within {args.drain_timeout:g} s")
        rnd.ingest_wall = rnd.ingest_last - result.start_wall
        progress(f"{count} instance(s): sustained {rnd.sustained:.0f} msg/s (last mail at the "
                 f"sink {rnd.ingest_last - result.end_wall:.1f} s after the last 250)")  # fmt: skip

        # 2. outbound: queued while every sender idles, then each one woken by a message.
        out = f"{base}out"
        fill_outbox(configs[0], out, args.outbound)
        start = time.time()
        kick = asyncio.run(load(servers, f"{base}kick", count, args))
        if kick.errors:
            raise RuntimeError(f"wake-up messages refused: {kick.error_samples}")
        last = wait_group(sink, out, args.outbound, args.drain_timeout, servers)
        if last is None:
            raise RuntimeError(f"the outbound did not drain within {args.drain_timeout:g} s")
        rnd.outbound_mails, rnd.outbound_seconds = args.outbound, last - start
        progress(f"{count} sender(s): {args.outbound} mails in {last - start:.1f} s, "
                 f"{rnd.outbound_rate:.0f} mails/s")  # fmt: skip
        wait_group(sink, f"{base}kick", MAILS_PER_MESSAGE * count, 60, servers)
    except Exception as exc:  # reported; the other round still runs
        rnd.failure = f"{type(exc).__name__}: {exc}"
        return rnd
    finally:
        codes = [s.stop() for s in servers]
        if store is not None and not rnd.failure:
            check(rnd, store, sink, base, count, args, servers, codes)
        if store is not None:
            store.close()
    return rnd


def check(
    rnd: Round, store: Store, sink: Sink, base: str, count: int, args: argparse.Namespace,
    servers: list[Server], codes: list[int | None],
) -> None:  # fmt: skip
    """Everything acknowledged stored once, everything owed delivered once."""
    sink.tail.poll()
    counts = store.counts()
    messages = {f"{base}warm": WARMUP * count, f"{base}tp": args.messages, f"{base}kick": count}
    total = sum(messages.values())
    owed = MAILS_PER_MESSAGE * total + args.outbound
    lines = rnd.lines
    lines.append(f"serve exit codes after SIGTERM: {codes}")
    for server in servers:
        problems = log_problems(server.log)
        if problems:
            lines.append(f"{server.name} logged: "
                         + ", ".join(f"{n} x {e}" for e, n in problems.items()))  # fmt: skip
    lines.append(
        f"database: {counts['ticket']} tickets, {counts['receipt']} receipts (expected "
        f"{total}), {counts['outbox']} outbox rows ({counts.get('outbox_sent', 0)} sent, "
        f"expected {owed})"
    )
    sink_ok = True
    for group, n in [*messages.items(), (f"{base}out", args.outbound)]:
        per = MAILS_PER_MESSAGE if group in messages else 1
        got = [c for rcpt, c in sink.tail.per_rcpt.items() if tag_of(rcpt) == group]
        wrong = sum(1 for c in got if c != per)
        fine = len(got) == n and wrong == 0
        sink_ok &= fine
        lines.append(f"sink, {group}: {sum(got)} mails to {len(got)} addresses, {wrong} without "
                     f"exactly {per} (expected {n}): {'ok' if fine else 'WRONG'}")  # fmt: skip
    rnd.honest = (
        counts["ticket"] == counts["receipt"] == total
        and counts["outbox"] == counts.get("outbox_sent", 0) == owed
        and rnd.ingest is not None
        and rnd.ingest.errors == 0
        and rnd.ingest.ok == args.messages
        and sink_ok
    )
    lines.append(f"every message accepted once, every mail delivered once: {rnd.honest}")


ROLES = ("serve", "parse workers", "sender", "postgres", "sink", "bench client")


def report(rounds: list[Round]) -> None:
    head = f"{'instances':<10} {'ack msg/s':>9} {'sustained':>9} {'outbound/s':>10} "
    head += f"{'wall s':>7} {'busy cores':>10}"
    print(head)
    print("-" * len(head))
    for r in rounds:
        if r.failure:
            print(f"{r.instances:<10} did not complete: {r.failure}")
            continue
        busy = sum(r.cpu.values()) / max(r.ingest_wall, 1e-9)
        print(
            f"{r.instances:<10} {r.ack_rate:>9.0f} {r.sustained:>9.0f} {r.outbound_rate:>10.0f} "
            f"{r.ingest_wall:>7.1f} {busy:>10.2f}"
        )
    print(
        "  ack: messages / (first message -> last 250); sustained: messages / (first message ->\n"
        "  last confirmation and activation at the sink); outbound: queued mails / (commit ->\n"
        "  last at the sink); wall: the ingest, first message -> drained; busy cores: CPU\n"
        "  seconds of every process below / wall"
    )
    done = [r for r in rounds if not r.failure and r.ingest is not None and r.ingest.ok]
    print("\nCPU ms per message during the ingest, until drained (2 mails sent per message):")
    print(f"{'instances':<10} " + " ".join(f"{role:>13}" for role in ROLES) + f" {'all':>7}")
    for r in done:
        assert r.ingest is not None
        per = {k: 1000 * v / r.ingest.ok for k, v in r.cpu.items()}
        cells = " ".join(f"{per[role]:>13.2f}" for role in ROLES)
        print(f"{r.instances:<10} {cells} {sum(per.values()):>7.2f}")
    if len(done) != 2:
        return
    one, two = done
    assert one.ingest is not None
    cores = os.cpu_count() or 1
    per_message = sum(one.cpu.values()) / one.ingest.ok
    ceiling = cores / per_message if per_message else 0.0
    print(
        f"\nOn {cores} cores at {1000 * per_message:.1f} ms of CPU a message (every process "
        f"above), no number of instances can go past ~{ceiling:.0f} msg/s: x"
        f"{ceiling / one.sustained if one.sustained else 0:.2f} one instance's sustained rate."
    )
    for what, a, b in (
        ("ingest, acknowledged", one.ack_rate, two.ack_rate),
        ("ingest, sustained", one.sustained, two.sustained),
        ("outbound", one.outbound_rate, two.outbound_rate),
    ):
        ratio = b / a if a else 0.0
        met = "met" if ratio >= GOAL_RATIO else "not met"
        print(f"{what}: two instances {b:.0f}/s against one {a:.0f}/s: x{ratio:.2f} "
              f"(issue 17's goal >= {GOAL_RATIO} on two cores: {met})")  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int,
                        help="first-contact messages per round (default 1000, or "
                             "MAILGATE_BENCH_MESSAGES)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_MESSAGES} messages")
    parser.add_argument("--outbound", type=int, help="mails queued per round (default 2 x N)")
    parser.add_argument("--connections", type=int, default=8,
                        help="SMTP sessions to each instance")  # fmt: skip
    parser.add_argument("--size", type=int, default=5000, help="message size in bytes")
    parser.add_argument("--database-url", default=DEFAULT_PG,
                        help="PostgreSQL server; a fresh database mailgate_bench_PID is made on "
                             "it for each round and dropped")  # fmt: skip
    parser.add_argument("--sink", choices=("auto", "postfix", "python"), default="auto",
                        help="outbound SMTP sink: Postfix's smtp-sink if installed, or "
                             "bench/sink.py")  # fmt: skip
    parser.add_argument("--drain-timeout", type=float,
                        help="seconds to wait for an outbox to drain (default 60 + N/5)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.messages is None:
        env = os.environ.get("MAILGATE_BENCH_MESSAGES", "")
        args.messages = int(env) if env else QUICK_MESSAGES if args.quick else 1000
    if args.outbound is None:
        args.outbound = MAILS_PER_MESSAGE * args.messages
    if args.drain_timeout is None:
        args.drain_timeout = 60 + args.messages / 5
    return args


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # run the `finally` blocks: stop every server
    python = str(VENV_PY if VENV_PY.exists() else Path(sys.executable))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    env["PYTHONPATH"] = str(ROOT)
    print(
        f"mailgate instances bench: {args.messages} first-contact messages of ~{args.size} B "
        f"per round, {args.connections} connections to each instance, {args.outbound} mails "
        f"queued; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    pg = PgDatabase(args.database_url)
    why = pg.reachable()
    if why is not None:
        print(f"SKIPPED: PostgreSQL {args.database_url} not reachable: {why}")
        return 0
    print(f"PostgreSQL: database {pg.name} on {args.database_url} ({pg.settings()})")
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-instances-", dir="/tmp"))
    os.chmod(tmp, 0o755)  # smtp-sink runs as nobody and writes in tmp/sink
    tag = f"{os.getpid()}x"  # no "-" in it: addresses are split on "-"
    (tmp / "sink").mkdir()
    sink = Sink(tmp / "sink", free_port(), python, args.sink, group=tag_of)
    rounds: list[Round] = []
    try:
        sink.start()
        print(f"outbound sink: {sink.kind} on 127.0.0.1:{sink.port}")
        for count in (1, 2):
            print(f"{count} instance(s):", flush=True)
            rounds.append(run_round(count, pg, sink, python, env, tmp, tag, args))
        print(f"\nload average now {os.getloadavg()[0]:.2f}")
        report(rounds)
        for r in rounds:
            print(f"{r.instances} instance(s) checks:")
            for line in r.lines:
                print(f"  {line}")
        doubled = sum(n - 1 for n in sink.tail.message_ids.values() if n > 1)
        print(f"sink: {sink.tail.mails} mails, {doubled} with a Message-ID already seen")
        honest = all(r.honest and not r.failure for r in rounds) and doubled == 0
        print(f"{'PASS' if honest else 'FAIL'} instances: nothing lost or doubled with one and "
              f"two instances")  # fmt: skip
        return 0 if honest else 1
    finally:
        sink.stop()
        pg.drop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
