"""Big attachments: how far one (then ten at once) lifts the memory of `mailgate serve`.

`.venv/bin/python bench/attachment_memory.py --help`; figures and the bound: docs/operations.md.

Starts a real `mailgate serve` (SQLite, SMTP on a free port, maildir outbound, portal off) as
a subprocess, the same way bench/ingest_bench.py does, warms it up with a few small mails,
then:
  1. sends one mail carrying a --size attachment of random bytes (25 MB: ~34 MB on the wire,
     base64), and
  2. --parallel such mails at once, each on its own SMTP session (a 452 "busy" from the
     in-flight budget is retried after --retry seconds, as an MTA would, and counted).
Meanwhile a thread samples, every --interval seconds, the VmRSS of the serve process and of
every descendant (fork server, parse workers, resource tracker) and sums them: the "tree RSS".
Reported: the baseline before the send, the peak, growth = peak - baseline, growth / wire
size, which process the peak was in, and the kernel's VmHWM per process. The sum of RSS counts
pages shared by forked processes once per process: it overstates, never understates.
Each stored attachment's sha256 is checked against the database.

`--tree PATH` runs the mailgate found in another checkout (e.g. an older commit unpacked with
`git archive`), to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path

import ingest_bench
from ingest_bench import (
    ROOT,
    SUPPORT,
    VENV_PY,
    Client,
    Outgoing,
    Server,
    SmtpError,
    free_port,
    make_message,
    write_config,
)

MIB = 1024 * 1024


# -- the process tree's memory ----------------------------------------------------------------


def _status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _kib(status: dict[str, str], key: str) -> int:
    value = status.get(key, "0 kB").split()
    return int(value[0]) if value else 0


def tree_pids(root: int) -> dict[int, str]:
    """`root` and every live descendant (from each process's PPid in /proc), named by role."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = {root: "serve"}, [root]
    while frontier:
        parent = frontier.pop()
        for pid in [p for p, pp in parents.items() if pp == parent]:
            tree[pid] = _role(pid, tree[parent])
            frontier.append(pid)
    return tree


def _role(pid: int, parent_role: str) -> str:
    if parent_role == "forkserver":
        return "parse-worker"  # the only processes the fork server forks
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return "?"
    for needle, role in ((b"forkserver", "forkserver"), (b"resource_tracker", "tracker")):
        if needle in cmd:
            return role
    return "child"


@dataclass
class Sample:
    total: int  # KiB, the sum over the tree
    per_pid: dict[int, int]  # KiB of VmRSS
    names: dict[int, str]


def sample_tree(root: int) -> Sample:
    per_pid: dict[int, int] = {}
    names = tree_pids(root)
    for pid in names:
        status = _status(pid)
        if status:
            per_pid[pid] = _kib(status, "VmRSS")
    return Sample(sum(per_pid.values()), per_pid, names)


class TreeSampler(threading.Thread):
    """The highest tree RSS seen between start() and stop(), and where it was."""

    def __init__(self, root: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak = Sample(0, {}, {})
        self.by_pid: dict[int, tuple[str, int]] = {}  # the highest VmRSS of every process seen
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            current = sample_tree(self.root)
            self.samples += 1
            if current.total > self.peak.total:
                self.peak = current
            for pid, kib in current.per_pid.items():
                if kib > self.by_pid.get(pid, ("", 0))[1]:
                    self.by_pid[pid] = (current.names[pid], kib)
            self.done.wait(self.interval)

    def stop(self) -> Sample:
        self.done.set()
        self.join()
        return self.peak


# -- the mail ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BigMail:
    out: Outgoing
    attachment_sha256: str


def big_mail(tag: str, i: int, size: int) -> BigMail:
    """A customer mail with one `size`-byte attachment of random bytes, base64 in 76-column
    lines as mail clients write it; a sender no other message uses."""
    payload = os.urandom(size)
    sender = f"big-{tag}-{i}@bench.example.org"
    head = (
        f"From: Customer {i} <{sender}>\r\n"
        f"To: Support <{SUPPORT}>\r\n"
        f"Subject: Big attachment {tag} {i}\r\n"
        f"Date: {formatdate(localtime=False)}\r\n"
        f"Message-ID: <big-{tag}-{i}@bench.example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="BIG-BOUNDARY"\r\n'
        "\r\n"
        "--BIG-BOUNDARY\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "Bonjour, voici le fichier.\r\n"
        "--BIG-BOUNDARY\r\n"
        "Content-Type: application/octet-stream\r\n"
        'Content-Disposition: attachment; filename="dump.bin"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
    ).encode()
    body = base64.encodebytes(payload).replace(b"\n", b"\r\n")  # never starts a line with "."
    data = head + body + b"--BIG-BOUNDARY--\r\n"
    return BigMail(Outgoing(sender, data), hashlib.sha256(payload).hexdigest())


# -- sending ----------------------------------------------------------------------------------


@dataclass
class Sent:
    busy: int = 0  # 452 answers (the in-flight budget was full), each retried
    errors: list[str] = field(default_factory=list)


async def deliver(port: int, mail: BigMail, sent: Sent, retry: float) -> None:
    client = await Client.open("127.0.0.1", port)
    try:
        for _ in range(1000):
            try:
                await client.send(mail.out)
                return
            except SmtpError as exc:
                if exc.code != 452:
                    sent.errors.append(str(exc))
                    return
                sent.busy += 1
                await asyncio.sleep(retry)  # an MTA's retry, not synchronisation
        sent.errors.append("still 452 after 1000 tries")
    finally:
        await client.close()


def stored_digests(db_path: Path) -> set[str]:
    with sqlite3.connect(db_path) as db:
        return {row[0] for row in db.execute("SELECT sha256 FROM attachment")}


@dataclass
class Run:
    label: str
    mails: int
    wire: int
    seconds: float
    baseline: Sample
    peak: Sample
    by_pid: dict[int, tuple[str, int]]
    sent: Sent
    intact: int


def run(
    server: Server, db_path: Path, mails: list[BigMail], label: str, args: argparse.Namespace
) -> Run:
    baseline = sample_tree(server.pid)
    sampler = TreeSampler(server.pid, args.interval)
    sampler.start()
    sent = Sent()
    started = time.perf_counter()

    async def go() -> None:
        await asyncio.gather(*(deliver(server.port, m, sent, args.retry) for m in mails))

    asyncio.run(go())
    seconds = time.perf_counter() - started
    peak = sampler.stop()
    stored = stored_digests(db_path)
    return Run(
        label,
        len(mails),
        sum(len(m.out.data) for m in mails),
        seconds,
        baseline,
        peak,
        sampler.by_pid,
        sent,
        sum(m.attachment_sha256 in stored for m in mails),
    )


def show(r: Run, budget: int) -> None:
    growth = (r.peak.total - r.baseline.total) * 1024
    print(
        f"\n{r.label}: {r.mails} mail(s), {r.wire / 1e6:.1f} MB on the wire, stored in "
        f"{r.seconds:.1f} s, {r.sent.busy} x 452 retried, {len(r.sent.errors)} errors, "
        f"{r.intact}/{r.mails} attachments intact (sha256)"
    )
    for error in r.sent.errors[:3]:
        print(f"  error: {error}")
    print(
        f"  tree RSS: baseline {r.baseline.total / 1024:.0f} MiB, peak {r.peak.total / 1024:.0f} "
        f"MiB, growth {growth / MIB:.0f} MiB = {growth / r.wire:.2f} x the wire size"
        + (f" = {growth / budget:.2f} x max_inflight_bytes" if r.mails > 1 else "")
    )
    at_peak = ", ".join(
        f"{r.peak.names.get(pid, '?')} {kib / 1024:.0f}"
        for pid, kib in sorted(r.peak.per_pid.items(), key=lambda x: -x[1])
    )
    print(f"  at the peak (MiB): {at_peak}")
    serve = sum(k for pid, k in r.baseline.per_pid.items() if r.baseline.names[pid] == "serve")
    highest: dict[str, int] = {}
    for name, kib in r.by_pid.values():
        highest[name] = max(highest.get(name, 0), kib)
    workers = sum(1 for name, _ in r.by_pid.values() if name == "parse-worker")
    print(
        f"  highest per process: serve {highest.get('serve', 0) / 1024:.0f} MiB (baseline "
        f"{serve / 1024:.0f}), parse worker {highest.get('parse-worker', 0) / 1024:.0f} MiB "
        f"({workers} worker processes seen)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=25_000_000, help="attachment bytes")
    parser.add_argument("--parallel", type=int, default=10, help="mails sent at once (0: skip)")
    parser.add_argument("--interval", type=float, default=0.02, help="RSS sampling, seconds")
    parser.add_argument("--retry", type=float, default=0.2, help="seconds before a 452 retry")
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout to run mailgate from")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    python = str(VENV_PY if VENV_PY.exists() else Path(sys.executable))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    env["PYTHONPATH"] = str(args.tree)  # `-m mailgate` from that checkout, not the venv's
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-attachment-bench-"))
    port = free_port()
    db_path = tmp / "data" / "mailgate.db"
    config = tmp / "mailgate.toml"
    ingest_bench.REPO_CONFIG = args.tree / "config" / "mailgate.toml"  # that tree's schema
    write_config(
        config,
        {
            ("mailgate", "data_dir"): str(tmp / "data"),
            ("database", "url"): f"sqlite:///{db_path}",
            ("inbound", "smtp_listen"): f"127.0.0.1:{port}",
            ("inbound", "lmtp_listen"): "",
            ("addresses", "support"): SUPPORT,
            ("outbound", "transport"): f"maildir:{tmp / 'sent'}",
            ("portal", "listen"): "",
            ("metrics", "listen"): "",
        },
    )
    budget = 268435456
    for line in config.read_text().splitlines():
        if line.strip().startswith("max_inflight_bytes"):
            budget = int(line.split("=", 1)[1].split("#")[0].strip().strip('"'))
    tag = f"{os.getpid()}x"
    one = [big_mail(tag + "o", 0, args.size)]
    many = [big_mail(tag + "p", i, args.size) for i in range(args.parallel)]
    # -P: the checkout on PYTHONPATH, not the current folder, provides `mailgate`.
    serve = [python, "-P", "-m", "mailgate", "--config", str(config), "serve"]
    server = Server("mailgate", serve, port, tmp / "mailgate.log", env)
    server.start()
    try:

        async def warm() -> None:
            client = await Client.open("127.0.0.1", port)
            for i in range(5):
                await client.send(make_message(tag + "w", i, 3000))
            await client.close()

        asyncio.run(warm())
        print(
            f"mailgate from {args.tree}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
            f"attachment {args.size / 1e6:.0f} MB, max_inflight_bytes {budget / MIB:.0f} MiB, "
            f"RSS sampled every {args.interval * 1000:.0f} ms"
        )
        show(run(server, db_path, one, "one", args), budget)
        if many:
            show(run(server, db_path, many, f"{len(many)} in parallel", args), budget)
    finally:
        code = server.stop()
        print(f"\nmailgate serve exit code after SIGTERM: {code}")
        if args.keep:
            print(f"kept {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
