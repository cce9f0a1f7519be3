"""Issue 3, statuses: pending tickets auto-resolve after `auto_resolve_after_days` with a notice,
an out-of-office changes nothing, a reply reopens a solved ticket, and a reply to a closed one
opens a follow-up. Time moves only through the jobs' `now` (`jobs run --now`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from mailgate.clock import as_utc
from tests.support.conversation import (  # noqa: F401 (desk_fixture provides `desk`)
    AGENT,
    AGENT_NAME,
    CUSTOMER,
    Desk,
    Opened,
    addr,
    desk_fixture,
    msgid,
)
from tests.support.peers import Received

JEAN = addr(CUSTOMER)
DAY = timedelta(days=1)


def pending_ticket(desk: Desk) -> tuple[Opened, Received, datetime, datetime]:
    """A ticket an agent answered: pending since a moment between the two times returned."""
    desk.add_agent()
    opened = desk.open_ticket()
    notification = desk.wait_mail("agent_notification", AGENT, ticket=opened.id)
    before = datetime.now(UTC)
    desk.send(desk.reply(notification, f"{AGENT_NAME} <{AGENT}>", "Essayez de le redémarrer."))
    after = datetime.now(UTC)
    reply = desk.wait_mail("agent_reply", JEAN, ticket=opened.id)
    assert desk.ticket(opened.id)["status"] == "pending"
    return opened, reply, before, after


def jobs_cli(desk: Desk, now: datetime) -> dict[str, object]:
    out = desk.mg.cli("jobs", "run", "--now", now.isoformat(), "--json").stdout
    return json.loads(out)


def out_of_office(desk: Desk, to_mail: Received) -> None:
    """Exchange's automatic reply to our mail: to the support address, in the thread."""
    ooo = desk.reply(
        to_mail,
        CUSTOMER,
        "Je suis absent jusqu'au 20 janvier.",
        to="support@example.com",
        quote=False,
        headers={"Auto-Submitted": "auto-replied", "X-Auto-Response-Suppress": "All"},
    )
    ooo.replace_header("Subject", f"Réponse automatique : {to_mail.msg['Subject']}")
    desk.send(ooo)


def test_auto_resolve_at_day_seven_not_at_day_six(desk: Desk) -> None:
    opened, reply, before, after = pending_ticket(desk)

    assert desk.mg.app.jobs.run_all(after + 6 * DAY).auto_resolved == 0
    # The last second before seven days have passed, whenever the reply was stored; written
    # with an offset, as an operator east of Greenwich might (SQLite keeps naive UTC).
    almost = (before + 7 * DAY - timedelta(seconds=1)).astimezone(timezone(timedelta(hours=5)))
    assert jobs_cli(desk, almost)["auto_resolved"] == 0
    assert desk.ticket(opened.id)["status"] == "pending"
    assert desk.outbox(opened.id, "auto_resolved") == []

    assert jobs_cli(desk, after + 7 * DAY)["auto_resolved"] == 1
    assert desk.ticket(opened.id)["status"] == "solved"
    notice = desk.wait_mail("auto_resolved", JEAN, ticket=opened.id)
    assert f"#{opened.id}" in notice.text()
    assert notice.msg["Auto-Submitted"] is not None
    assert addr(str(notice.msg["Reply-To"])) == addr(str(opened.confirmation.msg["Reply-To"]))
    assert msgid(notice, "In-Reply-To") in str(reply.msg["References"]) + msgid(reply)

    # Idempotent: running again (or catching up later) sends nothing more.
    assert desk.mg.app.jobs.run_all(after + 8 * DAY).auto_resolved == 0
    assert len(desk.outbox(opened.id, "auto_resolved")) == 1

    # "Reply to reopen", as the notice says.
    desk.send(desk.reply(notice, CUSTOMER, "Non, toujours en panne."))
    assert desk.ticket(opened.id)["status"] == "open"


def test_out_of_office_during_pending_neither_reopens_nor_resets_the_clock(desk: Desk) -> None:
    opened, reply, _before, after = pending_ticket(desk)
    pending_since = desk.ticket_row(opened.id).pending_since
    out_of_office(desk, reply)

    ticket = desk.ticket(opened.id)
    auto = ticket["messages"][-1]
    assert (auto["automatic"], auto["role"], auto["matched_by"]) == (True, "customer",
                                                                    "in-reply-to")
    assert ticket["status"] == "pending"
    assert desk.ticket_row(opened.id).pending_since == pending_since
    # Agents are not bothered with it either.
    assert len(desk.outbox(opened.id, "agent_notification")) == 1

    report = desk.mg.app.jobs.run_all(after + 7 * DAY)
    assert report.auto_resolved == 1
    assert desk.ticket(opened.id)["status"] == "solved"
    notice = desk.wait_mail("auto_resolved", JEAN, ticket=opened.id)

    # Another out-of-office, answering the notice, leaves it solved.
    out_of_office(desk, notice)
    assert desk.ticket(opened.id)["status"] == "solved"


