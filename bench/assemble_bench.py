"""Outbound assembly micro-benchmark: CPU µs per mail, for the kinds a first contact and an
agent's answer send (confirmation, activation, agent_reply), in French and English.

    .venv/bin/python bench/assemble_bench.py [--mails 2000]

Columns, each the CPU time (process_time) of one mail, averaged over --mails after a warm-up:
  enqueue   what the writer's transaction still does per mail: the context -> params JSON
  assemble  what the sender does per mail: params JSON -> render -> MIME bytes (MailAssembler)
  before    the old enqueue-time path, for comparison: render -> EmailMessage -> as_bytes
The target: assemble well under 500 µs, so one sender process can do >= 1,000 mails/s with
the sending itself.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailgate.core.compose import Outgoing, compose  # noqa: E402
from mailgate.services.assemble import MailAssembler, encode_params  # noqa: E402
from mailgate.services.render import MailRenderer  # noqa: E402
from mailgate.store.models import Outbox, Ticket  # noqa: E402

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
TICKET = Ticket(
    id=12345,
    subject="Imprimante en panne depuis hier, l'écran reste noir",
    status="new",
    requester_id=1,
    locale="fr",
    created_at=NOW,
    updated_at=NOW,
    last_exchange_at=NOW,
)
URL = "https://help.example.com/tickets/12345"
BODY = (
    "Bonjour,\n\nMerci pour votre message. Pouvez-vous redémarrer l'imprimante et nous dire "
    "si le voyant reste orange ? Si c'est le cas, débranchez-la une minute.\n\n" * 3
)
BASE = {"company": "Support Exemple", "portal_url": "https://help.example.com/", "echo": False}
MAILS: dict[str, dict[str, Any]] = {
    "confirmation": {
        "context": {
            "ticket": TICKET,
            "echo": True,
            "customer_name": "Jérôme Dupont",
            "ticket_url": URL,
            "old_ticket_id": None,
        },
        "auto_submitted": "auto-replied",
        "reply_to": "support+t12345.abcdef@example.com",
    },
    "activation": {
        "context": {
            "customer_name": "Jérôme Dupont",
            "echo": True,
            "email": "jerome.dupont@client.example",
            "activation_url": "https://help.example.com/activate/" + "x" * 110,
        },
        "auto_submitted": "auto-replied",
        "reply_to": None,
    },
    "agent_reply": {
        "context": {"ticket": TICKET, "body": BODY, "agent_name": "Alice", "ticket_url": URL},
        "auto_submitted": None,
        "reply_to": "support+t12345.abcdef@example.com",
    },
}


def per_mail_us(work: Callable[[], object], mails: int) -> float:
    for _ in range(min(200, mails)):
        work()
    start = time.process_time()
    for _ in range(mails):
        work()
    return (time.process_time() - start) / mails * 1e6


def measure(kind: str, lang: str, renderer: MailRenderer, mails: int) -> str:
    """One line of the table: the three timings of one kind in one language."""
    mail = MAILS[kind]
    context = {**BASE, **mail["context"]}
    fixed: dict[str, Any] = {
        "from_addr": "support@example.com",
        "from_name": "Support Exemple",
        "hostname": "mg.example.com",
        "to_name": "Jérôme Dupont",
        "reply_to": mail["reply_to"],
        "in_reply_to": "CAF1234567890abcdef@mail.client.example",
        "references": ("CAF1234567890abcdef@mail.client.example",),
        "auto_submitted": mail["auto_submitted"],
    }
    row = Outbox(
        kind=kind,
        to_addr="jerome.dupont@client.example",
        ticket_id=TICKET.id,
        message_id="mg.0123456789abcdef01234567@mg.example.com",
        raw=b"",
        params="",
        next_attempt_at=NOW,
        created_at=NOW,
    )
    assembler = MailAssembler(renderer)

    def enqueue() -> str:
        return encode_params(locale=lang, context=context, date=NOW, **fixed)

    def assemble() -> bytes:
        return assembler.assemble(row)

    def before() -> bytes:
        rendered = renderer.render(kind, lang, context)
        out = Outgoing(
            kind=kind,
            to_addr=row.to_addr,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            message_id=row.message_id,
            date=NOW,
            ticket_id=row.ticket_id,
            locale=lang,
            **fixed,
        )
        return compose(out).as_bytes()

    row.params = enqueue()
    return (
        f"{kind:14} {lang:4} {per_mail_us(enqueue, mails):7.0f}µs "
        f"{per_mail_us(assemble, mails):7.0f}µs {per_mail_us(before, mails):7.0f}µs  "
        f"{len(assemble())}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mails", type=int, default=2000, help="mails timed per cell")
    args = parser.parse_args()
    renderer = MailRenderer(ROOT / "templates")
    print(f"{'kind':14} {'lang':4} {'enqueue':>9} {'assemble':>9} {'before':>9}  bytes")
    for kind in MAILS:
        for lang in ("fr", "en"):
            print(measure(kind, lang, renderer, args.mails))


if __name__ == "__main__":
    main()
