"""CPU the single writer spends per first-contact mail (time.process_time, one process).

    .venv/bin/python bench/writer_cpu_bench.py [--url URL] [-n 500] [--rounds 3] [--batch 32]
                                               [--profile FILE]

What `serve`'s group-commit thread runs for a mail from a stranger (new account, ticket, first
message, confirmation and activation outbox rows, receipt): Ingestor._one for each mail, each
in its SAVEPOINT, `--batch` mails a transaction, and the commit. Everything `ingest` does in
the caller's thread before that (parse, digests, sender checks, screening) is done first and
left out of the time. The mails are ingest_bench's 5 KB plain mail, each from a new address.
Logging goes through the real formatter to /dev/null. The default URL is a fresh SQLite file;
a PostgreSQL URL gets a fresh database, dropped afterwards. Reported: µs of CPU per job, best
of `--rounds` rounds, with and without the commits."""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest_bench import make_message, write_config  # bench/ is on sys.path as a script

from mailgate import logs
from mailgate.app import build
from mailgate.clock import FixedClock
from mailgate.config import load
from mailgate.core.language_detect import parser_for
from mailgate.services.ingest import (
    INLINE_RAW_BYTES,
    Envelope,
    Ingestor,
    body_digest,
    delivery_order,
    strip_internal_headers,
)
from mailgate.services.ingest_steps import screen
from mailgate.store.db import Database

SUPPORT = "support@example.com"
Job = Callable[[Any], object]


class NoTransport:
    """The App wants a transport; nothing is sent here."""

    def send(self, envelope_from: str, to_addr: str, raw: bytes) -> None:
        raise AssertionError("the writer bench sends nothing")

    def check(self) -> str:
        return "none"


@contextmanager
def database(url: str | None, folder: Path) -> Iterator[str]:
    """The URL to use: a new SQLite file, or a new database on the PostgreSQL server."""
    if url is None:
        yield f"sqlite:///{folder / 'mailgate.db'}"
        return
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(url)
    name = f"mgbench_{uuid.uuid4().hex[:12]}"
    dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def prepared_jobs(ingestor: Ingestor, tag: str, count: int) -> list[Job]:
    """Each mail's writer job, as Ingestor.ingest builds it (the caller's work done here)."""
    jobs: list[Job] = []
    for i in range(count):
        out = make_message(tag, i, 5000)
        raw = out.data.replace(b"\r\n..", b"\r\n.")  # SMTP dot-stuffing undone, as received
        envelope = Envelope(
            mail_from=out.sender, recipients=(SUPPORT,), peer="127.0.0.1:25", helo="bench"
        )
        jobs.append(job_for(ingestor, raw, envelope))
    return jobs


def job_for(ingestor: Ingestor, raw: bytes, envelope: Envelope) -> Job:
    if hasattr(ingestor, "prepare"):  # Ingestor.prepare, then what Ingestor.submit queues
        p = ingestor.prepare(raw, envelope)
        assert p.crash is None, p.crash
        return lambda session: [ingestor._one(session, p, r) for r in p.recipients]
    # Before Ingestor.prepare: the same steps, as Ingestor.ingest took them.
    recipients = delivery_order(
        [ingestor.check_recipient(r) for r in envelope.recipients], ingestor.reply_key
    )
    assert len(raw) <= INLINE_RAW_BYTES
    sha, body_sha = hashlib.sha256(raw).hexdigest(), body_digest(raw)
    mail = strip_internal_headers(ingestor.parse(raw))
    trust = ingestor.sender_trust(raw, mail, envelope)
    found = screen(raw, mail, envelope, ingestor.hostname, ingestor.verification_rules)
    one: Any = ingestor._one
    return lambda session: [
        one(session, raw, sha, body_sha, mail, "", r, envelope, trust, found) for r in recipients
    ]


def run_round(db: Database, jobs: list[Job], batch: int) -> tuple[float, float]:
    """(CPU seconds in the jobs and their savepoints, CPU seconds in all, commits included),
    the jobs run as GroupCommitter._commit runs a batch."""
    in_jobs = 0.0
    start = time.process_time()
    for at in range(0, len(jobs), batch):
        with db.write() as session:
            t0 = time.process_time()
            for job in jobs[at : at + batch]:
                with session.begin_nested():
                    result = job(session)
                    assert result[0].outcome == "ticketed", result  # type: ignore[index]
            in_jobs += time.process_time() - t0
    return in_jobs, time.process_time() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="a PostgreSQL URL (default: a new SQLite file)")
    ap.add_argument("-n", type=int, default=500, help="mails a round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32, help="jobs a transaction")
    ap.add_argument("--profile", help="cProfile the last round into this file")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, database(args.url, Path(tmp)) as url:
        config_path = Path(tmp) / "mailgate.toml"
        write_config(
            config_path,
            {
                ("mailgate", "data_dir"): str(Path(tmp) / "data"),
                ("database", "url"): url,
                ("addresses", "support"): SUPPORT,
                ("outbound", "first_contact_per_hour"): 1_000_000,  # as ingest_bench
                ("security", "verify_sender"): "off",  # checked before the writer anyway
                ("portal", "listen"): "",
                ("metrics", "listen"): "",
            },
        )
        logs.setup()
        devnull = open(os.devnull, "w")  # open for the whole run
        for handler in (*logging.getLogger("mailgate").handlers, *logging.getLogger().handlers):
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(devnull)
        app = build(load(config_path), clock=FixedClock(datetime.now(UTC)), transport=NoTransport())
        app.db.upgrade()
        # In this process, as tests do, not in serve's parse workers.
        app.ingestor.parse = parser_for(app.conversations.mailer.renderer.locales)
        run_round(app.db, prepared_jobs(app.ingestor, "warm", 100), args.batch)
        best_jobs = best_all = float("inf")
        for r in range(args.rounds):
            jobs = prepared_jobs(app.ingestor, f"r{r}", args.n)
            profiler = cProfile.Profile() if args.profile and r == args.rounds - 1 else None
            if profiler:
                profiler.enable()
            in_jobs, in_all = run_round(app.db, jobs, args.batch)
            if profiler:
                profiler.disable()
                profiler.dump_stats(args.profile)
            best_jobs, best_all = min(best_jobs, in_jobs), min(best_all, in_all)
            print(
                f"round {r}: {in_jobs / args.n * 1e6:7.1f} µs/job, "
                f"{in_all / args.n * 1e6:7.1f} µs/job with commits",
                file=sys.stderr,
            )
        kind = "postgresql" if args.url else "sqlite"
        print(
            f"{kind}: first-contact job {best_jobs / args.n * 1e6:.1f} µs CPU, "
            f"with commits (batch {args.batch}) {best_all / args.n * 1e6:.1f} µs "
            f"(best of {args.rounds} x {args.n})"
        )
        app.db.dispose()
        devnull.close()


if __name__ == "__main__":
    main()
