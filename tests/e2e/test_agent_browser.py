"""The agents' desk in a real browser: headless Chromium (Debian's package) driven by Playwright.

An agent is made with the services `mailgate agent add` uses and gets an activation mail; they
open it from the SMTP sink and set a password. A customer who wrote to support before opens a
ticket with the portal's form (customer ID, problem, broadcaster, a file); the agent opens the
link of the notification the sink received, sees the form fields and the customer's file, and
answers from the page with a file of their own. The customer gets the answer by mail, at the
sink, and sees it in the portal. Times are shown in the browser's time zone. No console error
and no CSP violation is allowed on the way.

Screenshots of the queue and of the agent's ticket page go to $MAILGATE_SCREENSHOTS when set
(`MAILGATE_SCREENSHOTS=docs/screenshots pytest tests/e2e`), else to tmp.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailgate.clock import FixedClock
from tests.support.browser import CHROMIUM, chromium_page, screenshots_folder
from tests.support.conversation import AGENT, AGENT_NAME, CUSTOMER, Desk, addr
from tests.support.peers import Mailgate, SmtpSink
from tests.support.portal_web import (
    PASSWORD,
    activation_link,
    agent_says,
    customer_with_ticket,
)

pytest_plugins = ["tests.support.portal"]
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (.ci/run)"
    ),
]

playwright_api = pytest.importorskip("playwright.sync_api")
JEAN = addr(CUSTOMER)
LOG = b"2026-03-12 08:14:02 ERROR EAN missing for SKU 4711\n" * 20
PROCEDURE = b"%PDF-1.4\n% procedure: add the EAN column, then import again\n"


@pytest.fixture
def config_extra() -> str:
    return (
        'customer_id_label = "Id client Lengow"\n'
        'customer_id_pattern = "^[0-9]{4,8}$"\n'
        'problem_categories = ["Flux produits", "Commandes"]\n'
        'broadcasters = ["Amazon", "Cdiscount"]\n'
    )


@pytest.fixture
def page(portal: Mailgate) -> Iterator[object]:
    with chromium_page(1280, 760, timezone="Europe/Paris") as page:
        yield page


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return screenshots_folder(tmp_path)


def new_agent(portal: Mailgate, email: str, name: str) -> None:
    """What `mailgate agent add` does: the account, and an activation mail to set a password."""
    with portal.app.db.write() as session:
        agent = portal.app.accounts.add_agent(session, email, name)
        portal.app.accounts.queue_activation(session, agent, requested=True)


def test_an_agent_answers_from_the_page_with_a_file(
    portal: Mailgate,
    helpdesk: Desk,
    sink: SmtpSink,
    page,
    shots: Path,
    portal_clock: FixedClock,
    make_web,
):
    new_agent(portal, AGENT, AGENT_NAME)
    helpdesk.add_agent("bob@helpdesk.example", "Bob Leroy")
    # A few tickets from other customers, so the queue looks like a working day.
    older = helpdesk.open_ticket(
        sender="Marie Curie <marie@labo.example>", subject="Facture de mars introuvable"
    ).id
    portal_clock.advance(hours=3)
    helpdesk.open_ticket(
        sender="Paul Martin <paul@boutique.example>",
        subject="Changer l'adresse de livraison",
        rcpts=["billing@example.com"],
    )
    portal_clock.advance(hours=20)
    agent_says(helpdesk, older, "#assign bob@helpdesk.example\nLa facture est en pièce jointe.")
    portal_clock.advance(hours=2)

    # The customer wrote to us before (their account), and opens a ticket with the form.
    customer = make_web()
    customer_with_ticket(helpdesk, customer, subject="Question sur mon abonnement")
    portal_clock.advance(hours=1, minutes=10)
    opened = customer.submit(
        "/tickets/new",
        {
            "customer_id": "123456",
            "subject": "Le flux Amazon est rejeté",
            "description": "Bonjour,\ndepuis ce matin notre flux produits est rejeté par "
            "Amazon. Le journal d'import est joint.\nJean",
            "problem": "Flux produits",
            "broadcaster": "Amazon",
        },
        files=[("attachments", ("import-2026-03-12.log", LOG, "text/plain"))],
    )
    assert opened.status_code == 303
    ticket = int(re.search(r"created=(\d+)", opened.headers["location"]).group(1))
    portal_clock.advance(minutes=25)

    # The agent activates their account from the mail the sink received.
    page.goto(activation_link(sink, AGENT))
    page.get_by_label("Nouveau mot de passe").fill(PASSWORD)
    page.get_by_label("Confirmez le mot de passe").fill(PASSWORD)
    page.get_by_role("button", name="Activer mon compte").click()
    page.wait_for_url(re.compile(r"/tickets\?welcome=1$"))
    assert page.locator("h1").inner_text() == "File d'attente"
    page.goto(page.url.split("?")[0])
    rows = page.locator("table.queue tbody tr")
    assert rows.count() == 4
    assert "Le flux Amazon est rejeté" in rows.nth(0).inner_text()
    assert "Non assignée" in rows.nth(0).inner_text()
    # Times in the browser's zone (Paris), not the server's UTC.
    first_time = page.locator("table.queue time").first
    assert first_time.get_attribute("data-local") is not None
    # The server wrote it on the site's clock; the page's script rewrote it on the browser's
    # and kept the server's text as the tooltip.
    shown, tooltip = first_time.inner_text(), first_time.get_attribute("title") or ""
    assert re.search(r"\b2026\b.*\d{2}:\d{2}", shown) and "UTC" not in shown, shown
    assert tooltip and "UTC" not in tooltip
    page.screenshot(path=str(shots / "agent-queue.png"), full_page=True)

    # The link of the agent's notification, from the sink, opens the agent's page.
    notification = helpdesk.wait_mail("agent_notification", AGENT, ticket=ticket)
    url = re.search(r"https?://\S+/tickets/\d+", notification.text())
    assert url, notification.text()
    page.goto(url.group(0))
    page.wait_for_url(re.compile(rf"/tickets/{ticket}$"))
    side = page.locator("aside.agent-side").inner_text()
    for shown in ("123456", "Flux produits", "Amazon", "jean@client.example"):
        assert shown in side, shown
    customer_file = page.get_by_role("link", name="import-2026-03-12.log")
    assert customer_file.count() == 1
    got = page.request.get(portal.config.portal.base_url + customer_file.get_attribute("href"))
    assert got.status == 200 and got.body() == LOG

    # An internal note first: marked as such, for agents only.
    page.get_by_label("Note interne, pour les agents seulement").check()
    page.get_by_label("Message").fill("Grand compte : à traiter avant midi.")
    page.get_by_role("button", name="Envoyer", exact=True).click()
    page.wait_for_url(re.compile(rf"/tickets/{ticket}#latest$"))
    assert "NOTE INTERNE" in page.locator("#latest").inner_text().upper()
    assert "Non assignée" in page.locator("aside.agent-side").inner_text()  # a note takes nothing

    page.get_by_label("Message").fill(
        "Bonjour Jean,\n\nle flux est refusé pour des EAN manquants. La procédure pour les "
        "ajouter est jointe.\n\nAlice"
    )
    page.set_input_files(
        "#attachments",
        files=[{"name": "procedure-ean.pdf", "mimeType": "application/pdf", "buffer": PROCEDURE}],
    )
    assert "procedure-ean.pdf" in page.locator("[data-files]").inner_text()
    page.get_by_role("button", name="Envoyer", exact=True).click()
    page.wait_for_url(re.compile(rf"/tickets/{ticket}#latest$"))
    latest = page.locator("#latest")
    assert "EAN manquants" in latest.inner_text()
    assert "procedure-ean.pdf" in latest.locator("ul.files").inner_text()
    assert "En attente" in page.locator(".ticket-head").inner_text()
    assert AGENT_NAME in page.locator("aside.agent-side").inner_text()  # it took the ticket
    page.locator("h1").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "agent-ticket.png"), full_page=True)

    # The customer gets the answer by mail, and sees it in the portal.
    reply = helpdesk.wait_mail("agent_reply", JEAN, ticket=ticket)
    assert "EAN manquants" in reply.text()
    assert AGENT_NAME in str(reply.msg["From"])
    shown = customer.get(f"/tickets/{ticket}").text
    assert "EAN manquants" in shown and "procedure-ean.pdf" in shown
    assert "Grand compte" not in shown
    assert page.problems == []  # type: ignore[attr-defined]
    # The file itself on the customer's mail: assembled by services/assemble.py.
    sent_files = [part.get_filename() for part in reply.msg.iter_attachments()]
    assert sent_files == ["procedure-ean.pdf"], sent_files
