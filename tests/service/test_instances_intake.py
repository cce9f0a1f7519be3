"""Several instances on one database (issue 17): the same message delivered to two instances
at the same moment makes one ticket, one receipt and one confirmation. The receipt's unique
dedupe key decides (a constraint, not a check-then-insert): the loser's transaction conflicts
and it answers 250 with nothing created."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlmodel import select

from mailgate.store.models import Outbox, Receipt, Ticket
from tests.conftest import make_mail
from tests.support.inprocess import UNUSED_SMARTHOST_PORT, InProcess, wire_bytes
from tests.support.peers import write_config


def test_the_same_message_at_two_instances_at_once_makes_one_ticket(
    service: InProcess, service_dir: Path, service_database_url: str
) -> None:
    second_dir = service_dir / "second"
    second_dir.mkdir()
    path = write_config(second_dir, database_url=service_database_url,
                        sink_port=UNUSED_SMARTHOST_PORT)  # fmt: skip
    other = InProcess(path, clock=service.clock, upgrade=False)
    try:
        rounds = 8
        for i in range(rounds):
            raw = wire_bytes(make_mail(sender=f"c{i}@client.example",
                                       message_id=f"<twice-{i}@client.example>"))  # fmt: skip
            barrier = threading.Barrier(2)
            outcomes: list[object] = []

            def deliver(
                inst: InProcess,
                raw: bytes = raw,
                i: int = i,
                barrier: threading.Barrier = barrier,
                outcomes: list[object] = outcomes,
            ) -> None:
                barrier.wait()
                got = inst.ingest(raw, ["support@example.com"], f"c{i}@client.example")
                outcomes.append(got)

            threads = [threading.Thread(target=deliver, args=(x,)) for x in (service, other)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert len(outcomes) == 2  # both answered (250), neither raised
        with service.app.db.read() as session:
            tickets = session.exec(select(Ticket)).all()
            receipts = session.exec(select(Receipt)).all()
            confirmations = session.exec(select(Outbox).where(Outbox.kind == "confirmation")).all()
        assert len(tickets) == rounds
        assert len(receipts) == rounds
        assert len(confirmations) == rounds
    finally:
        other.close()
