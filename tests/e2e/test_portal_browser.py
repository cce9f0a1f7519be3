"""The portal in a real browser: headless Chromium (Debian's package) driven by Playwright.

A customer mails a ticket over SMTP, opens the activation link from the mail, sets a password,
lands on "My activities", opens the ticket, answers with an attachment dropped onto the form,
and the agent's notification arrives in the SMTP sink. The sign-up captcha is solved by the
real widget, in the browser. No console error and no CSP violation is allowed on the way.

Screenshots of the dashboard and the ticket page, and of the new-request form in French and
English, go to $MAILGATE_SCREENSHOTS when set (the README's images:
`MAILGATE_SCREENSHOTS=docs/screenshots pytest tests/e2e`), else to tmp.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from mailgate.clock import FixedClock
from mailgate.store.models import Attachment, Message
from tests.support.browser import CHROMIUM, chromium_page, screenshots_folder
from tests.support.conversation import AGENT, CUSTOMER, Desk, addr
from tests.support.peers import Mailgate, SmtpSink
from tests.support.portal_web import PASSWORD, activation_link, agent_says

pytest_plugins = ["tests.support.portal"]
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (.ci/run)"
    ),
]

playwright_api = pytest.importorskip("playwright.sync_api")
JEAN = addr(CUSTOMER)


@pytest.fixture
def page(portal: Mailgate) -> Iterator[object]:
    with chromium_page(1200, 560, timezone="Europe/Paris") as page:
        yield page


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return screenshots_folder(tmp_path)


def drop(page, name: str, text: str) -> None:
    page.evaluate(
        """([name, text]) => {
            const files = new DataTransfer();
            files.items.add(new File([text], name, {type: 'text/plain'}));
            const zone = document.querySelector('[data-dropzone]');
            for (const type of ['dragenter', 'dragover', 'drop']) {
                zone.dispatchEvent(new DragEvent(type, {dataTransfer: files, bubbles: true,
                                                        cancelable: true}));
            }
        }""",
        [name, text],
    )


def test_from_mailed_ticket_to_reply_with_attachment(
    portal: Mailgate,
    helpdesk: Desk,
    sink: SmtpSink,
    page,
    shots: Path,
    portal_clock: FixedClock,
):
    helpdesk.add_agent()
    solved = helpdesk.open_ticket(subject="Facture de mars introuvable").id
    portal_clock.advance(hours=2)
    helpdesk.open_ticket(subject="Changer l'adresse de livraison")
    portal_clock.advance(hours=3)
    ticket = helpdesk.open_ticket(
        subject="Le flux Amazon est rejeté",
        body="Bonjour,\ndepuis ce matin notre flux produits est rejeté par Amazon.\n"
        "Pouvez-vous regarder ?\nMerci,\nJean Dupont\n",
    ).id
    portal_clock.advance(minutes=40)
    agent_says(helpdesk, solved, "#status solved\nLa facture est dans votre espace client.")
    portal_clock.advance(minutes=12)
    agent_says(
        helpdesk,
        ticket,
        "Bonjour Jean,\n\nle flux est refusé pour des EAN manquants. Pouvez-vous nous envoyer "
        "le journal d'import de ce matin ?\n\nAlice",
    )

    portal_clock.advance(minutes=25)
    # The activation link, straight from the mail the sink received.
    page.goto(activation_link(sink, JEAN))
    assert page.locator("h1").inner_text() == "Activer votre compte"
    page.get_by_label("Nouveau mot de passe").fill(PASSWORD)
    page.get_by_label("Confirmez le mot de passe").fill(PASSWORD)
    page.get_by_role("button", name="Activer mon compte").click()

    page.wait_for_url(re.compile(r"/tickets\?welcome=1$"))
    assert page.locator("h1").inner_text() == "Mes activités"
    rows = page.locator("table.tickets tbody tr")
    assert rows.count() == 3
    assert "En attente de votre réponse" in rows.nth(0).inner_text()
    assert "Le flux Amazon est rejeté" in rows.nth(0).inner_text()
    page.goto(page.url.split("?")[0])  # the dashboard as it is on a later visit
    page.screenshot(path=str(shots / "dashboard.png"), full_page=True)

    page.get_by_role("link", name="Le flux Amazon est rejeté").click()
    page.wait_for_url(re.compile(rf"/tickets/{ticket}$"))
    assert "EAN manquants" in page.locator("ol.conversation").inner_text()

    page.get_by_label("Votre message").fill(
        "Bonjour Alice,\nvoici le journal d'import de ce matin.\nJean"
    )
    # Drop files onto the attachment zone, as from a file manager. Too big a file is
    # flagged at once (the limit is 200 kB in tests), before any upload.
    drop(page, "enorme.bin", "x" * 300_000)
    assert "trop volumineux" in page.locator("[data-files]").inner_text()
    page.set_input_files("#attachments", [])
    drop(page, "import-2026.log", "ERROR EAN missing for SKU 4711\n")
    listed = page.locator("[data-files]").inner_text()
    assert "import-2026.log" in listed and "enorme.bin" not in listed
    page.get_by_role("button", name="Envoyer", exact=True).click()

    page.wait_for_url(re.compile(rf"/tickets/{ticket}#latest$"))
    latest = page.locator("#latest")
    assert "voici le journal d'import" in latest.inner_text()
    assert "import-2026.log" in latest.locator("ul.files").inner_text()
    assert "Ouvert" in page.locator(".ticket-head").inner_text()
    page.screenshot(path=str(shots / "ticket.png"), full_page=True)

    # The agent hears of it by mail, like for a reply by mail.
    notification = helpdesk.wait_mail("agent_notification", AGENT, ticket=ticket, count=2)
    assert "voici le journal d'import de ce matin." in notification.text()
    with portal.app.db.read() as session:
        names = session.exec(
            select(Attachment.filename).join(Message).where(Message.channel == "portal")
        ).all()
    assert names == ["import-2026.log"]

    # The same form in both languages (issue 15), refused for its customer ID with a file
    # chosen: the rest kept, the file named, sizes in each language's units.
    refused_form(page, shots / "new-ticket-fr.png", "Envoyer")
    assert "Cet identifiant n'a pas le bon format : attendu" in page.content()
    assert "choisissez-les à nouveau (journal.log)" in page.content()
    page.select_option("#lang-switch", "en")  # the footer's switcher
    page.get_by_role("button", name="Choisir", exact=True).click()
    page.wait_for_url(re.compile(r"/tickets/new$"))
    assert page.locator("html").get_attribute("lang") == "en"
    refused_form(page, shots / "new-ticket-en.png", "Submit")
    assert "This ID is not in the expected format" in page.content()
    assert "choose them again (journal.log)" in page.content()
    page.goto(page.url.replace("/tickets/new", "/tickets"))
    assert page.locator("h1").inner_text() == "My activities"
    listing = page.locator("table.tickets").inner_text()
    assert "Solved" in listing and "Open" in listing and "Dec" in listing
    page.screenshot(path=str(shots / "dashboard-en.png"), full_page=True)
    # The browser logs the two refusals (400) as console errors: those, and nothing else.
    refusals = ["the server responded with a status of 400" in p for p in page.problems]  # type: ignore[attr-defined]
    assert refusals == [True, True], page.problems  # type: ignore[attr-defined]


def refused_form(page, shot: Path, submit: str) -> None:
    """/tickets/new filled in with a customer ID too long and a file dropped, sent: the page
    that asks for the ID again."""
    page.goto(page.url.split("/tickets")[0] + "/tickets/new")
    page.fill("#customer_ref", "AB-" + "1" * 40)
    page.fill("#subject", "Amazon feed rejected / Flux Amazon rejeté")
    page.fill("#description", "EAN missing for SKU 4711.\nEAN manquant pour le SKU 4711.")
    page.select_option("#problem", index=3)
    drop(page, "journal.log", "ERROR EAN missing for SKU 4711\n" * 900)
    listed = page.locator("[data-files]").inner_text()
    lang = page.locator("html").get_attribute("lang")
    assert ("27 Ko" if lang == "fr" else "27 KB") in listed, listed  # the page's own units
    # The page's own words for choosing files, not the browser's "Choose Files".
    chooser = {"fr": "Choisir des fichiers", "en": "Choose files"}[str(lang)]
    assert page.get_by_role("button", name=chooser, exact=True).is_visible()
    page.get_by_role("button", name=submit, exact=True).click()
    page.wait_for_load_state()
    assert page.locator("#subject").input_value().startswith("Amazon feed rejected")
    page.screenshot(path=str(shot), full_page=True)


def test_sign_up_with_the_captcha_widget(portal: Mailgate, sink: SmtpSink, page):
    page.goto(portal.config.portal.base_url + "/signup")
    page.get_by_label("Nom").fill("Marie Curie")
    page.get_by_label("Adresse e-mail").fill("marie@client.example")
    # The widget's own checkbox: it fetches a challenge and solves it in a Web Worker.
    page.get_by_label("Je ne suis pas un robot").click(force=True)
    page.wait_for_function(
        "() => (document.querySelector('input[name=altcha]') || {}).value?.length > 20",
        timeout=60_000,
    )
    page.get_by_role("button", name="S'inscrire").click()
    page.wait_for_load_state()
    assert "nous avons envoyé un e-mail" in page.locator("[role=status]").inner_text()
    mail = sink.wait_kind("activation", to="marie@client.example")[0]
    assert "/activate/" in mail.text()
    assert page.problems == []  # type: ignore[attr-defined]
