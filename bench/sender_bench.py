"""Sender benchmark: the outbound sender alone, draining a full outbox.

`.venv/bin/python bench/sender_bench.py` (see --help; `--quick` for 1,000 mails).

For each transport (`--transports smtp,maildir`):
  1. a fresh SQLite database (WAL, synchronous=FULL: mailgate/store/db.py) gets N queued mails
     (default 5,000) through the real `Mailer.queue` (an `activation` mail, each to its own
     address, as a first contact gets), in chunks of 500 per transaction; not measured;
  2. the sender (`Sender.run_once()`, in this process: the code `serve` runs in its sender
     process) drains them: leases a batch, sends it, records the batch; measured: wall time,
     and CPU of this process (every thread) per mail, and how much of it went to assembling
     (render + MIME) and to the transport (in `serve` the claims and records are made by
     serve's writer, not by the sender's process: the rest here);
  3. checks: every row `sent`, every Message-ID exactly once at the destination.

SMTP goes to a local sink in another process: Postfix's `smtp-sink` when installed, else
bench/sink.py (an asyncio sink; `--sink python` forces it). Its CPU per mail is printed too.
The maildir transport writes into a folder of the temporary directory (one fsync per file, one
per batch for new/).

Target (issue 11): >= 1,000 mails/s to the SMTP sink. A line `PASS`/`FAIL` per transport; exit
1 when a mail is missing or doubled, or a row is not `sent`.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # bench/ is not a package
from sink import Sink  # noqa: E402

from mailgate import config as config_mod  # noqa: E402
from mailgate import logs  # noqa: E402
from mailgate.app import App, build  # noqa: E402

GOAL = 1000.0  # mails/s to the SMTP sink
SUPPORT = "support@example.com"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(folder: Path, transport: str, connections: int) -> Path:
    path = folder / "mailgate.toml"
    path.write_text(
        f"""
[mailgate]
hostname = "mg.bench"
data_dir = "{folder / "data"}"
default_locale = "en"

[database]
url = "sqlite:///{folder / "mailgate.db"}"

[inbound]
smtp_listen = ""
lmtp_listen = ""

[addresses]
support = "{SUPPORT}"

[outbound]
transport = "{transport}"
connections = {connections}
first_contact_per_hour = 1000000

[portal]
listen = ""

[security]
verify_sender = "off"
"""
    )
    return path


def log_to(path: Path) -> None:
    """mailgate's log lines, as `serve` writes them (one per mail sent), into a file."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logs.KeyValueFormatter())
    logger = logging.getLogger("mailgate")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def last_error(path: Path) -> str:
    lines = [line for line in path.read_text().splitlines() if "level=warning" in line]
    return lines[-1] if lines else ""


def fill(app: App, count: int, tag: str = "") -> None:
    """`count` activation mails queued through mailgate's own Mailer, 500 a transaction."""
    done = 0
    while done < count:
        with app.db.write() as session:
            for i in range(done, min(count, done + 500)):
                address = f"customer{tag}{i}@bench.example"
                app.mailer.queue(
                    session,
                    kind="activation",
                    to_addr=address,
                    locale="en",
                    context={
                        "customer_name": "",
                        "email": address,
                        "activation_url": app.mailer.url(f"/activate/bench-token{tag}-{i}"),
                    },
                )
        done = min(count, done + 500)


def statuses(app: App) -> dict[str, int]:
    with app.db.read() as session:
        rows = session.connection().exec_driver_sql(
            "SELECT status, count(*) FROM outbox GROUP BY status"
        )
        return {str(s): int(n) for s, n in rows}


def maildir_ids(folder: Path) -> list[str]:
    ids = []
    for path in (folder / "new").iterdir():
        with path.open("rb") as fh:
            for line in fh:
                if line.lower().startswith(b"message-id:"):
                    ids.append(line[11:].strip().decode())
                    break
    return ids


