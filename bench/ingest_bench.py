"""Ingest benchmark: mailgate end to end (SMTP in, confirmation and activation out to a local SMTP
sink) next to a bare aiosmtpd that stores nothing, on SQLite and PostgreSQL.

`make bench` (or `.venv/bin/python bench/ingest_bench.py --help`). See bench/README.md.

Per database, mailgate runs as `serve` in a subprocess with `[outbound] transport` pointed at a
local SMTP sink (Postfix's smtp-sink when installed, else bench/sink.py), and gets:
  1. sustained: N first-contact messages (~5 KB, each from a distinct sender) over C connections
     as fast as it answers; measured from the first message until the last of the 2N mails it
     owes (confirmation + activation) has reached the sink;
  2. paced: N messages at --rate/s; p99 of end-of-DATA `.` -> 250 and how much of the outbound
     reached the sink while the load ran.
The bare aiosmtpd server gives the ceiling (the ratio's denominator). It is measured flat out
before the SQLite run and again right after it, and the ratio is taken against the mean of the
two: the speed of a shared (virtual) machine drifts by ±20 % from one minute to the next, and one
ceiling measured a minute before the run it divides made the ratio swing with that drift
(bench/README.md). The script exits 1 when a message was refused, a ticket or an outbound mail
is missing or doubled, or the outbox did not drain: a fast figure that lost mail is never
printed as a success.
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
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
from sink import Sink, is_listening

ROOT = Path(__file__).resolve().parent.parent
VENV_PY = ROOT / ".venv" / "bin" / "python"
SUPPORT = "support@example.com"
GOAL_RATIO = 0.25  # issue 11: sustained mailgate >= 0.25 x bare aiosmtpd, same run
GOAL_P99_MS = 50.0  # p99 end-of-DATA -> 250 at the offered rate
KEPT_UP = 0.97  # paced: the rate reached, as a share of the offered one, for the p99 to count
WARMUP = 20  # messages sent to each server before measuring (imports, template compilation)
MAILS_PER_MESSAGE = 2  # a first contact owes a confirmation and an activation mail
DRAINING_SHARE = 0.9  # paced: this share of the outbound at the sink when the load ends
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
QUICK_MESSAGES = 300

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
    server_cpu: float = 0.0  # CPU seconds of the server's process tree during the load
    offered: float = 0.0
    start_wall: float = 0.0  # time.time() of the first message (the sink's clock too)
    end_wall: float = 0.0  # time.time() when the last reply came back

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
    delay = 0.05 if rate else 0.0
    start = time.perf_counter() + delay
    result.start_wall = time.time() + delay
    await asyncio.gather(*(_worker(host, port, c, jobs, result, start, rate) for c in clients))
    result.elapsed = time.perf_counter() - start
    result.end_wall = time.time()
    return result


# -- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def write_config(target: Path, overrides: dict[tuple[str, str], str | int]) -> None:
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


def wait_log(server: Server, line: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while line not in server.tail(10_000):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {line!r} in {server.name}'s log after {timeout}s")
        time.sleep(0.05)


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


def libpq_url(url: str) -> str:
    """SQLAlchemy's postgresql+psycopg:// URL as psycopg wants it."""
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


