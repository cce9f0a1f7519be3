"""Issue 15: a mail that gives a time gives it on the recipient's clock, with its zone named in
the mail's language: the account's zone (taken from the browser by the portal), else
`[mailgate] default_timezone` (Europe/Paris in these tests, the default)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlmodel import select

from mailgate.clock import as_utc
from mailgate.store.models import Account, Ticket
from tests.support.conversation import AGENT, AGENT_NAME, CUSTOMER, addr
from tests.support.inprocess import InProcess, ServiceDesk

JEAN = addr(CUSTOMER)


def _set_zone(desk: ServiceDesk, email: str, zone: str, locale: str | None = None) -> None:
    with desk.mg.app.db.write() as session:
        account = session.exec(select(Account).where(Account.email == email)).one()
        account.timezone = zone
        account.locale = locale or account.locale
        session.add(account)


def _on_clock(at: datetime, zone: str, pattern: str) -> str:
    return at.astimezone(ZoneInfo(zone)).strftime(pattern)


def _auto_resolved(desk: ServiceDesk, service: InProcess) -> tuple[str, datetime]:
    desk.add_agent()
    opened = desk.open_ticket()
    notification = desk.wait_mail("agent_notification", AGENT, ticket=opened.id)
    desk.send(desk.reply(notification, f"{AGENT_NAME} <{AGENT}>", "Essayez de le redémarrer."))
    with service.app.db.read() as session:
        row = session.get(Ticket, opened.id)
        assert row is not None and row.pending_since is not None
        replied = as_utc(row.pending_since)  # the agent's reply: what the mail speaks of
    service.clock.advance(days=8)
    service.run_jobs()
    notice = desk.wait_mail("auto_resolved", JEAN, ticket=opened.id)
    html = notice.msg.get_body(("html",))
    assert html is not None
    return notice.text() + "\n" + html.get_content(), replied


def test_auto_resolve_says_when_we_last_wrote_in_the_site_zone(
    desk: ServiceDesk, service: InProcess
) -> None:
    text, replied = _auto_resolved(desk, service)
    # "le 9 décembre 2026 à 10:02, heure normale d’Europe centrale" (or d’été, in summer)
    local = replied.astimezone(ZoneInfo("Europe/Paris"))
    assert f"{local.day} " in text and _on_clock(replied, "Europe/Paris", "%H:%M") in text
    assert "d’Europe centrale" in text
    assert text.count("d’Europe centrale") == 2  # the text part and the HTML part


def test_auto_resolve_in_the_customer_zone_and_language(
    desk: ServiceDesk, service: InProcess
) -> None:
    desk.open_ticket()  # the account exists; Jean set New York and English in the portal
    _set_zone(desk, JEAN, "America/New_York", "en")
    text, replied = _auto_resolved(desk, service)
    hour = _on_clock(replied, "America/New_York", "%-I:%M")
    assert f"at {hour}" in text and "Eastern" in text
    assert "Europe" not in text


def test_a_reset_link_says_until_when_it_works(desk: ServiceDesk, service: InProcess) -> None:
    desk.open_ticket()
    _set_zone(desk, JEAN, "Asia/Tokyo")
    with service.app.db.write() as session:
        account = session.exec(select(Account).where(Account.email == JEAN)).one()
        service.app.accounts.queue_reset(session, account, requested=True)
    until = service.clock.now().timestamp() + 3600
    mail = [m for m in service.drain() if m.kind == "password_reset"][-1]
    expected = _on_clock(datetime.fromtimestamp(until, ZoneInfo("UTC")), "Asia/Tokyo", "%H:%M")
    assert f"à {expected} (heure normale du Japon)" in mail.text()
