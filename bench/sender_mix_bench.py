"""Sender CPU per mail for a first contact's mix: a confirmation and an activation per new
customer, each with its own Date, ticket, Message-ID, link expiry (now + 72 h, to the
microsecond, as accounts._link_expiry makes it) and recipient, in French and English.

    .venv/bin/python bench/sender_mix_bench.py [--mails 2000] [--rounds 7] [--profile]

Prints the best round's CPU (process_time) of MailAssembler.build per mail. The params are
made by encode_params from contexts shaped like the ones Tickets.mail_about and
Accounts.queue_activation queue (Mailer.queue's company/portal_url/echo added); the article
suggester is a stub answering [] (the real one runs a read transaction: not this module's).
--profile: cProfile of one round, top functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailgate.services.assemble import MailAssembler, encode_params  # noqa: E402
from mailgate.services.render import MailRenderer  # noqa: E402
from mailgate.store.models import Ticket  # noqa: E402


@dataclass(frozen=True)
class Row:
    id: int
    kind: str
    to_addr: str
    subject: str
    ticket_id: int | None
    message_id: str
    raw: bytes
    params: str


def rows(mails: int, year: int = 2026) -> list[Row]:
    out: list[Row] = []
    start = datetime(year, 3, 28, 23, 50, 1, 123456, tzinfo=UTC)  # across a DST change
    for i in range(mails // 2):
        lang = "fr" if i % 2 else "en"
        now = start + timedelta(milliseconds=397 * i, microseconds=i)
        tid = 1000 + i
        addr = f"customer{i}@client{i % 7}.example"
        ticket = Ticket(
            id=tid,
            subject=f"Imprimante en panne depuis hier, l'écran reste noir ({i})",
            status="new",
            requester_id=i,
            locale=lang,
            created_at=now,
            updated_at=now,
            last_exchange_at=now,
        )
        common = {
            "company": "Support Exemple",
            "portal_url": "https://help.example.com/",
            "echo": False,
        }
        fixed = {
            "locale": lang,
            "date": now,
            "from_addr": "support@example.com",
            "from_name": "Support Exemple",
            "hostname": "mg.example.com",
            "to_name": "",
            "in_reply_to": f"CAF{i:012d}@mail.client.example",
            "auto_submitted": "auto-replied",
        }
        confirmation = encode_params(
            context={
                **common,
                "ticket": ticket,
                "ticket_url": f"https://help.example.com/tickets/{tid}",
                "tz": "",
                "echo": False,
                "customer_name": "",
                "old_ticket_id": None,
                "suggest": {
                    "ticket_id": tid,
                    "subject": ticket.subject,
                    "locale": lang,
                    "limit": 3,
                },
            },
            reply_to=f"support+t{tid}.abcdef{i:04d}@example.com",
            references=(fixed["in_reply_to"],),
            **fixed,  # type: ignore[arg-type]
        )
        activation = encode_params(
            context={
                **common,
                "customer_name": "",
                "echo": False,
                "email": addr,
                "activation_url": f"https://help.example.com/activate/{i:08d}" + "x" * 100,
                "expires": now + timedelta(hours=72),
                "tz": "",
            },
            **fixed,  # type: ignore[arg-type]
        )
        for n, (kind, params) in enumerate(
            (("confirmation", confirmation), ("activation", activation))
        ):
            out.append(
                Row(2 * i + n, kind, addr, "", tid, f"mg.{i:024x}.{n}@mg.example.com", b"", params)
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mails", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sort", default="tottime", help="pstats order (--profile)")
    args = parser.parse_args()
    renderer = MailRenderer(ROOT / "templates", "fr", "Europe/Paris")
    assembler = MailAssembler(renderer, suggest=lambda **_: [])
    best = float("inf")
    for r in range(args.rounds):
        # New rows each round (their own times), as a sender sees: nothing cached from before.
        batch = rows(args.mails, 2027 + r)
        start = time.process_time()
        for row in batch:
            assembler.build(row)
        best = min(best, (time.process_time() - start) / len(batch) * 1e6)
    print(f"assemble (confirmation + activation mix) best {best:.1f} µs/mail")
    if args.profile:
        batch = rows(args.mails)
        prof = cProfile.Profile()
        prof.enable()
        for row in batch:
            assembler.build(row)
        prof.disable()
        pstats.Stats(prof).sort_stats(args.sort).print_stats(30)


if __name__ == "__main__":
    main()