class Store:
    """Read-only counts of mailgate's tables, on SQLite or PostgreSQL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pg: Any = None
        if not url.startswith("sqlite"):
            import psycopg

            self.pg = psycopg.connect(libpq_url(url), autocommit=True)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.pg is not None:
            return list(self.pg.execute(sql).fetchall())
        path = self.url.removeprefix("sqlite:///")
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def counts(self) -> dict[str, int]:
        out = {
            t: int(self.rows(f"SELECT count(*) FROM {t}")[0][0])
            for t in ("ticket", "account", "receipt", "message", "outbox", "quarantine")
        }
        for status, n in self.rows("SELECT status, count(*) FROM outbox GROUP BY status"):
            out[f"outbox_{status}"] = int(n)
        return out

    def backlog(self) -> int:
        """Outbox rows not sent yet (queued, or claimed by a sender)."""
        sql = "SELECT count(*) FROM outbox WHERE status NOT IN ('sent', 'failed')"
        return int(self.rows(sql)[0][0])

    def close(self) -> None:
        if self.pg is not None:
            self.pg.close()


class PgDatabase:
    """A fresh database on the PostgreSQL server of `url` for one run, dropped afterwards."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.name = f"mailgate_bench_{os.getpid()}"
        self.url = with_database(server_url, self.name)

    def admin(self) -> Any:
        import psycopg

        return psycopg.connect(libpq_url(self.server_url), autocommit=True, connect_timeout=3)

    def reachable(self) -> str | None:
        """None when the server answers, else why not."""
        try:
            import psycopg
        except ImportError:
            return "psycopg is not installed"
        try:
            with self.admin() as con:
                con.execute("SELECT 1")
        except psycopg.Error as exc:
            return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None

    def settings(self) -> str:
        with self.admin() as con:
            got = [
                f"{name}={con.execute(f'SHOW {name}').fetchone()[0]}"
                for name in ("server_version", "fsync", "synchronous_commit")
            ]
        return ", ".join(got)

    def create(self) -> None:
        with self.admin() as con:
            con.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            con.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        with self.admin() as con:
            con.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def tag_of(address: str) -> str:
    """The scenario tag in a bench address (customer-TAG-i@...), "other" for anything else."""
    parts = address.split("-", 2)
    return parts[1] if parts[0] == "customer" and len(parts) == 3 else "other"


@dataclass
class SinkCheck:
    """What reached the sink for one tag: each address must get exactly MAILS_PER_MESSAGE."""

    addresses: int
    mails: int
    wrong: int  # addresses with a count other than MAILS_PER_MESSAGE


def sink_check(sink: Sink, tag: str) -> SinkCheck:
    counts = [n for rcpt, n in sink.tail.per_rcpt.items() if tag_of(rcpt) == tag]
    return SinkCheck(len(counts), sum(counts), sum(1 for n in counts if n != MAILS_PER_MESSAGE))


def wait_sink(sink: Sink, tag: str, expected: int, timeout: float, server: Server) -> float | None:
    """time.time() at which the sink held `expected` mails for `tag` (None: not in time)."""
    deadline = time.monotonic() + timeout
    while True:
        sink.tail.poll()
        if sink.tail.per_group[tag] >= expected:
            return sink.tail.last_at.get(tag, time.time())
        if time.monotonic() > deadline or (server.proc and server.proc.poll() is not None):
            return None
        time.sleep(0.01)


def log_problems(log: Path) -> dict[str, int]:
    """Warning and error events in mailgate's log, counted by event name."""
    counts: dict[str, int] = {}
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith(("level=warning ", "level=error ", "level=critical ")):
            name = line.split(" ", 2)[1].removeprefix("event=")
            counts[name] = counts.get(name, 0) + 1
    return counts


