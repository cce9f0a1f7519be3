"""Ingest benchmark: durable SMTP ingest in mailgate next to a bare aiosmtpd that stores nothing.

`make bench` (or `.venv/bin/python bench/ingest_bench.py --help`). See bench/README.md.

Per server, both started here as subprocesses on a free port and run one after the other:
  1. throughput: N messages (~5 KB, each from a distinct sender) over C connections as fast as
     the server answers; messages/s, p50/p99 of end-of-DATA `.` -> 250, errors;
  2. offered load: N messages paced at --rate messages/s; the same latencies, the rate reached
     and how far the senders fell behind the schedule.
For mailgate it also waits for the outbound sender to drain the outbox (2 mails per ticket) and
checks that the database holds exactly the tickets, accounts and outbox rows it was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_PY = ROOT / ".venv" / "bin" / "python"
SUPPORT = "support@example.com"
GOAL_RATIO = 0.5  # full ingest at >= half the bare handler's rate
GOAL_P99_MS = 50.0  # p99 end-of-DATA -> 250 under the offered load
WARMUP = 20  # messages sent to each server before measuring (imports, template compilation)

REPO_CONFIG = ROOT / "config" / "mailgate.toml"

WORDS = (
    "account invoice password login order delivery refund printer error screen message "
    "please help thanks since yesterday cannot open the a to with my your we our after before "
    "update version server connection timeout page button click again customer number "
    "bonjour merci facture commande livraison problème écran mot de passe depuis hier"
).split()


# -- messages --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    sender: str
    data: bytes  # dot-stuffed, CRLF line ends, ends with CRLF, without the final ".\r\n"


def make_message(tag: str, i: int, size: int) -> Outgoing:
    """A plain customer mail of about `size` bytes from a sender no other message uses."""
    rng = random.Random(f"{tag}-{i}")
    sender = f"customer-{tag}-{i}@bench.example.org"
    head = (
        f"From: Customer {i} <{sender}>\r\n"
        f"To: Support <{SUPPORT}>\r\n"
        f"Subject: Bench {tag} {i}: {' '.join(rng.choices(WORDS, k=6))}\r\n"
        f"Date: {formatdate(localtime=False)}\r\n"
        f"Message-ID: <bench-{tag}-{i}-{rng.getrandbits(64):016x}@bench.example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
    ).encode()
    lines: list[bytes] = []
    length = len(head)
    while length < size:
        line = " ".join(rng.choices(WORDS, k=12)).capitalize().encode() + b".\r\n"
        lines.append(b"." + line if line.startswith(b".") else line)
        length += len(line)
    return Outgoing(sender, head + b"".join(lines))


def make_messages(tag: str, count: int, size: int) -> list[Outgoing]:
    return [make_message(tag, i, size) for i in range(count)]


# -- SMTP client ----------------------------------------------------------------------------


class SmtpError(Exception):
    def __init__(self, stage: str, code: int, text: bytes) -> None:
        super().__init__(f"{stage}: {code} {text.decode(errors='replace').strip()}")
        self.stage, self.code = stage, code


class Client:
    """One SMTP connection reused for many messages (RSET between transactions)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> Client:
        reader, writer = await asyncio.open_connection(host, port)
        client = cls(reader, writer)
        await client.expect("greeting", 220)
        await client.command(b"EHLO bench-client.example.org", "ehlo", 250)
        return client

    async def reply(self) -> tuple[int, bytes]:
        text = b""
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            text += line
            if line[3:4] != b"-":
                return int(line[:3]), text

    async def expect(self, stage: str, code: int) -> None:
        got, text = await self.reply()
        if got != code:
            raise SmtpError(stage, got, text)

    async def command(self, line: bytes, stage: str, code: int) -> None:
        self.writer.write(line + b"\r\n")
        await self.expect(stage, code)

    async def send(self, msg: Outgoing) -> float:
        """One transaction; returns seconds from writing the end-of-DATA `.` to the reply."""
        try:
            size = len(msg.data)
            await self.command(f"MAIL FROM:<{msg.sender}> SIZE={size}".encode(), "mail", 250)
            await self.command(f"RCPT TO:<{SUPPORT}>".encode(), "rcpt", 250)
            await self.command(b"DATA", "data", 354)
            self.writer.write(msg.data)
            await self.writer.drain()
            start = time.perf_counter()
            self.writer.write(b".\r\n")
            code, text = await self.reply()
            elapsed = time.perf_counter() - start
            if code != 250:
                raise SmtpError("end-of-data", code, text)
            return elapsed
        finally:
            if not self.writer.is_closing():
                self.writer.write(b"RSET\r\n")
                await self.expect("rset", 250)

    async def close(self) -> None:
        try:
            self.writer.write(b"QUIT\r\n")
            await asyncio.wait_for(self.reply(), 5)
        except (TimeoutError, OSError, ConnectionError, ValueError):
            pass
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


