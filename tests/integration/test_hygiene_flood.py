"""Issue 4, floods: 100 mails from one sender make 100 tickets and at most 11 automatic mails
(5 an hour, 10 a day, then one "limit reached" notice and silence until the next day); the
caps live in the database, so a restart does not reset them. The clock is a FixedClock the
test moves, so "an hour" and "a day" pass without waiting."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.clock import FixedClock
from mailgate.services.outbound_limits import not_sent
from mailgate.store.models import Outbox, Ticket
from tests.conftest import make_mail, send
from tests.support.hygiene import automatic_rows, count, wait_drained
from tests.support.peers import Mailgate, SmtpSink

pytestmark = pytest.mark.postgres  # the database engine matters here: run on both

FLOODER = "robot@client.example"


def _flood(mg: Mailgate, clock: FixedClock, n: int, first: int, minutes_apart: float) -> None:
    for i in range(first, first + n):
        send(mg.smtp_port, make_mail(sender=f"Robot <{FLOODER}>", subject=f"Alerte {i}"),
             mail_from=FLOODER)
        clock.advance(minutes=minutes_apart)


def _sunk(sink: SmtpSink) -> list[str]:
    return [m.kind for m in sink.messages if m.rcpt_tos == [FLOODER]]


def _queued(rows: list[Outbox]) -> list[Outbox]:
    """Rows put on the wire. Since issue 9 a mail over a cap is recorded too, not sent."""
    return [o for o in rows if not not_sent(o.status, o.attempts)]


def _capped_reasons(rows: list[Outbox]) -> set[str]:
    return {o.reason for o in rows if not_sent(o.status, o.attempts)}


def test_a_flood_makes_every_ticket_and_eleven_mails_then_silence_across_a_restart(
    config_path: Path, sink: SmtpSink
):
    clock = FixedClock()  # 09:00 UTC: the whole flood stays within one day
    mg = Mailgate(config_path, clock=clock)
    try:
        # 100 mails over five hours, so the hourly cap lets the daily one be reached.
        _flood(mg, clock, 100, 0, minutes_apart=3)
        wait_drained(mg)
        db = mg.app.db
        assert count(db, Ticket) == 100
        kinds = [o.kind for o in _queued(automatic_rows(db, FLOODER))]
        assert len(kinds) == 11, kinds
        # The other 89 confirmations are recorded as not sent, each with its reason.
        assert len(automatic_rows(db, FLOODER)) == 100 + 1
        assert _capped_reasons(automatic_rows(db, FLOODER)) == {
            "auto-reply cap: 5/hour", "auto-reply cap: 10/day, limit notice sent"}
        assert kinds[:2] == ["confirmation", "activation"] and kinds[-1] == "limit_reached"
        assert kinds.count("limit_reached") == 1
        assert sorted(_sunk(sink)) == sorted(kinds)  # what was queued is what went out
    finally:
        mg.stop()

    mg = Mailgate(config_path, clock=clock)  # a restart on the same database
    try:
        _flood(mg, clock, 5, 100, minutes_apart=1)
        wait_drained(mg)
        assert count(mg.app.db, Ticket) == 105
        assert len(_queued(automatic_rows(mg.app.db, FLOODER))) == 11
        # The next day the sender is answered again.
        clock.advance(days=1)
        _flood(mg, clock, 1, 105, minutes_apart=1)
        wait_drained(mg)
        kinds = [o.kind for o in _queued(automatic_rows(mg.app.db, FLOODER))]
        assert kinds[11:] == ["confirmation"]
        assert sorted(_sunk(sink)) == sorted(kinds)
    finally:
        mg.stop()


def test_a_burst_gets_five_mails_in_its_hour_and_no_notice_yet(mailgate: Mailgate, sink: SmtpSink):
    for i in range(20):
        send(mailgate.smtp_port, make_mail(sender=FLOODER, subject=f"Burst {i}"),
             mail_from=FLOODER)
    wait_drained(mailgate)
    kinds = [o.kind for o in _queued(automatic_rows(mailgate.app.db, FLOODER))]
    assert kinds == ["confirmation", "activation", "confirmation", "confirmation", "confirmation"]
    assert _capped_reasons(automatic_rows(mailgate.app.db, FLOODER)) == {"auto-reply cap: 5/hour"}
    assert count(mailgate.app.db, Ticket) == 20
    assert sorted(_sunk(sink)) == sorted(kinds)
