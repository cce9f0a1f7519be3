"""Issue 15 over real HTTP: the portal answers in the visitor's language (their choice, kept in
a cookie; else Accept-Language), a signed-in customer's language is the one their mail decided
(Bob, who writes English without Content-Language, gets English pages after signing in), the
footer's switcher stores a choice on the account that a later mail in another language does not
flip, and the browser's time zone is remembered on the account and changeable on /account."""

from __future__ import annotations

import re
from datetime import UTC
from zoneinfo import ZoneInfo

from sqlmodel import select

from mailgate.store.models import Account, Ticket
from tests.support.conversation import Desk, addr
from tests.support.peers import Mailgate
from tests.support.portal_web import Web, customer_with_ticket, hidden_fields

pytest_plugins = ["tests.support.portal"]

BOB = "Bob Smith <bob@client.example>"
ENGLISH = (
    "Hello,\n\nSince last night I cannot sign in to my account: the site says my password is "
    "wrong although I have not changed it. Could you help me, please?\n\nThanks,\nBob\n"
)


def _account(mg: Mailgate, email: str) -> Account:
    with mg.app.db.read() as session:
        found = session.exec(select(Account).where(Account.email == email)).one()
        session.expunge(found)
        return found


def _switch(web: Web, page: str, lang: str) -> None:
    loaded = web.get(page)
    fields = hidden_fields(loaded.text)
    next_path = re.search(r'name="back" value="([^"]*)"', loaded.text)
    assert next_path and next_path.group(1) == page
    response = web.post("/language", data={"csrf": fields["csrf"], "back": page, "lang": lang})
    assert response.status_code == 303
    assert response.headers["location"].endswith(page)


def test_a_visitor_gets_the_browser_language_then_their_choice(make_web) -> None:  # type: ignore[no-untyped-def]
    web = make_web(**{"Accept-Language": "en-GB,en;q=0.9"})
    page = web.get("/login").text
    assert '<html lang="en">' in page and "lang-switch" in page
    assert '<option value="fr" lang="fr">Français</option>' in page
    _switch(web, "/login", "fr")
    assert web.http.cookies.get("mg_lang") == "fr"
    assert '<html lang="fr">' in web.get("/login").text  # Accept-Language still says English


def test_bob_writes_english_and_the_portal_stays_english_after_sign_in(
    portal: Mailgate, helpdesk: Desk, web: Web
) -> None:
    ticket = customer_with_ticket(helpdesk, web, sender=BOB, subject="Cannot sign in", body=ENGLISH)
    page = web.get(f"/tickets/{ticket}").text
    assert '<html lang="en">' in page and "Cannot sign in" in page

    # His choice in the footer is stored on the account, and wins over his next English mail.
    _switch(web, f"/tickets/{ticket}", "fr")
    account = _account(portal, addr(BOB))
    assert (account.locale, account.locale_source) == ("fr", "chosen")
    opened = helpdesk.open_ticket(sender=BOB, subject="Another one", body=ENGLISH,
                                  headers={"Content-Language": "en"})  # fmt: skip
    assert opened.confirmation.msg["Content-Language"] == "fr"
    assert _account(portal, addr(BOB)).locale == "fr"


def test_time_zone_from_the_browser_then_the_account_page(
    portal: Mailgate, helpdesk: Desk, web: Web
) -> None:
    ticket = customer_with_ticket(helpdesk, web, sender=BOB, subject="Cannot sign in", body=ENGLISH)
    web.http.cookies.set("mg_tz", "America/New_York")
    page = web.get(f"/tickets/{ticket}").text
    assert "Times shown in the America/New_York time zone." in page
    assert _account(portal, addr(BOB)).timezone == "America/New_York"
    created = portal.app.db.read  # the ticket's time as New York's clock shows it
    with created() as session:
        row = session.get(Ticket, ticket)
        assert row is not None
        at = row.created_at.replace(tzinfo=row.created_at.tzinfo or UTC)
    local = at.astimezone(ZoneInfo("America/New_York"))
    # CLDR's English: "2:26 AM" (a narrow no-break space before AM), in New York's time.
    assert re.search(rf"{local:%-I:%M}\s{local:%p}", page), local

    # A bad zone: refused with what is expected, the rest of the form kept.
    form = hidden_fields(web.get("/account").text)
    refused = web.post("/account", data={**form, "language": "fr", "timezone": "Mars/Olympus"})
    assert refused.status_code == 400
    assert "expected a name such as Europe/London" in refused.text
    assert 'value="Mars/Olympus"' in refused.text
    assert '<option value="fr" selected lang="fr">' in refused.text
    saved = web.post("/account", data={**form, "language": "en", "timezone": "Asia/Tokyo"})
    assert saved.status_code == 303
    assert _account(portal, addr(BOB)).timezone == "Asia/Tokyo"
    assert "Times shown in the Asia/Tokyo time zone." in web.get("/account?saved=1").text