@dataclass
class Result:
    server: str
    scenario: str
    messages: int = 0
    ok: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # seconds, end-of-DATA -> 250
    schedule_lag: list[float] = field(default_factory=list)  # seconds a send started late
    elapsed: float = 0.0
    server_cpu: float = 0.0  # CPU seconds used by the server process during the scenario
    offered: float = 0.0

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(f"{type(exc).__name__}: {exc}")

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    def pct(self, p: float, values: Sequence[float] | None = None) -> float:
        data = sorted(self.latencies if values is None else values)
        if not data:
            return float("nan")
        return data[min(len(data) - 1, max(0, math.ceil(p / 100 * len(data)) - 1))] * 1000


async def _worker(
    host: str,
    port: int,
    client: Client,
    jobs: Iterator[tuple[int, Outgoing]],
    result: Result,
    start: float,
    rate: float,
) -> None:
    for index, msg in jobs:
        if rate:
            due = start + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            result.schedule_lag.append(max(0.0, time.perf_counter() - due))
        try:
            result.latencies.append(await client.send(msg))
            result.ok += 1
        except (SmtpError, OSError, ConnectionError, ValueError) as exc:
            result.error(exc)
            if isinstance(exc, SmtpError) and exc.stage != "rset":
                continue
            await client.close()  # the session is in an unknown state: start a new one
            client = await Client.open(host, port)
    await client.close()


async def run_load(
    host: str,
    port: int,
    messages: list[Outgoing],
    connections: int,
    result: Result,
    rate: float = 0.0,
) -> Result:
    """Send every message over `connections` sessions; paced at `rate`/s when rate > 0."""
    clients = [await Client.open(host, port) for _ in range(connections)]
    jobs = iter(enumerate(messages))  # shared: each worker takes the next message
    result.messages, result.offered = len(messages), rate
    start = time.perf_counter() + (0.05 if rate else 0.0)
    await asyncio.gather(*(_worker(host, port, c, jobs, result, start, rate) for c in clients))
    result.elapsed = time.perf_counter() - start
    return result


# -- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def is_listening(port: int) -> bool:
    """True when /proc/net/tcp{,6} shows a socket in LISTEN (0A) on `port`."""
    want = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                next(fh)
                for line in fh:
                    fields = line.split()
                    if fields[1].endswith(want) and fields[3] == "0A":
                        return True
        except FileNotFoundError:
            continue
    return False


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and every live descendant (parse workers, fork server), each
    with its reaped children's time (cutime + cstime)."""
    parents: dict[int, int] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)], stats[int(entry.name)] = int(fields[1]), fields
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent and p not in tree]
        tree.update(children)
        frontier.extend(children)
    ticks = sum(sum(int(x) for x in stats[p][11:15]) for p in tree if p in stats)
    return ticks / os.sysconf("SC_CLK_TCK")


def write_config(target: Path, overrides: dict[tuple[str, str], str]) -> None:
    """config/mailgate.toml, every key and comment kept, with `overrides` (section, key) set.

    A key the file lacks is added at the end of its section, so the bench keeps up with the
    documented schema as it grows."""
    out: list[str] = []
    pending = dict(overrides)
    section = ""

    def flush_section() -> None:
        for (sec, key), value in list(pending.items()):
            if sec == section:
                out.append(f"{key} = {json.dumps(value)}")
                del pending[(sec, key)]

    for line in REPO_CONFIG.read_text().splitlines():
        header = re.match(r"^\s*\[([A-Za-z0-9_.\"@-]+)\]\s*(#.*)?$", line)
        if header:
            flush_section()
            section = header.group(1)
        else:
            m = re.match(r"^(\s*)([A-Za-z0-9_]+)(\s*=\s*)(\"[^\"]*\"|[^#\s]+)(\s*#.*)?$", line)
            if m and (section, m.group(2)) in pending:
                value = json.dumps(pending.pop((section, m.group(2))))
                line = f"{m.group(1)}{m.group(2)}{m.group(3)}{value}{m.group(5) or ''}"
        out.append(line)
    flush_section()
    for (sec, key), value in pending.items():
        out += [f"[{sec}]", f"{key} = {json.dumps(value)}"]
    text = "\n".join(out) + "\n"
    parsed = tomllib.loads(text)
    for (sec, key), value in overrides.items():
        node: Any = parsed
        for part in sec.split("."):
            node = node[part]
        assert node[key] == value, f"config override {sec}.{key} not applied"
    target.write_text(text)