def time_phases(app: App) -> dict[str, float]:
    """The sender's CPU (this process's: every thread) in assembling and in the transport's
    `send_many` (its threads; the sender's own waits meanwhile), added up as it runs. The
    sender does one at a time, so neither counts the other's."""
    spent = {"assemble": 0.0, "transport": 0.0}
    assemble, send_many = app.sender.assemble, app.sender.transport.send_many  # type: ignore[attr-defined]

    def timed_assemble(row: Any) -> bytes:
        start = time.process_time()
        try:
            return assemble(row)
        finally:
            spent["assemble"] += time.process_time() - start

    def timed_send_many(*args: Any) -> Any:
        start = time.process_time()
        try:
            return send_many(*args)
        finally:
            spent["transport"] += time.process_time() - start

    app.sender.assemble = timed_assemble
    app.sender.transport.send_many = timed_send_many  # type: ignore[attr-defined]
    return spent


def run_one(kind: str, args: argparse.Namespace) -> bool:
    with tempfile.TemporaryDirectory(prefix="sender-bench-") as tmp:
        folder = Path(tmp)
        os.chmod(folder, 0o755)  # smtp-sink run as root drops to nobody: it must reach its dump
        sink: Sink | None = None
        if kind == "smtp":
            port = free_port()
            (folder / "sink").mkdir()
            sink = Sink(folder / "sink", port, sys.executable, prefer=args.sink)
            sink.start()
            transport = f"smtp://127.0.0.1:{port}"
        else:
            transport = f"maildir:{folder / 'sent'}"
        cfg = config_mod.load(write_config(folder, transport, args.connections))
        log_to(folder / "mailgate.log")
        app = build(cfg)
        app.sender.batch_size = args.batch
        try:
            app.db.upgrade()
            fill(app, args.mails)
            spent = time_phases(app)
            sink_cpu = sink.cpu_seconds() if sink else 0.0
            wall, cpu = time.perf_counter(), time.process_time()
            attempted = app.sender.run_once()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if sink is not None:
                sink_cpu = sink.cpu_seconds() - sink_cpu
                deadline = time.monotonic() + 30
                while sink.tail.poll() or sink.tail.mails < args.mails:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                ids = list(sink.tail.message_ids.elements())
            else:
                ids = maildir_ids(folder / "sent")
            counts = statuses(app)
        finally:
            app.sender.close()
            app.db.dispose()
            if sink is not None:
                sink.stop()
        rate = attempted / wall if wall else 0.0
        where = sink.kind if sink else f"maildir {folder / 'sent'}"
        print(
            f"{kind:8} {args.mails} mails, {args.connections} connection(s), batch {args.batch}"
            f" -> {where}"
        )
        line = f"  {rate:8.0f} mails/s   sender CPU {1000 * cpu / max(1, attempted):.3f} ms/mail"
        if sink is not None:
            line += f"   sink CPU {1000 * sink_cpu / max(1, attempted):.3f} ms/mail"
        print(line + f"   wall {wall:.2f} s")
        per = {phase: f"{1000 * cost / max(1, attempted):.3f}" for phase, cost in spent.items()}
        rest = 1000 * (cpu - sum(spent.values())) / max(1, attempted)
        print(
            f"  of which assemble {per['assemble']} ms, transport {per['transport']} ms,"
            f" the rest (claim, record, logs) {rest:.3f} ms per mail"
        )
        ok = True
        if counts != {"sent": args.mails}:
            print(f"FAIL {kind}: outbox statuses {counts}; {last_error(folder / 'mailgate.log')}")
            ok = False
        if len(ids) != args.mails or len(set(ids)) != args.mails:
            print(
                f"FAIL {kind}: {len(ids)} mails at the destination, {len(set(ids))} distinct,"
                f" {args.mails} expected"
            )
            ok = False
        if ok:
            verdict = "PASS" if kind != "smtp" or rate >= GOAL else "FAIL"
            goal = f" (target >= {GOAL:.0f})" if kind == "smtp" else ""
            print(f"{verdict} sender {kind}: {rate:.0f} mails/s{goal}")
            ok = verdict == "PASS"
        return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="1,000 mails")
    parser.add_argument("--connections", type=int, default=2, help="[outbound] connections")
    parser.add_argument("--batch", type=int, default=100, help="rows leased per batch")
    parser.add_argument("--transports", default="smtp,maildir")
    parser.add_argument("--sink", choices=("auto", "postfix", "python"), default="auto")
    args = parser.parse_args()
    if args.quick:
        args.mails = min(args.mails, 1000)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} cores")
    results = [run_one(kind.strip(), args) for kind in args.transports.split(",") if kind.strip()]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