def harness_cpu_seconds(sink: Sink) -> float:
    """CPU seconds of this process (all its threads) and of the SMTP sink, so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime + sink.cpu_seconds()


def start_profiler(
    folder: str | None, mode: str, python: str, pid: int, label: str
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
        "--subprocesses",  # the sender process and the parse workers too
        "--rate",
        "250",
        "--nonblocking",
        *extra,
        "--format",
        "raw",
        "-o",
        str(out / f"mailgate-{label}-{mode}.collapsed"),
    ]
    with open(out / f"py-spy-{label}.log", "wb") as log:
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


@dataclass
class Outflow:
    """The outbound side of one mailgate scenario, as counted at the sink."""

    result: Result
    expected: int  # mails owed: MAILS_PER_MESSAGE per accepted message
    at_end_of_load: int  # of them, at the sink when the last 250 came back
    backlog: int  # outbox rows not sent when the last 250 came back
    last_arrival: float | None  # time.time() the last owed mail reached the sink (None: never)
    cpu_drained: float  # server tree CPU seconds from the first message until drained
    # The same window's CPU seconds of the harness: this process (the SMTP client, following
    # the sink's file) and the sink. With mailgate's, what one message costs the machine.
    harness_cpu: float = 0.0

    @property
    def sustained(self) -> float:
        if self.last_arrival is None:
            return 0.0
        return self.result.ok / max(self.last_arrival - self.result.start_wall, 1e-9)

    @property
    def drain_seconds(self) -> float | None:
        if self.last_arrival is None:
            return None
        return max(0.0, self.last_arrival - self.result.end_wall)


@dataclass
class MailgateRun:
    label: str  # "SQLite" or "PostgreSQL"
    flows: list[Outflow] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # the database and sink checks
    honest: bool = False
    failure: str = ""  # why the run stopped early

    def flow(self, paced: bool) -> Outflow | None:
        return next((f for f in self.flows if bool(f.result.offered) == paced), None)


def show(results: list[Result]) -> None:
    head = f"{'server':<12} {'scenario':<12} {'msgs':>6} {'ok':>6} {'ack/s':>7} {'p50 ms':>8} "
    head += f"{'p99 ms':>8} {'max ms':>8} {'errors':>6} {'srv CPU':>8} {'CPU ms/msg':>10}"
    print(head)
    print("-" * len(head))
    for r in results:
        scenario = f"paced {r.offered:g}/s" if r.offered else "flat out"
        cpu = f"{100 * r.server_cpu / r.elapsed:.0f}%" if r.elapsed else "-"
        per_msg = f"{1000 * r.server_cpu / r.ok:.2f}" if r.ok else "-"
        print(
            f"{r.server:<12} {scenario:<12} {r.messages:>6} {r.ok:>6} {r.rate:>7.0f} "
            f"{r.pct(50):>8.1f} {r.pct(99):>8.1f} {r.pct(100):>8.1f} {r.errors:>6} {cpu:>8} "
            f"{per_msg:>10}"
        )
        for sample in r.error_samples:
            print(f"    error: {sample}")


def show_outflows(runs: list[MailgateRun]) -> None:
    head = f"{'server':<12} {'scenario':<12} {'mails':>6} {'in load':>8} {'backlog':>7} "
    head += f"{'drain s':>8} {'sustained':>9} {'CPU ms/msg':>10}"
    print(head)
    print("-" * len(head))
    for run in runs:
        for f in run.flows:
            r = f.result
            scenario = f"paced {r.offered:g}/s" if r.offered else "flat out"
            drain = f"{f.drain_seconds:.1f}" if f.drain_seconds is not None else "NOT"
            sustained = f"{f.sustained:.0f}" if f.last_arrival is not None else "-"
            per_msg = f"{1000 * f.cpu_drained / r.ok:.2f}" if r.ok else "-"
            print(
                f"{r.server:<12} {scenario:<12} {f.expected:>6} {f.at_end_of_load:>8} "
                f"{f.backlog:>7} {drain:>8} {sustained:>9} {per_msg:>10}"
            )


async def measure(server: Server, tag: str, args: argparse.Namespace, rate: float = 0.0) -> Result:
    messages = make_messages(tag, args.messages, args.size)
    result = Result(server.name, "paced" if rate else "flat out")
    cpu0 = tree_cpu_seconds(server.pid)
    await run_load("127.0.0.1", server.port, messages, args.connections, result, rate)
    result.server_cpu = tree_cpu_seconds(server.pid) - cpu0
    return result


async def warm(server: Server, tag: str, args: argparse.Namespace) -> None:
    result = Result(server.name, "warmup")
    await run_load(
        "127.0.0.1",
        server.port,
        make_messages(tag, WARMUP, args.size),
        min(args.connections, WARMUP),
        result,
    )
    if result.errors:
        raise RuntimeError(f"{server.name} warm-up failed: {result.error_samples}")


def progress(line: str) -> None:
    print(f"  .. {line}", flush=True)


def run_bare(
    python: str,
    env: dict[str, str],
    tmp: Path,
    tag: str,
    args: argparse.Namespace,
    paced: bool = True,
    name: str = "bare",
    key: str = "b",
) -> list[Result]:
    """The ceiling: aiosmtpd with mailgate's listener settings, storing nothing (flat out, then
    paced unless `paced` is False or --quick)."""
    port = free_port()
    argv = [python, str(Path(__file__).resolve()), "--bare-server", str(port)]
    bare = Server(name, argv, port, tmp / f"{name}.log", env)
    bare.start()
    try:
        asyncio.run(warm(bare, f"{tag}{key}warm", args))
        results = [asyncio.run(measure(bare, f"{tag}{key}tp", args))]
        if paced and not args.quick:
            results.append(asyncio.run(measure(bare, f"{tag}brate", args, args.rate)))
        for r in results:
            what = f"paced {r.offered:g}/s" if r.offered else "flat out"
            progress(f"bare {what}: {r.ok}/{r.messages} accepted at {r.rate:.0f} msg/s")
        return results
    finally:
        bare.stop()


def mailgate_cli(python: str, config: Path, env: dict[str, str], *argv: str) -> str:
    proc = subprocess.run(
        [python, "-m", "mailgate", "--config", str(config), *argv],
        capture_output=True,
        env=env,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"mailgate {' '.join(argv)} exited {proc.returncode}: "
            + proc.stderr.decode(errors="replace")[-2000:]
        )
    return proc.stdout.decode(errors="replace")


def tickets_by_tag(python: str, config: Path, env: dict[str, str]) -> dict[str, int]:
    """`mailgate ticket list --json`, counted by the bench tag in each requester's address."""
    tickets = json.loads(mailgate_cli(python, config, env, "ticket", "list", "--json"))
    return dict(Counter(tag_of(str(t.get("requester", ""))) for t in tickets))


