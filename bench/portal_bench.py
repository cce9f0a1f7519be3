"""Portal read benchmark: "My activities" for a customer with 10,000 tickets, the page of a
500-message ticket, and the agents' queue over 100,000 tickets.

`.venv/bin/python bench/portal_bench.py --help`. See bench/README.md.

Builds a temporary database (SQLite with WAL and synchronous=FULL, as `serve` opens it, or a
fresh database on the PostgreSQL server named by --database-url), migrates it with
`mailgate db upgrade`, and inserts rows directly (fast): the customer's tickets (some deleted,
every status), other customers' tickets beside them, and one long ticket whose messages mix
plain text, quoted HTML, internal notes and attachments. Then it starts a real
`mailgate serve` as a subprocess (portal on a free port, SMTP off), signs in through /login
like a browser, and times sequential GETs from this process:

  list, first page    /tickets
  list, deep page     a page half-way down, reached by following the "next" links
  list, filtered      /tickets?status=new (a rare status)
  ticket page         /tickets/ID of the long ticket

plus GET /healthz as the floor of the HTTP stack on the same connection. It also walks every
page of the list through its "next" links and checks that each of the customer's visible
tickets appears exactly once, in order (newest exchange first).

The agents' queue (issue 12): more tickets from other customers are added until there are
--queue tickets in all (default 100,000), each with its opening message (one in a thousand
has the word "zeppelin"), a third of them with an agent's reply, assigned to one of five
agents or to nobody, in a category or none. An agent signs in and times:

  queue, first page      /tickets (every ticket, latest exchange first)
  queue, deep page       40 "next" links down
  queue, mine + open     /tickets?assignee=mine&status=open
  queue, category        /tickets?category=Returns
  queue, search #id      /tickets?q=%23ID
  queue, search address  /tickets?q=ADDRESS of a requester
  queue, search word     /tickets?q=zeppelin (a word in few messages: a scan of them all)
  queue, common word     /tickets?q=export (in nearly every ticket: capped at the newest)
  agent ticket page      /tickets/ID of the long ticket, notes included

and checks that the first page lists the 25 tickets of latest exchange, in order.

Targets: p99 < 50 ms for each customer page (issue 11), < 100 ms for each agent page
(issue 12). A line `PASS`/`FAIL` per page; exit 1 when the
walk finds a ticket missing, doubled or out of order, or a request answers other than 200.
`--quick`: 50 timed requests per page instead of 200.
"""

from __future__ import annotations

import argparse
import html
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from ingest_bench import ROOT, VENV_PY, free_port, is_listening, write_config

GOAL_P99_MS = 50.0
AGENT_GOAL_P99_MS = 100.0
PASSWORD = "bench password 1234"
CUSTOMER = "many.tickets@bench.example"
AGENT = "agent@bench.example"
AGENTS = 5
CATEGORIES = (None, None, "Billing", "Shipping", "Returns")
RARE = "zeppelin"
QUEUE_ROW = re.compile(r'<tr data-ticket="(\d+)">')
STATUSES = ("open", "pending", "solved", "closed")  # "new" is kept rare: a filter on it
NEXT = re.compile(
    r'<a\b[^>]*\brel="next"[^>]*\bhref="([^"]+)"|<a\b[^>]*\bhref="([^"]+)"[^>]*\brel="next"'
)
TICKET_LINK = re.compile(r'<a href="[^"]*/tickets/(\d+)">')

LOREM = (
    "Bonjour, the export still fails after the update. We tried again this morning with the "
    "same file and the same settings; the error message is attached. Merci d'avance. "
).split()


# -- data ------------------------------------------------------------------------------------


@dataclass
class Built:
    customer_id: int
    visible: list[int]  # the customer's tickets as the list must show them, in order
    new_count: int
    long_ticket: int


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(LOREM, k=n))


