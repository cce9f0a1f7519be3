"""Big attachments: how far one (then ten at once) lifts the memory of `mailgate serve`.

`.venv/bin/python bench/attachment_memory.py --help`; figures: bench/README.md; the bound:
docs/hygiene.md ("Memory for DATA in flight").

Starts a real `mailgate serve` (SQLite, SMTP on a free port, maildir outbound, portal off) as
a subprocess, the same way bench/ingest_bench.py does, warms it up with a few small mails and
waits until the tree has settled: the warm mails' confirmations and activations are in the
maildir (so the sender's child process has finished starting: it imports the application,
~100 MiB, for seconds after serve listens) and no process's RSS moved by more than 1 MiB for
--settle seconds. Without that wait the child processes' start-up was counted as growth caused
by the mail (70 of 145 MiB on a loaded machine). Then:
  1. sends one mail carrying a --size attachment of random bytes (25 MB: ~34 MB on the wire,
     base64), and
  2. --parallel such mails at once, each on its own SMTP session (a 452 "busy" from the
     in-flight budget is retried after --retry seconds, as an MTA would, and counted).
Meanwhile a thread samples, every --interval seconds, the VmRSS of the serve process and of
every descendant (fork server, parse workers, resource tracker) and sums them: the "tree RSS".
Reported: the baseline before the send (per process), the peak, growth = peak - baseline,
growth / wire size, each process's share of the growth at the peak (a process born since the
baseline counts whole), and each process's highest RSS. The sum of RSS counts pages shared by
forked processes once per process: it overstates, never understates. Each stored attachment's
sha256 is checked against the database.

Targets (issue 11), one line PASS/FAIL each, exit 1 on a FAIL or a lost attachment: one mail,
growth <= 3 x its wire size; in parallel, growth <= the bound docs/hygiene.md documents,
max_inflight_bytes + 2 x max_message_bytes x parse_workers (read from the config used).

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
WARM = 5  # small first-contact mails before the measure


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
    for needle, role in (
        (b"forkserver", "forkserver"),
        (b"resource_tracker", "tracker"),
        (b"smtp.front", "smtp-front"),
        (b"sender_process", "sender"),
    ):
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


def settle(root: int, maildir: Path, mails: int, quiet: float, timeout: float) -> Sample:
    """The tree once the sender has sent `mails` mails to `maildir` and no process's RSS moved
    by more than 1 MiB (nor any process came or went) for `quiet` seconds; at `timeout`, the
    last sample, with a warning."""
    deadline = time.monotonic() + timeout
    while len(list((maildir / "new").glob("*"))) < mails:
        if time.monotonic() > deadline:
            print(f"warning: {mails} warm-up mails not sent after {timeout:g} s")
            break
        time.sleep(0.1)
    steady = sample_tree(root)
    since = time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        time.sleep(0.1)
        now = sample_tree(root)
        moved = now.per_pid.keys() != steady.per_pid.keys() or any(
            abs(kib - steady.per_pid[pid]) > 1024 for pid, kib in now.per_pid.items()
        )
        if moved:
            steady, since = now, time.monotonic()
    if time.monotonic() >= deadline:
        print(f"warning: the tree's RSS still moving after {timeout:g} s")
    return sample_tree(root)


# -- the mail ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BigMail:
    out: Outgoing
    attachment_sha256: str


def log_text(size: int, seed: int) -> bytes:
    """About `size` bytes of a server log: the text attachment a customer sends as it is."""
    lines, total, n = [], 0, 0
    while total < size:
        line = b"2026-12-02 14:%02d:%02d INFO req=%d user=%d served in %d ms\r\n" % (
            n // 60 % 60,
            n % 60,
            n,
            (n * 7919 + seed) % 100_003,
            (n * 31 + seed) % 997,
        )
        lines.append(line)
        total, n = total + len(line), n + 1
    return b"".join(lines)


def big_mail(tag: str, i: int, size: int, kind: str = "binary") -> BigMail:
    """A customer mail with one `size`-byte attachment: random bytes, base64 in 76-column
    lines as mail clients write it ("binary"), or a log file as text/plain sent 8bit
    ("text"); a sender no other message uses."""
    if kind == "text":
        payload = log_text(size, i)
        part = (
            'Content-Type: text/plain; charset=utf-8; name="app.log"\r\n'
            'Content-Disposition: attachment; filename="app.log"\r\n'
            "Content-Transfer-Encoding: 8bit\r\n"
        )
        body = payload + b"\r\n"  # the parser strips the line end before the boundary
    else:
        payload = os.urandom(size)
        part = (
            "Content-Type: application/octet-stream\r\n"
            'Content-Disposition: attachment; filename="dump.bin"\r\n'
            "Content-Transfer-Encoding: base64\r\n"
        )
        body = base64.encodebytes(payload).replace(b"\n", b"\r\n")  # never starts with "."
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
        "--BIG-BOUNDARY\r\n" + part + "\r\n"
    ).encode()
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
    server: Server,
    db_path: Path,
    mails: list[BigMail],
    label: str,
    args: argparse.Namespace,
    baseline: Sample,
) -> Run:
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


def _mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


def show(r: Run, budget: int, bound: int) -> bool:
    """Print the run's figures and its PASS/FAIL line; True if it passed."""
    growth = (r.peak.total - r.baseline.total) * 1024
    print(
        f"\n{r.label}: {r.mails} mail(s), {r.wire / 1e6:.1f} MB on the wire, stored in "
        f"{r.seconds:.1f} s, {r.sent.busy} x 452 retried, {len(r.sent.errors)} errors, "
        f"{r.intact}/{r.mails} attachments intact (sha256)"
    )
    for error in r.sent.errors[:3]:
        print(f"  error: {error}")
    print(
        f"  tree RSS: baseline {_mib(r.baseline.total)} MiB, peak {_mib(r.peak.total)} "
        f"MiB, growth {growth / MIB:.0f} MiB = {growth / r.wire:.2f} x the wire size"
        + (f" = {growth / budget:.2f} x max_inflight_bytes" if r.mails > 1 else "")
    )
    print(
        "  baseline (MiB): "
        + ", ".join(
            f"{r.baseline.names.get(pid, '?')} {_mib(kib)}"
            for pid, kib in sorted(r.baseline.per_pid.items(), key=lambda x: -x[1])
        )
    )
    # Each process's share of the growth: a process born since the baseline counts whole, one
    # gone since counts minus its baseline.
    pids = sorted(r.peak.per_pid.keys() | r.baseline.per_pid.keys())
    shares = {pid: r.peak.per_pid.get(pid, 0) - r.baseline.per_pid.get(pid, 0) for pid in pids}
    names = {**r.baseline.names, **r.peak.names}
    print(
        "  at the peak (MiB, + growth since the baseline): "
        + ", ".join(
            f"{names.get(pid, '?')}{'' if pid in r.baseline.per_pid else ' (new)'}"
            f"{' (gone)' if pid not in r.peak.per_pid else ''} "
            f"{_mib(r.peak.per_pid.get(pid, 0))} ({shares[pid] / 1024:+.0f})"
            for pid in sorted(pids, key=lambda p: -abs(shares[p]))
            if abs(shares[pid]) >= 512 or pid in r.peak.per_pid
        )
    )
    serve = sum(k for pid, k in r.baseline.per_pid.items() if r.baseline.names[pid] == "serve")
    highest: dict[str, int] = {}
    for name, kib in r.by_pid.values():
        highest[name] = max(highest.get(name, 0), kib)
    workers = sum(1 for name, _ in r.by_pid.values() if name == "parse-worker")
    print(
        f"  highest per process: serve {_mib(highest.get('serve', 0))} MiB (baseline "
        f"{_mib(serve)}), parse worker {_mib(highest.get('parse-worker', 0))} MiB "
        f"({workers} worker processes seen), SMTP front {_mib(highest.get('smtp-front', 0))} MiB, "
        f"sender {_mib(highest.get('sender', 0))} MiB"
    )
    if r.mails == 1:
        ok = growth <= 3 * r.wire
        target = f"<= 3 x the wire size ({3 * r.wire / MIB:.0f} MiB)"
    else:
        ok = growth <= bound
        target = (
            f"<= max_inflight_bytes + 2 x max_message_bytes x parse_workers ({bound / MIB:.0f} MiB)"
        )
    ok = ok and r.intact == r.mails and not r.sent.errors
    print(
        f"{'PASS' if ok else 'FAIL'} attachment memory, {r.label}: growth {growth / MIB:.0f} MiB "
        f"{target}; {r.intact}/{r.mails} attachments intact"
    )
    return ok