def run_mailgate(
    label: str,
    key: str,
    url: str,
    sink: Sink,
    python: str,
    env: dict[str, str],
    tmp: Path,
    tag: str,
    args: argparse.Namespace,
    results: list[Result],
) -> MailgateRun:
    """mailgate serve on `url`, outbound to the sink: warm-up, flat out, paced, then checks."""
    run = MailgateRun(label)
    folder = tmp / key
    folder.mkdir()
    port = free_port()
    config = folder / "mailgate.toml"
    write_config(
        config,
        {
            ("mailgate", "data_dir"): str(folder / "data"),
            ("database", "url"): url,
            ("inbound", "smtp_listen"): f"127.0.0.1:{port}",
            ("inbound", "lmtp_listen"): "",
            **(
                {("inbound", "smtp_processes"): args.smtp_processes}
                if args.smtp_processes is not None
                else {}
            ),
            ("addresses", "support"): SUPPORT,
            ("outbound", "transport"): f"smtp://127.0.0.1:{sink.port}",
            # The anti-backscatter cap on mail to new addresses (200/h by default) would hold
            # the outbound back for hours: the bench measures how fast the pipeline can go.
            ("outbound", "first_contact_per_hour"): 1_000_000,
            ("portal", "listen"): "",
            ("metrics", "listen"): "",
        },
    )
    serve = [python, "-m", "mailgate", "--config", str(config), "serve"]
    server = Server(f"mailgate/{key}", serve, port, folder / "mailgate.log", env)
    base = f"{tag}{key}"
    expected = {f"{base}warm": WARMUP, f"{base}tp": args.messages, f"{base}rate": args.messages}
    code: int | None = None
    store: Store | None = None
    try:
        mailgate_cli(python, config, env, "db", "upgrade")  # the schema, before the clock starts
        server.start()  # ready = the SMTP port in LISTEN; the sender is checked by the warm-up
        store = Store(url)
        spy = start_profiler(args.profile, args.profile_mode, python, server.pid, key)
        try:
            asyncio.run(warm(server, f"{base}warm", args))
            owed = MAILS_PER_MESSAGE * WARMUP
            if wait_sink(sink, f"{base}warm", owed, 120, server) is None:
                got = sink.tail.per_group[f"{base}warm"]
                raise RuntimeError(
                    f"the warm-up's {owed} mails did not reach the sink within 120 s "
                    f"({got} did): is the sender running?\n{server.tail()}"
                )
            # serve's warm command process imports the whole application once at start (about
            # a second of CPU, at nice 10): over before the clock starts, as on a server that
            # has been up for a while.
            wait_log(server, "event=cli_warm.ready", 120)
            for rate in (0.0, args.rate):
                scenario = f"{base}{'rate' if rate else 'tp'}"
                cpu0, harness0 = tree_cpu_seconds(server.pid), harness_cpu_seconds(sink)
                result = asyncio.run(measure(server, scenario, args, rate))
                results.append(result)
                sink.tail.poll()  # what the sink holds now arrived during the load
                at_end = sink.tail.per_group[scenario]
                backlog = store.backlog()
                owed = MAILS_PER_MESSAGE * result.ok
                what = f"paced {rate:g}/s" if rate else "flat out"
                progress(
                    f"{server.name} {what}: {result.ok}/{result.messages} accepted at "
                    f"{result.rate:.0f} msg/s, {result.errors} errors; {at_end}/{owed} mails at "
                    f"the sink, {backlog} outbox rows unsent; waiting for the rest"
                )
                last = wait_sink(sink, scenario, owed, args.drain_timeout, server)
                cpu = tree_cpu_seconds(server.pid) - cpu0
                harness = harness_cpu_seconds(sink) - harness0
                run.flows.append(Outflow(result, owed, at_end, backlog, last, cpu, harness))
                flow = run.flows[-1]
                progress(
                    f"{server.name} {what}: "
                    + (
                        f"drained {flow.drain_seconds:.1f} s after the load, sustained "
                        f"{flow.sustained:.0f} msg/s"
                        if flow.drain_seconds is not None
                        else f"NOT drained within {args.drain_timeout:g} s"
                    )
                )
        finally:
            stop_profiler(spy)
            code = server.stop()
    except Exception as exc:  # a run that cannot start or finish: reported, the next one runs
        run.failure = f"{type(exc).__name__}: {exc}"
        server.stop()
        if store is not None:
            store.close()
        return run
    assert store is not None

    sink.tail.poll()
    counts = store.counts()
    store.close()
    by_tag = tickets_by_tag(python, config, env)
    total = sum(expected.values())
    lines = run.lines
    lines.append(f"mailgate serve exit code after SIGTERM: {code}")
    problems = log_problems(server.log)
    if problems:
        lines.append("mailgate logged: " + ", ".join(f"{n} x {e}" for e, n in problems.items()))
    lines.append(
        "tickets (`mailgate ticket list --json`): "
        + ", ".join(f"{by_tag.get(k, 0)} from {k} (expected {v})" for k, v in expected.items())
    )
    lines.append(
        f"database: {counts['ticket']} tickets, {counts['account']} accounts, "
        f"{counts['receipt']} receipts, {counts['message']} messages, {counts['outbox']} outbox "
        f"rows ({counts.get('outbox_sent', 0)} sent, {counts.get('outbox_queued', 0)} queued, "
        f"{counts.get('outbox_failed', 0)} failed), {counts['quarantine']} quarantined"
    )
    sink_ok = True
    for name, n in expected.items():
        check = sink_check(sink, name)
        fine = check.addresses == n and check.wrong == 0
        sink_ok &= fine
        lines.append(
            f"sink, {name}: {check.mails} mails to {check.addresses} addresses; "
            f"{check.wrong} addresses without exactly {MAILS_PER_MESSAGE} mails "
            f"(expected {n} addresses x {MAILS_PER_MESSAGE}): {'ok' if fine else 'WRONG'}"
        )
    drained = all(f.last_arrival is not None for f in run.flows)
    if not drained:
        lines.append(f"the outbox did NOT drain within --drain-timeout {args.drain_timeout:g} s")
    run.honest = (
        all(by_tag.get(k, 0) == v for k, v in expected.items())
        and counts["ticket"] == counts["account"] == counts["receipt"] == total
        and counts["outbox"] == counts.get("outbox_sent", 0) == MAILS_PER_MESSAGE * total
        and all(f.result.errors == 0 and f.result.ok == args.messages for f in run.flows)
        and sink_ok
        and drained
    )
    lines.append(
        f"every message accepted with 250, ticketed once, and its {MAILS_PER_MESSAGE} mails "
        f"delivered once: {run.honest}"
    )
    return run


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def ceiling(bare_flat: list[Result]) -> tuple[float, str]:
    """The ratio's denominator, the mean of the bare flat-out runs, and how it was made."""
    rates = [r.rate for r in bare_flat]
    mean = sum(rates) / len(rates) if rates else 0.0
    if len(rates) < 2:
        return mean, f"{mean:.0f} msg/s"
    return mean, f"mean of {' and '.join(f'{x:.0f}' for x in rates)}: {mean:.0f} msg/s"