class Server:
    def __init__(self, name: str, argv: list[str], port: int, log: Path, env: dict[str, str]):
        self.name, self.argv, self.port, self.log, self.env = name, argv, port, log, env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT
            )
        deadline = time.monotonic() + timeout
        while not is_listening(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} not listening after {timeout}s:\n{self.tail()}")
            time.sleep(0.02)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


async def bare_server(port: int, max_bytes: int) -> None:
    """aiosmtpd with the same SMTP settings as mailgate's listener, storing nothing."""
    from aiosmtpd.smtp import SMTP

    class NullHandler:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            return "250 2.0.0 OK, discarded"

    loop = asyncio.get_running_loop()
    handler = NullHandler()

    def factory() -> SMTP:
        return SMTP(
            handler,
            hostname="bare.bench.test",
            data_size_limit=max_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            ident="bare-aiosmtpd",
            loop=loop,
        )

    server = await loop.create_server(factory, host="127.0.0.1", port=port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


# -- the mailgate database --------------------------------------------------------------------


def db_counts(db_path: Path) -> dict[str, int]:
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        out = {
            t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("ticket", "account", "receipt", "message", "outbox", "quarantine")
        }
        for status, n in con.execute("SELECT status, count(*) FROM outbox GROUP BY status"):
            out[f"outbox_{status}"] = n
        return out
    finally:
        con.close()


def wait_drained(db_path: Path, expected: int, since: float, timeout: float) -> float | None:
    """Seconds from `since` until `expected` outbox rows are sent (None: not within timeout)."""
    deadline = time.perf_counter() + timeout
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        while time.perf_counter() < deadline:
            (done,) = con.execute(
                "SELECT count(*) FROM outbox WHERE status IN ('sent', 'failed')"
            ).fetchone()
            if done >= expected:
                return time.perf_counter() - since
            time.sleep(0.1)
    finally:
        con.close()
    return None


def maildir_counts(maildir: Path) -> tuple[int, int]:
    """Mails in maildir/new and how many distinct Message-IDs they carry."""
    files = list((maildir / "new").iterdir()) if (maildir / "new").exists() else []
    ids = set()
    for path in files:
        with open(path, "rb") as fh:
            for line in fh:
                if line.lower().startswith(b"message-id:"):
                    ids.add(line.split(b":", 1)[1].strip())
                    break
                if line in (b"\n", b"\r\n"):
                    break
    return len(files), len(ids)


def log_problems(log: Path) -> dict[str, int]:
    """Warning and error events in mailgate's log, counted by event name."""
    counts: dict[str, int] = {}
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith(("level=warning ", "level=error ", "level=critical ")):
            name = line.split(" ", 2)[1].removeprefix("event=")
            counts[name] = counts.get(name, 0) + 1
    return counts


def tickets_by_tag(python: str, config: Path, env: dict[str, str]) -> dict[str, int]:
    """`mailgate ticket list --json`, counted by the bench tag in each requester's address."""
    proc = subprocess.run(
        [python, "-m", "mailgate", "--config", str(config), "ticket", "list", "--json"],
        capture_output=True,
        env=env,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        print(proc.stderr.decode(errors="replace"), file=sys.stderr)
        return {}
    counts: dict[str, int] = {}
    for ticket in json.loads(proc.stdout):
        requester = str(ticket.get("requester", ""))
        tag = requester.split("-")[1] if requester.startswith("customer-") else "other"
        counts[tag] = counts.get(tag, 0) + 1
    return counts


def start_profiler(
    folder: str | None, mode: str, python: str, pid: int
) -> subprocess.Popen[bytes] | None:
    """py-spy attached to mailgate serve (collapsed stacks per thread), if asked and installed.

    mode "gil": only samples holding the GIL (where CPU goes); "active": threads not idle
    (includes fsync and lock waits); "idle": every sample."""
    if not folder:
        return None
    spy = shutil.which("py-spy", path=str(Path(python).parent)) or shutil.which("py-spy")
    if spy is None:
        print("--profile: py-spy is not installed (pip install py-spy), not profiling")
        return None
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    extra = {"gil": ["--gil"], "idle": ["--idle"]}.get(mode, [])
    argv = [
        spy,
        "record",
        "--pid",
        str(pid),
        "--threads",
        "--nonblocking",
        *extra,
        "--format",
        "raw",
        "-o",
        str(out / f"mailgate-{mode}.collapsed"),
    ]
    with open(out / "py-spy.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
    time.sleep(1.0)  # let it attach before the load starts
    return proc


def stop_profiler(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


# -- the run ----------------------------------------------------------------------------------


def show(results: list[Result]) -> None:
    head = f"{'server':<9} {'scenario':<16} {'msgs':>6} {'ok':>6} {'msg/s':>8} {'p50 ms':>8} "
    head += f"{'p99 ms':>8} {'max ms':>8} {'errors':>6} {'srv CPU':>8} {'CPU ms/msg':>10}"
    print(head)
    print("-" * len(head))
    for r in results:
        scenario = f"paced {r.offered:g}/s" if r.offered else "throughput"
        cpu = f"{100 * r.server_cpu / r.elapsed:.0f}%" if r.elapsed else "-"
        per_msg = f"{1000 * r.server_cpu / r.ok:.2f}" if r.ok else "-"
        print(
            f"{r.server:<9} {scenario:<16} {r.messages:>6} {r.ok:>6} {r.rate:>8.0f} "
            f"{r.pct(50):>8.1f} {r.pct(99):>8.1f} {r.pct(100):>8.1f} {r.errors:>6} {cpu:>8} "
            f"{per_msg:>10}"
        )
        for sample in r.error_samples:
            print(f"    error: {sample}")


async def measure(server: Server, tag: str, args: argparse.Namespace, rate: float = 0.0) -> Result:
    scenario = "rate" if rate else "tp"
    messages = make_messages(f"{tag}{scenario}", args.messages, args.size)
    result = Result(server.name, scenario)
    cpu0 = tree_cpu_seconds(server.pid)
    await run_load("127.0.0.1", server.port, messages, args.connections, result, rate)
    result.server_cpu = tree_cpu_seconds(server.pid) - cpu0
    return result


async def warm(server: Server, tag: str, args: argparse.Namespace) -> None:
    result = Result(server.name, "warmup")
    await run_load(
        "127.0.0.1",
        server.port,
        make_messages(f"{tag}warm", WARMUP, args.size),
        min(args.connections, WARMUP),
        result,
    )
    if result.errors:
        raise RuntimeError(f"{server.name} warm-up failed: {result.error_samples}")


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per scenario")
    parser.add_argument("--connections", type=int, default=8, help="concurrent SMTP sessions")
    parser.add_argument("--rate", type=float, default=300.0, help="offered load, messages/s")
    parser.add_argument("--size", type=int, default=5000, help="message size in bytes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--profile", metavar="DIR", help="record mailgate under py-spy (if installed) into DIR"
    )
    parser.add_argument(
        "--profile-mode",
        choices=("gil", "active", "idle"),
        default="gil",
        help="py-spy sampling: GIL holders (CPU), non-idle threads, or everything",
    )
    parser.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # run the `finally` blocks: stop both servers
    if args.bare_server:
        asyncio.run(bare_server(args.bare_server, 41943040))
        return 0

    python = str(VENV_PY if VENV_PY.exists() else Path(sys.executable))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-bench-"))
    tag = f"{os.getpid()}x"  # no "-" in it: the requester address is split on "-"
    print(
        f"mailgate ingest bench: {args.messages} messages of ~{args.size} B per scenario, "
        f"{args.connections} connections, offered load {args.rate:g}/s, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} (other work on the machine skews the figures)"
    )
    print(f"temporary directory: {tmp}")
    results: list[Result] = []
    try:
        # 1. bare aiosmtpd, storing nothing
        port = free_port()
        bare = Server(
            "bare",
            [python, str(Path(__file__).resolve()), "--bare-server", str(port)],
            port,
            tmp / "bare.log",
            env,
        )
        bare.start()
        try:
            asyncio.run(warm(bare, tag, args))
            results.append(asyncio.run(measure(bare, tag + "b", args)))
            results.append(asyncio.run(measure(bare, tag + "b", args, args.rate)))
        finally:
            bare.stop()

        # 2. mailgate serve: SQLite, maildir outbound, everything else off
        port = free_port()
        data_dir, db_path, sent_dir = tmp / "data", tmp / "data" / "mailgate.db", tmp / "sent"
        config = tmp / "mailgate.toml"
        write_config(
            config,
            {
                ("mailgate", "data_dir"): str(data_dir),
                ("database", "url"): f"sqlite:///{db_path}",
                ("inbound", "smtp_listen"): f"127.0.0.1:{port}",
                ("inbound", "lmtp_listen"): "",
                ("addresses", "support"): SUPPORT,
                ("outbound", "transport"): f"maildir:{sent_dir}",
                ("portal", "listen"): "",
                ("metrics", "listen"): "",
            },
        )
        serve = [python, "-m", "mailgate", "--config", str(config), "serve"]
        mailgate = Server("mailgate", serve, port, tmp / "mailgate.log", env)
        mailgate.start()
        spy = start_profiler(args.profile, args.profile_mode, python, mailgate.pid)
        drains: list[tuple[str, int, float | None, int]] = []
        try:
            asyncio.run(warm(mailgate, tag, args))
            wait_drained(db_path, 2 * WARMUP, time.perf_counter(), 60)
            for rate in (0.0, args.rate):
                before = db_counts(db_path).get("outbox_sent", 0)
                started = time.perf_counter()
                result = asyncio.run(measure(mailgate, tag + "m", args, rate))
                results.append(result)
                during = db_counts(db_path).get("outbox_sent", 0) - before
                expected = before + 2 * result.ok
                drained = wait_drained(db_path, expected, started, 60 + args.messages / 20)
                drains.append((result.scenario, 2 * result.ok, drained, during))
        finally:
            stop_profiler(spy)
            code = mailgate.stop()

        print()
        show(results)
        bare_tp, _bare_rate, mg_tp, mg_rate = results
        ratio = mg_tp.rate / bare_tp.rate if bare_tp.rate else 0.0
        print()
        print(
            f"ratio mailgate/bare (throughput): {ratio:.2f}  "
            f"(goal >= {GOAL_RATIO}: {'met' if ratio >= GOAL_RATIO else 'NOT met'})"
        )
        lag = mg_rate.pct(99, mg_rate.schedule_lag)
        p99 = mg_rate.pct(99)
        print(
            f"offered {args.rate:g}/s to mailgate: reached {mg_rate.rate:.0f}/s, "
            f"p99 end-of-DATA -> 250 {p99:.1f} ms "
            f"(goal < {GOAL_P99_MS:g} ms: {'met' if p99 < GOAL_P99_MS else 'NOT met'}), "
            f"p99 lag behind schedule {lag:.1f} ms"
        )
        for scenario, rows, drained, during in drains:
            if drained is None:
                print(
                    f"outbox ({scenario}): {rows} mails NOT all sent within "
                    f"{60 + args.messages / 20:.0f} s of the end of the load"
                )
            else:
                print(
                    f"outbox ({scenario}): {rows} mails sent {drained:.1f} s after the first "
                    f"message ({rows / drained:.0f} mails/s); {during} of them during the load"
                )
        print(f"mailgate serve exit code after SIGTERM: {code}")
        problems = log_problems(mailgate.log)
        if problems:
            print("mailgate logged: " + ", ".join(f"{n} x {e}" for e, n in problems.items()))

        counts = db_counts(db_path)
        by_tag = tickets_by_tag(python, config, env)
        maildir, distinct = maildir_counts(sent_dir)
        expected = {f"{tag}mtp": args.messages, f"{tag}mrate": args.messages, f"{tag}warm": WARMUP}
        total = sum(expected.values())
        print()
        print(
            "database check (`mailgate ticket list --json`): "
            + ", ".join(
                f"{by_tag.get(k, 0)} tickets from {k} (expected {v})" for k, v in expected.items()
            )
        )
        print(
            f"  SQLite: {counts['ticket']} tickets, {counts['account']} accounts, "
            f"{counts['receipt']} receipts, {counts['message']} messages, "
            f"{counts['outbox']} outbox rows ({counts.get('outbox_sent', 0)} sent), "
            f"{counts['quarantine']} quarantined; maildir holds {maildir} mails"
        )
        honest = (
            all(by_tag.get(k, 0) == v for k, v in expected.items())
            and counts["ticket"] == counts["account"] == counts["receipt"] == total
            and counts["outbox"] == 2 * total
            and mg_tp.errors == 0
            and mg_rate.errors == 0
        )
        if counts.get("outbox_queued"):
            print(f"  {counts['outbox_queued']} outbox rows still queued at shutdown")
        if maildir != distinct:
            print(
                f"  WARNING: the maildir holds {maildir} mails but only {distinct} distinct "
                f"Message-IDs: {maildir - distinct} outbound mails were delivered twice"
            )
        print(f"  every accepted message is a ticket, an account and 2 outbox rows: {honest}")
        return 0 if honest else 1
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print(f"bench client CPU: {usage.ru_utime + usage.ru_stime:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