def _setting(config: Path, key: str, default: int) -> int:
    for line in config.read_text().splitlines():
        if line.strip().startswith(key) and line.split("=", 1)[0].strip() == key:
            return int(line.split("=", 1)[1].split("#")[0].strip().strip('"'))
    return default


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=25_000_000, help="attachment bytes")
    parser.add_argument(
        "--attachment",
        choices=("binary", "text"),
        default="binary",
        help="binary: random bytes, base64 (the target's case); text: a log file sent 8bit",
    )
    parser.add_argument("--parallel", type=int, default=10, help="mails sent at once (0: skip)")
    parser.add_argument("--interval", type=float, default=0.02, help="RSS sampling, seconds")
    parser.add_argument("--retry", type=float, default=0.2, help="seconds before a 452 retry")
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout to run mailgate from")
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds of steady RSS before the baseline"
    )
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
    budget = _setting(config, "max_inflight_bytes", 268435456)
    bound = budget + 2 * _setting(config, "max_message_bytes", 41943040) * _setting(
        config, "parse_workers", 2
    )
    tag = f"{os.getpid()}x"
    one = [big_mail(tag + "o", 0, args.size, args.attachment)]
    many = [big_mail(tag + "p", i, args.size, args.attachment) for i in range(args.parallel)]
    # -P: the checkout on PYTHONPATH, not the current folder, provides `mailgate`.
    serve = [python, "-P", "-m", "mailgate", "--config", str(config), "serve"]
    server = Server("mailgate", serve, port, tmp / "mailgate.log", env)
    server.start()
    try:

        async def warm() -> None:
            client = await Client.open("127.0.0.1", port)
            for i in range(WARM):
                await client.send(make_message(tag + "w", i, 3000))
            await client.close()

        asyncio.run(warm())
        # Each warm mail is a first contact: a confirmation and an activation.
        baseline = settle(server.pid, tmp / "sent", 2 * WARM, args.settle, 60.0)
        print(
            f"mailgate from {args.tree}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
            f"{args.attachment} attachment {args.size / 1e6:.0f} MB, "
            f"max_inflight_bytes {budget / MIB:.0f} MiB, "
            f"RSS sampled every {args.interval * 1000:.0f} ms"
        )
        ok = show(run(server, db_path, one, "one", args, baseline), budget, bound)
        if many:
            baseline = settle(server.pid, tmp / "sent", 2 * WARM + 2, args.settle, 60.0)
            label = f"{len(many)} in parallel"
            ok = show(run(server, db_path, many, label, args, baseline), budget, bound) and ok
    finally:
        code = server.stop()
        print(f"\nmailgate serve exit code after SIGTERM: {code}")
        if args.keep:
            print(f"kept {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