def report_targets(
    bare_flat: list[Result], runs: list[MailgateRun], args: argparse.Namespace
) -> None:
    bare_rate, bare_text = ceiling(bare_flat)
    for run in runs:
        flat, paced = run.flow(False), run.flow(True)
        scope = "" if run.label == "SQLite" else " (reported; the targets are for SQLite)"
        print(f"{run.label}{scope}:")
        # The verdict lines name their database: `make bench`'s summary shows them alone.
        who = f"{run.label}, reported" if scope else run.label
        if run.failure:
            print(f"  did not complete: {run.failure}")
            continue
        if flat is not None:
            r = flat.result
            ratio = flat.sustained / bare_rate if bare_rate else 0.0
            drain = f"{flat.drain_seconds:.1f} s" if flat.drain_seconds is not None else "never"
            print(
                f"  sustained {flat.sustained:.0f} msg/s (first message -> last of "
                f"{flat.expected} mails at the sink); 250s came back at {r.rate:.0f} msg/s; "
                f"outbox backlog at the end of the load {flat.backlog} rows, drained "
                f"{drain} after it"
            )
            print(
                f"  {who}: ratio sustained / bare ({bare_text}): {ratio:.2f}  "
                f"target >= {GOAL_RATIO}: {verdict(ratio >= GOAL_RATIO)}"
            )
            print(f"  {cpu_ceiling(flat, bare_rate)}")
        if paced is not None:
            r = paced.result
            p99 = r.pct(99)
            lag = r.pct(99, r.schedule_lag)
            # Draining: the sender keeps up, so only the last moments' mails are still queued.
            draining = paced.at_end_of_load >= DRAINING_SHARE * paced.expected
            share = 100 * paced.at_end_of_load / paced.expected if paced.expected else 0.0
            print(
                f"  paced {args.rate:g}/s: reached {r.rate:.0f}/s, p99 end-of-DATA -> 250 "
                f"{p99:.1f} ms, p99 lag behind schedule {lag:.1f} ms; "
                f"{paced.at_end_of_load} of {paced.expected} mails ({share:.0f}%) at the sink "
                f"during the load, backlog at its end {paced.backlog} rows"
            )
            # The p99 counts only if the load was really offered: a server that falls behind
            # throttles the client (8 connections), and the latency of what it did answer then
            # hides the wait. Kept up: the 250s came back at >= KEPT_UP of the offered rate.
            kept_up = r.rate >= KEPT_UP * args.rate
            print(
                f"  {who}: p99 < {GOAL_P99_MS:g} ms at {args.rate:g}/s (and kept up: >= "
                f"{100 * KEPT_UP:.0f}% of it): {verdict(p99 < GOAL_P99_MS and kept_up)}; "
                f"outbound draining during the load (>= {100 * DRAINING_SHARE:.0f}% of its "
                f"mails at the sink when it ended): {verdict(draining)}"
            )