def test_reply_to_a_solved_ticket_reopens_it(desk: Desk) -> None:
    opened, reply, _before, _after = pending_ticket(desk)
    notification = desk.wait_mail("agent_notification", AGENT, ticket=opened.id)
    desk.send(desk.reply(notification, f"{AGENT_NAME} <{AGENT}>", "#status solved"))
    assert desk.ticket(opened.id)["status"] == "solved"

    desk.send(desk.reply(reply, CUSTOMER, "Le problème est revenu."))
    ticket = desk.ticket(opened.id)
    assert ticket["status"] == "open"
    assert ticket["messages"][-1]["matched_by"] == "token"
    assert desk.ticket_row(opened.id).solved_at is None
    again = desk.wait_mail("agent_notification", AGENT, ticket=opened.id, count=2)
    assert "Le problème est revenu." in again.text()


def test_reply_to_a_closed_ticket_opens_a_follow_up(desk: Desk) -> None:
    opened, reply, _before, after = pending_ticket(desk)
    resolved_at = after + 7 * DAY
    assert desk.mg.app.jobs.run_all(resolved_at).auto_resolved == 1
    solved_at = as_utc(desk.ticket_row(opened.id).solved_at)
    assert solved_at == resolved_at  # as of the jobs' clock, so closing counts from there

    close_days = desk.mg.app.config.tickets.close_after_days
    almost = resolved_at + close_days * DAY - timedelta(seconds=1)
    east = timezone(timedelta(hours=5))  # the same instant, written with an offset
    assert desk.mg.app.jobs.run_all(almost.astimezone(east)).closed == 0
    assert desk.ticket(opened.id)["status"] == "solved"
    assert desk.mg.app.jobs.run_all(resolved_at + close_days * DAY).closed == 1
    assert desk.ticket(opened.id)["status"] == "closed"

    # "Reply all": the same mail reaches the ticket's address and the plain one.
    again = desk.reply(reply, CUSTOMER, "Ça recommence, même panne.")
    desk.send(again, rcpts=[addr(str(reply.msg["Reply-To"])), "support@example.com"])
    old = desk.ticket(opened.id)
    assert old["status"] == "closed" and old["message_count"] == 2
    follow_ups = [t for t in desk.tickets() if t["follow_up_of"] == opened.id]
    assert len(follow_ups) == 1
    newest = follow_ups[0]
    follow_up = desk.ticket(newest["id"])
    assert follow_up["requester"] == JEAN and follow_up["status"] == "new"
    assert [m["matched_by"] for m in follow_up["messages"]] == ["follow-up"]
    assert follow_up["messages"][0]["body_text"] == "Ça recommence, même panne."

    told = desk.wait_mail("follow_up", JEAN, ticket=newest["id"])
    assert f"#{opened.id}" in told.text() and f"#{newest['id']}" in told.text()
    new_address = addr(str(told.msg["Reply-To"]))
    assert new_address != addr(str(opened.confirmation.msg["Reply-To"]))
    desk.wait_mail("agent_notification", AGENT, ticket=newest["id"])

    # Replying to the follow-up notice threads into the new ticket.
    desk.send(desk.reply(told, CUSTOMER, "Merci."))
    assert desk.ticket(newest["id"])["message_count"] == 2


def test_a_new_agent_reply_restarts_the_wait(desk: Desk) -> None:
    opened, _reply, _before, _after = pending_ticket(desk)
    notification = desk.wait_mail("agent_notification", AGENT, ticket=opened.id)
    second = datetime.now(UTC)
    desk.send(desk.reply(notification, f"{AGENT_NAME} <{AGENT}>", "Avez-vous pu essayer ?"))
    desk.wait_mail("agent_reply", JEAN, ticket=opened.id, count=2)
    assert as_utc(desk.ticket_row(opened.id).pending_since) >= second

    # Seven days after the first reply, but not after the second: still waiting.
    assert desk.mg.app.jobs.run_all(second + 7 * DAY - timedelta(milliseconds=1)).auto_resolved == 0
    assert desk.ticket(opened.id)["status"] == "pending"