def _html_body(rng: random.Random, text: str, previous: str) -> str:
    """Mail-client HTML: styled paragraphs and the previous message quoted below."""
    quoted = html.escape(previous[:3000])
    return (
        '<html><head><style>p{margin:0}</style></head><body><div dir="ltr">'
        + "".join(
            f'<p style="font-family:Arial">{html.escape(line)}</p>' for line in text.split("\n")
        )
        + '<div class="gmail_quote"><div class="gmail_attr">Le lun. 3 mars, Support a écrit :'
        + '</div><blockquote class="gmail_quote" style="margin:0 0 0 .8ex;border-left:1px '
        + f'solid #ccc;padding-left:1ex"><p>{quoted}</p>'
        + f'<img src="https://tracker.example/{rng.getrandbits(32):x}.png" alt="logo">'
        + "</blockquote></div></div></body></html>"
    )


def build(url: str, tickets: int, others: int, messages: int, seed: int = 7) -> Built:
    """Insert the rows with SQLAlchemy Core (executemany), in one transaction."""
    from argon2 import PasswordHasher
    from sqlalchemy import create_engine, insert, select

    from mailgate.store.models import Account, Attachment, Message, Ticket

    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    engine = create_engine(url)
    acc, tic, msg, att = (
        Account.__table__,  # type: ignore[attr-defined]
        Ticket.__table__,  # type: ignore[attr-defined]
        Message.__table__,  # type: ignore[attr-defined]
        Attachment.__table__,  # type: ignore[attr-defined]
    )
    n_others = max(1, others // 10)
    with engine.begin() as conn:
        accounts = [
            {
                "email": CUSTOMER,
                "name": "Many Tickets",
                "role": "customer",
                "password_hash": PasswordHasher().hash(PASSWORD),
                "security_stamp": "s",
                "locale": "en",
                "created_at": now - timedelta(days=1200),
                "activated_at": now - timedelta(days=1200),
            },
            {
                "email": AGENT,
                "name": "Alice Agent",
                "role": "agent",
                "password_hash": PasswordHasher().hash(PASSWORD),
                "security_stamp": "s",
                "locale": "en",
                "created_at": now - timedelta(days=1200),
                "activated_at": None,
            },
        ] + [
            {
                "email": f"other{i}@bench.example",
                "name": f"Other {i}",
                "role": "customer",
                "password_hash": None,
                "security_stamp": "s",
                "locale": "fr",
                "created_at": now - timedelta(days=1200),
                "activated_at": None,
            }
            for i in range(n_others)
        ]
        conn.execute(insert(acc), accounts)
        ids = dict(conn.execute(select(acc.c.email, acc.c.id)).all())
        me, agent = ids[CUSTOMER], ids[AGENT]
        other_ids = [ids[f"other{i}@bench.example"] for i in range(n_others)]

        def ticket_row(requester: int, i: int) -> dict[str, Any]:
            created = now - timedelta(seconds=rng.randrange(3 * 365 * 86400))
            # Ties on purpose: many tickets share a last exchange to the second.
            last = created + timedelta(seconds=rng.choice((0, 0, 60, rng.randrange(86400))))
            status = "new" if i % 500 == 0 else rng.choice(STATUSES)
            deleted = created if i % 97 == 0 else None
            return {
                "subject": f"Request {i}: {_words(rng, 5)}",
                "status": status,
                "requester_id": requester,
                "category": None,
                "locale": "en",
                "channel": "smtp",
                "created_at": created,
                "updated_at": last,
                "last_exchange_at": min(last, now),
                "auto_resolve_paused": False,
                "customer_deleted_at": deleted,
            }

        mine = [ticket_row(me, i) for i in range(tickets)]
        theirs = [ticket_row(rng.choice(other_ids), i + tickets) for i in range(others)]
        rows = mine + theirs
        rng.shuffle(rows)  # ids in no particular relation to the last exchange
        conn.execute(insert(tic), rows)
        long_started = now - timedelta(days=200)
        long_row = ticket_row(me, 1)
        long_row.update(
            subject="A very long conversation",
            status="open",
            customer_deleted_at=None,
            created_at=long_started,
            last_exchange_at=now - timedelta(days=1),
        )
        conn.execute(insert(tic), [long_row])
        listed = conn.execute(
            select(tic.c.id, tic.c.last_exchange_at, tic.c.status, tic.c.customer_deleted_at).where(
                tic.c.requester_id == me
            )
        ).all()
        long_ticket = max(r[0] for r in listed)
        # One opening message per ticket, as the list's neighbours in the message table.
        conn.execute(
            insert(msg),
            [
                {
                    "ticket_id": tid,
                    "author_id": me,
                    "role": "customer",
                    "internal": False,
                    "automatic": False,
                    "subject": "opening",
                    "body_text": _words(rng, 40),
                    "full_text": "",
                    "message_id": f"<open-{tid}@bench.example>",
                    "in_reply_to": "",
                    "references": "",
                    "matched_by": "new",
                    "channel": "smtp",
                    "sender_auth": "",
                    "unverified_sender": False,
                    "created_at": now - timedelta(days=300),
                }
                for tid, *_ in listed[:2000]
            ],
        )
        thread, previous = [], ""
        for i in range(messages):
            role = "customer" if i % 2 == 0 else "agent"
            internal = role == "agent" and i % 10 == 3
            text = "\n".join(_words(rng, 25) for _ in range(rng.randrange(2, 8)))
            body_html = _html_body(rng, text, previous) if role == "customer" else None
            thread.append(
                {
                    "ticket_id": long_ticket,
                    "author_id": me if role == "customer" else agent,
                    "role": "system" if i % 50 == 49 else role,
                    "internal": internal,
                    "automatic": False,
                    "subject": "Re: A very long conversation",
                    "body_text": text,
                    "full_text": text + "\n\n> " + previous[:3000].replace("\n", "\n> "),
                    "body_html": body_html,
                    "message_id": f"<long-{i}-{uuid.uuid4().hex}@bench.example>",
                    "in_reply_to": "",
                    "references": "",
                    "matched_by": "token",
                    "channel": "smtp",
                    "sender_auth": "pass",
                    "unverified_sender": False,
                    "created_at": long_started + timedelta(hours=9 * i),
                }
            )
            previous = text
        conn.execute(insert(msg), thread)
        message_ids = (
            conn.execute(select(msg.c.id).where(msg.c.ticket_id == long_ticket).order_by(msg.c.id))
            .scalars()
            .all()
        )
        conn.execute(
            insert(att),
            [
                {
                    "message_pk": mid,
                    "filename": f"screenshot-{n}.png",
                    "content_type": "image/png",
                    "size": 20000 + n,
                    "sha256": f"{n:064x}",
                }
                for n, mid in enumerate(message_ids)
                if n % 7 == 0
            ],
        )
    engine.dispose()
    visible = [r for r in listed if r[3] is None]
    visible.sort(key=lambda r: (_as_dt(r[1]), r[0]), reverse=True)
    return Built(
        customer_id=me,
        visible=[r[0] for r in visible],
        new_count=sum(1 for r in visible if r[2] == "new"),
        long_ticket=long_ticket,
    )


@dataclass
class QueueBuilt:
    total: int
    first_page: list[int]  # the queue's first page as it must be
    searched_id: int
    searched_address: str
    rare_tickets: int


def build_queue(url: str, total: int, seed: int = 11) -> QueueBuilt:
    """Tickets of other customers until there are `total` in all, for the agents' queue."""
    from sqlalchemy import create_engine, func, insert, select

    from mailgate.store.models import Account, Message, Ticket

    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    engine = create_engine(url)
    acc = Account.__table__  # type: ignore[attr-defined]
    tic = Ticket.__table__  # type: ignore[attr-defined]
    msg = Message.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        have = conn.execute(select(func.count()).select_from(tic)).scalar_one()
        conn.execute(
            insert(acc),
            [
                {
                    "email": f"agent{i}@bench.example",
                    "name": f"Agent {i}",
                    "role": "agent",
                    "password_hash": None,
                    "security_stamp": "s",
                    "locale": "en",
                    "created_at": now - timedelta(days=1200),
                }
                for i in range(1, AGENTS)
            ],
        )
        agents = list(conn.execute(select(acc.c.id).where(acc.c.role == "agent")).scalars())
        customers = list(
            conn.execute(select(acc.c.id).where(acc.c.email.like("other%@bench.example"))).scalars()
        )
        extra = max(0, total - have)
        batch = 10_000
        for start in range(0, extra, batch):
            rows = []
            for i in range(start, min(extra, start + batch)):
                created = now - timedelta(seconds=rng.randrange(3 * 365 * 86400))
                last = created + timedelta(seconds=rng.choice((0, 60, rng.randrange(86400))))
                rows.append(
                    {
                        "subject": f"Queue {i}: {_words(rng, 5)}",
                        "status": "new" if i % 50 == 0 else rng.choice(STATUSES),
                        "requester_id": rng.choice(customers),
                        "assignee_id": rng.choice(agents) if rng.random() < 0.6 else None,
                        "category": rng.choice(CATEGORIES),
                        "locale": "fr",
                        "channel": "smtp",
                        "created_at": created,
                        "updated_at": min(last, now),
                        "last_exchange_at": min(last, now),
                        "auto_resolve_paused": False,
                        "customer_deleted_at": None,
                    }
                )
            conn.execute(insert(tic), rows)
        # An opening message on every ticket that has none, and a reply on a third of them.
        bare = conn.execute(
            select(tic.c.id, tic.c.requester_id, tic.c.created_at, tic.c.assignee_id).where(
                ~select(msg.c.id).where(msg.c.ticket_id == tic.c.id).exists()
            )
        ).all()
        rare = 0
        for start in range(0, len(bare), batch):
            rows = []
            for tid, requester, created, assignee in bare[start : start + batch]:
                text = _words(rng, 40) + f" ref SKU-{tid}"
                if rng.random() < 0.001:
                    text += f" {RARE}"
                    rare += 1
                base = {
                    "ticket_id": tid,
                    "internal": False,
                    "automatic": False,
                    "subject": "opening",
                    "full_text": "",
                    "in_reply_to": "",
                    "references": "",
                    "channel": "smtp",
                    "sender_auth": "",
                    "unverified_sender": False,
                }
                rows.append(
                    {
                        **base,
                        "author_id": requester,
                        "role": "customer",
                        "body_text": text,
                        "message_id": f"<q-{tid}@bench.example>",
                        "matched_by": "new",
                        "created_at": created,
                    }
                )
                if tid % 3 == 0:
                    rows.append(
                        {
                            **base,
                            "author_id": assignee or agents[0],
                            "role": "agent",
                            "body_text": _words(rng, 30),
                            "message_id": f"<a-{tid}@bench.example>",
                            "matched_by": "token",
                            "created_at": _as_dt(created) + timedelta(hours=2),
                        }
                    )
            conn.execute(insert(msg), rows)
        count = conn.execute(select(func.count()).select_from(tic)).scalar_one()
        first = list(
            conn.execute(
                select(tic.c.id).order_by(tic.c.last_exchange_at.desc(), tic.c.id.desc()).limit(25)
            ).scalars()
        )
        searched = conn.execute(
            select(tic.c.id, acc.c.email)
            .join(acc, acc.c.id == tic.c.requester_id)
            .where(acc.c.email.like("other%"))
            .order_by(tic.c.id)
            .limit(1)
            .offset(count // 2)
        ).one()
    engine.dispose()
    return QueueBuilt(count, first, searched[0], searched[1], rare)


def _as_dt(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


# -- PostgreSQL: a throw-away database on the given server -------------------------------------


def pg_create(url: str) -> tuple[str, str]:
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(url)
    name = f"mgbench_{uuid.uuid4().hex[:12]}"
    dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return base.set(database=name).render_as_string(hide_password=False), name


def pg_drop(url: str, name: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_analyze(url: str) -> None:
    """What autovacuum would have done by now on a live server (statistics, visibility map)."""
    import psycopg
    from sqlalchemy.engine import make_url

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


# -- measuring -------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of the server process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Timing:
    name: str
    path: str
    took: list[float]
    size: int
    errors: int
    cpu: float = 0.0  # server CPU seconds over the timed requests

    def pct(self, q: float) -> float:
        if not self.took:
            return float("nan")
        ordered = sorted(self.took)
        return 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def sign_in(http: httpx.Client, email: str = CUSTOMER) -> None:
    page = http.get("/login").text
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token, "no CSRF field on /login"
    done = http.post("/login", data={"csrf": token.group(1), "email": email, "password": PASSWORD})
    if done.status_code != 303:
        raise RuntimeError(f"sign-in answered {done.status_code}")


def next_link(page: str) -> str | None:
    found = NEXT.search(page)
    if not found:
        return None
    return html.unescape(found.group(1) or found.group(2))


def timed(
    http: httpx.Client, pid: int, name: str, path: str, requests: int, warmup: int = 10
) -> Timing:
    for _ in range(warmup):
        http.get(path)
    took, errors, size = [], 0, 0
    cpu = cpu_seconds(pid)
    for _ in range(requests):
        start = time.perf_counter()
        response = http.get(path)
        took.append(time.perf_counter() - start)
        size = len(response.content)
        errors += response.status_code != 200
    return Timing(name, path, took, size, errors, cpu_seconds(pid) - cpu)


def walk(http: httpx.Client, first: str, limit: int) -> tuple[list[int], list[str], int]:
    """Every ticket id on every page, following "next" links; the page URLs; non-200s."""
    seen: list[int] = []
    pages: list[str] = []
    errors = 0
    path: str | None = first
    while path is not None and len(pages) < limit:
        pages.append(path)
        response = http.get(path)
        errors += response.status_code != 200
        seen += [int(t) for t in TICKET_LINK.findall(response.text)]
        path = next_link(response.text)
        if path is not None and path.startswith("http"):
            path = httpx.URL(path).raw_path.decode()
    return seen, pages, errors


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickets", type=int, default=10_000, help="the customer's tickets")
    parser.add_argument("--others", type=int, default=10_000, help="other customers' tickets")
    parser.add_argument("--messages", type=int, default=500, help="messages on the long ticket")
    parser.add_argument(
        "--queue", type=int, default=100_000, help="tickets in all, for the agents' queue"
    )
    parser.add_argument("--requests", type=int, default=200, help="timed requests per page")
    parser.add_argument(
        "--database-url", default="", help="a PostgreSQL server (a fresh database is made on it)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--quick", action="store_true", help="50 timed requests per page")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests = min(args.requests, 50)

    python = str(VENV_PY if VENV_PY.exists() else Path(sys.executable))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-portal-bench-"))
    pg_name = ""
    if args.database_url:
        url, pg_name = pg_create(args.database_url)
    else:
        url = f"sqlite:///{tmp / 'data' / 'mailgate.db'}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = tmp / "mailgate.toml"
    write_config(
        config,
        {
            ("mailgate", "data_dir"): str(tmp / "data"),
            ("database", "url"): url,
            ("inbound", "smtp_listen"): "",
            ("inbound", "lmtp_listen"): "",
            ("outbound", "transport"): f"maildir:{tmp / 'sent'}",
            ("portal", "listen"): f"127.0.0.1:{port}",
            ("portal", "base_url"): base,
            ("metrics", "listen"): "",
        },
    )
    mailgate = [python, "-m", "mailgate", "--config", str(config)]
    proc: subprocess.Popen[bytes] | None = None
    log_path = tmp / "mailgate.log"
    try:
        subprocess.run([*mailgate, "db", "upgrade"], check=True, env=env, cwd=ROOT)
        started = time.perf_counter()
        built = build(url, args.tickets, args.others, args.messages)
        queue = build_queue(url, args.queue)
        if pg_name:
            pg_analyze(url)
        print(
            f"portal bench on {'PostgreSQL' if pg_name else 'SQLite (WAL, synchronous=FULL)'}: "
            f"{len(built.visible)} visible tickets of {args.tickets} for the customer "
            f"(+{args.others} of others), a {args.messages}-message ticket, "
            f"{queue.total} tickets in the agents' queue ({queue.rare_tickets} with the word "
            f"{RARE!r}); built in "
            f"{time.perf_counter() - started:.1f} s; {os.cpu_count()} CPUs, "
            f"load average {os.getloadavg()[0]:.2f}"
        )
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [*mailgate, "serve"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            )
        deadline = time.monotonic() + 60
        while not is_listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve did not start; see {log_path}")
            time.sleep(0.02)

        with httpx.Client(base_url=base, timeout=60) as http:
            sign_in(http)
            seen, pages, walk_errors = walk(http, "/tickets", limit=len(built.visible) + 2)
            in_order = seen == built.visible
            deep = pages[len(pages) // 2] if len(pages) > 1 else None
            timings = [
                timed(http, proc.pid, "health (baseline)", "/healthz", args.requests),
                timed(http, proc.pid, "list, first page", "/tickets", args.requests),
            ]
            if deep is not None:
                timings.append(timed(http, proc.pid, "list, deep page", deep, args.requests))
            timings.append(
                timed(http, proc.pid, "list, status=new", "/tickets?status=new", args.requests)
            )
            timings.append(
                timed(http, proc.pid, "ticket page", f"/tickets/{built.long_ticket}", args.requests)
            )
        with httpx.Client(base_url=base, timeout=60) as http:
            sign_in(http, AGENT)
            first_page = [int(t) for t in QUEUE_ROW.findall(http.get("/tickets").text)]
            queue_ok = first_page == queue.first_page
            _, queue_pages, queue_errors = walk(http, "/tickets", limit=41)
            walk_errors += queue_errors
            agent_cases = [
                ("queue, first page", "/tickets"),
                ("queue, deep page", queue_pages[-1]),
                ("queue, mine + open", "/tickets?assignee=mine&status=open"),
                ("queue, category", "/tickets?category=Returns"),
                ("queue, search #id", f"/tickets?q=%23{queue.searched_id}"),
                ("queue, search address", f"/tickets?q={queue.searched_address}"),
                ("queue, search word", f"/tickets?q={RARE}"),
                ("queue, common word", "/tickets?q=export"),
                ("agent ticket page", f"/tickets/{built.long_ticket}"),
            ]
            agent_timings = [
                timed(http, proc.pid, name, path, args.requests) for name, path in agent_cases
            ]

        print()
        print(
            f"{'page':<22} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
            f"{'mean ms':>8} {'CPU ms':>7} {'KB':>6} {'errors':>6}"
        )
        for t in timings + agent_timings:
            print(
                f"{t.name:<22} {len(t.took):>8} {t.pct(0.5):>8.1f} {t.pct(0.99):>8.1f} "
                f"{t.pct(1.0):>8.1f} {1000 * statistics.fmean(t.took):>8.1f} "
                f"{1000 * t.cpu / max(1, len(t.took)):>7.1f} "
                f"{t.size / 1024:>6.0f} {t.errors:>6}"
            )
        print("CPU ms: the serve process's CPU time per request (steadier than latency under load)")
        print()
        if deep is not None:
            print(f"deep page: {deep}")
        for t in timings[1:]:  # not the /healthz floor
            p99 = t.pct(0.99)
            verdict = "PASS" if p99 < GOAL_P99_MS else "FAIL"
            print(f"{verdict} {t.name}: p99 {p99:.1f} ms (goal < {GOAL_P99_MS:g} ms)")
        for t in agent_timings:
            p99 = t.pct(0.99)
            verdict = "PASS" if p99 < AGENT_GOAL_P99_MS else "FAIL"
            print(f"{verdict} {t.name}: p99 {p99:.1f} ms (goal < {AGENT_GOAL_P99_MS:g} ms)")
        print(
            f"{'PASS' if queue_ok else 'FAIL'} the queue's first page lists the 25 tickets of "
            f"latest exchange, in order"
        )
        print(
            f"{'PASS' if in_order else 'FAIL'} walk through {len(pages)} pages: {len(seen)} "
            f"ticket links for {len(built.visible)} visible tickets, each once and in order"
        )
        errors = walk_errors + sum(t.errors for t in timings + agent_timings)
        if errors:
            print(f"{errors} requests answered other than 200; see {log_path}")
        return 0 if in_order and queue_ok and not errors else 1
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)
        if pg_name:
            pg_drop(args.database_url, pg_name)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