def cpu_ceiling(flow: Outflow, bare_rate: float) -> str:
    """What the CPU a message allows: mailgate, the client and the sink share the machine's
    cores, so at full use of all of them the run could at most reach cores / (CPU seconds a
    message). Below the goal ratio, only less CPU a message can pass; above it, the rest is
    how much of the machine the run kept busy (the pipeline's waits, other work, steal)."""
    ok = flow.result.ok
    if not ok or flow.last_arrival is None:
        return "CPU ceiling: - (not drained)"
    ours, theirs = 1000 * flow.cpu_drained / ok, 1000 * flow.harness_cpu / ok
    cores = len(os.sched_getaffinity(0))
    most = 1000 * cores / (ours + theirs)
    ratio = f", a ratio of {most / bare_rate:.2f}" if bare_rate else ""
    return (
        f"CPU a message: mailgate {ours:.2f} ms + bench client and sink {theirs:.2f} ms; "
        f"{cores} CPUs fully used would allow {most:.0f} msg/s{ratio}; the run reached "
        f"{100 * flow.sustained / most:.0f}% of that"
    )


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, help="messages per scenario (default 2000)")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_MESSAGES} messages, no paced bare run"
    )
    parser.add_argument("--connections", type=int, default=8, help="concurrent SMTP sessions")
    parser.add_argument("--rate", type=float, default=300.0, help="offered load, messages/s")
    parser.add_argument("--size", type=int, default=5000, help="message size in bytes")
    parser.add_argument(
        "--smtp-processes",
        type=int,
        help="[inbound] smtp_processes (default: config/mailgate.toml's): 0 runs the SMTP "
        "sessions in serve itself",
    )
    parser.add_argument(
        "--databases",
        default="sqlite,postgresql",
        help="comma-separated: sqlite, postgresql (skipped when not reachable)",
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_PG,
        help="PostgreSQL server; a fresh database mailgate_bench_PID is made on it and dropped",
    )
    parser.add_argument(
        "--sink",
        choices=("auto", "postfix", "python"),
        default="auto",
        help="outbound SMTP sink: Postfix's smtp-sink if installed (auto), or bench/sink.py",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        help="seconds to wait after a load for the outbox to drain (default 60 + N/5)",
    )
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
    if args.messages is None:
        args.messages = QUICK_MESSAGES if args.quick else 2000
    if args.drain_timeout is None:
        args.drain_timeout = 60 + args.messages / 5
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # run the `finally` blocks: stop every server
    if args.bare_server:
        asyncio.run(bare_server(args.bare_server, 41943040))
        return 0

    python = str(VENV_PY if VENV_PY.exists() else Path(sys.executable))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    env["PYTHONPATH"] = str(ROOT)  # measure the tree this script is in, not another install
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-bench-", dir="/tmp"))
    os.chmod(tmp, 0o755)  # smtp-sink runs as nobody and writes in tmp/sink
    tag = f"{os.getpid()}x"  # no "-" in it: addresses are split on "-"
    wanted = {d.strip().lower() for d in args.databases.split(",") if d.strip()}
    print(
        f"mailgate ingest bench: {args.messages} messages of ~{args.size} B per scenario, "
        f"{args.connections} connections, paced at {args.rate:g}/s; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} (other work on the machine skews the figures)"
    )
    print(f"temporary directory: {tmp}")
    results: list[Result] = []
    runs: list[MailgateRun] = []
    sink_folder = tmp / "sink"
    sink_folder.mkdir()
    sink = Sink(sink_folder, free_port(), python, args.sink, group=tag_of)
    pg: PgDatabase | None = None
    try:
        sink.start()
        print(f"outbound sink: {sink.kind} on 127.0.0.1:{sink.port}")
        results += run_bare(python, env, tmp, tag, args)

        if "sqlite" in wanted:
            url = f"sqlite:///{tmp / 's' / 'data' / 'mailgate.db'}"
            print("SQLite: WAL, synchronous=FULL (mailgate/store/db.py)")
            runs.append(
                run_mailgate("SQLite", "s", url, sink, python, env, tmp, tag, args, results)
            )
            # The ceiling again, right after: the ratio takes the mean (the docstring).
            results += run_bare(
                python, env, tmp, tag, args, paced=False, name="bare again", key="a"
            )
        if "postgresql" in wanted:
            pg = PgDatabase(args.database_url)
            why = pg.reachable()
            if why is not None:
                print(f"PostgreSQL: SKIPPED, {args.database_url} not reachable: {why}")
                pg = None
            else:
                print(f"PostgreSQL: database {pg.name} on {args.database_url} ({pg.settings()})")
                pg.create()
                runs.append(
                    run_mailgate(
                        "PostgreSQL", "p", pg.url, sink, python, env, tmp, tag, args, results
                    )
                )
        sink.tail.poll()
        sink_cpu = sink.cpu_seconds()

        print(f"\nload average now {os.getloadavg()[0]:.2f}")
        show(results)
        print()
        show_outflows(runs)
        print(
            "  mails: owed to the sink (2 per message); in load: at the sink when the last 250 "
            "came back;\n  backlog: outbox rows unsent then; drain s: from then to the last mail "
            "at the sink;\n  sustained: messages / (first message -> last mail at the sink); "
            "CPU ms/msg: mailgate's whole\n  process tree from the first message until drained"
        )
        print()
        report_targets(
            [r for r in results if r.server.startswith("bare") and not r.offered], runs, args
        )
        print()
        honest = all(run.honest for run in runs)
        for run in runs:
            print(f"{run.label} checks:")
            for line in run.lines:
                print(f"  {line}")
        doubled = sum(n - 1 for n in sink.tail.message_ids.values() if n > 1)
        other = sink.tail.per_group["other"]
        print(
            f"sink: {sink.tail.mails} mails, {doubled} with a Message-ID already seen, "
            f"{other} to addresses the bench did not write from; sink CPU {sink_cpu:.1f} s "
            f"({1000 * sink_cpu / max(sink.tail.mails, 1):.3f} ms/mail)"
        )
        honest = honest and doubled == 0 and not any(run.failure for run in runs)
        return 0 if honest and runs else 1
    finally:
        sink.stop()
        if pg is not None:
            pg.drop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print(f"bench client CPU: {usage.ru_utime + usage.ru_stime:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
