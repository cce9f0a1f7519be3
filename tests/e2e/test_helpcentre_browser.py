"""The help centre in a real browser (issue 13): headless Chromium driven by Playwright.

A customer opens the home page, searches with a typo, reads the article, then starts a new
request: while the subject is typed, articles are suggested (static/help.js calling
/help/suggest); one of them, opened, "solved my problem", and the counters say so. An agent
writes an article with the live preview. No console error and no CSP violation on the way.

Screenshots (help-home, help-search, help-article, help-suggestions) go to
$MAILGATE_SCREENSHOTS when set (`MAILGATE_SCREENSHOTS=docs/screenshots pytest tests/e2e`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.test_portal_browser import CHROMIUM, page, shots  # noqa: F401 (fixtures)
from tests.support.conversation import AGENT, AGENT_NAME, CUSTOMER, Desk, addr
from tests.support.peers import Mailgate, SmtpSink
from tests.support.portal_web import PASSWORD, activation_link

pytest_plugins = ["tests.support.portal"]
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs chromium at /usr/bin/chromium"),
]

ARTICLES = Path(__file__).resolve().parent.parent / "data" / "helpcentre"
JEAN = addr(CUSTOMER)


@pytest.fixture
def config_extra() -> str:
    return 'customer_id_label = "Id client"\nproblem_categories = ["Flux produits", "Commandes"]\n'


def metric(page, base: str, name: str) -> float:  # noqa: F811
    text = page.request.get(base + "/metrics").text()
    found = re.search(rf"^mailgate_{name}(?:_total)? (\S+)$", text, re.M)
    assert found, name
    return float(found.group(1))


def test_search_read_and_deflect_a_request(
    portal: Mailgate,
    helpdesk: Desk,
    sink: SmtpSink,
    page,  # noqa: F811
    shots: Path,  # noqa: F811
):
    portal.cli("articles", "import", str(ARTICLES))
    helpdesk.open_ticket(subject="Flux Amazon rejeté")
    page.goto(activation_link(sink, JEAN))
    page.get_by_label("Nouveau mot de passe").fill(PASSWORD)
    page.get_by_label("Confirmez le mot de passe").fill(PASSWORD)
    page.get_by_role("button", name="Activer mon compte").click()
    page.wait_for_url(re.compile(r"/tickets\?welcome=1$"))
    base = page.url.split("/tickets")[0]

    # Others read some articles: "most read" has something to show.
    for slug in ("reinitialiser-mot-de-passe", "reinitialiser-mot-de-passe", "flux-produits"):
        page.request.get(f"{base}/articles/{slug}")

    page.goto(base + "/")
    assert page.locator("h1").inner_text() == "Comment pouvons-nous vous aider ?"
    assert page.get_by_role("heading", name="Les plus lus").is_visible()
    assert page.locator("#main").get_by_role("link", name="Envoyer une demande").is_visible()
    page.screenshot(path=str(shots / "help-home.png"), full_page=True)

    # A search with a typo still finds the article, its passage highlighted.
    page.get_by_role("searchbox").fill("mot de pase")
    page.get_by_role("searchbox").press("Enter")
    page.wait_for_url(re.compile(r"/search\?q=mot\+de\+pase$"))
    first = page.locator(".help-hits li").first
    assert first.locator("a").inner_text() == "Réinitialiser votre mot de passe"
    assert first.locator("mark").count() >= 1
    page.screenshot(path=str(shots / "help-search.png"), full_page=True)

    first.locator("a").click()
    page.wait_for_url(re.compile(r"/articles/reinitialiser-mot-de-passe$"))
    assert page.get_by_role("link", name="Retour au début de l'article").is_visible()
    assert page.get_by_role("heading", name="Articles liés").is_visible()
    page.screenshot(path=str(shots / "help-article.png"), full_page=True)

    # The new-request form suggests articles as the subject is typed.
    page.goto(base + "/tickets/new")
    page.get_by_label("Sujet").press_sequentially("Mot de passe oub", delay=30)
    suggestion = page.locator("#help-suggestions li a").first
    suggestion.wait_for(state="visible")
    assert suggestion.inner_text() == "Réinitialiser votre mot de passe"
    assert page.locator("#help-suggestions mark").count() >= 1
    page.screenshot(path=str(shots / "help-suggestions.png"), full_page=True)

    with page.context.expect_page() as opened:
        suggestion.click()
    article = opened.value
    article.wait_for_load_state()
    article.get_by_role("button", name="Cet article a résolu mon problème").click()
    article.wait_for_url(re.compile(r"/articles/reinitialiser-mot-de-passe/solved$"))
    assert article.locator("h1").inner_text() == "Ravis d'avoir pu vous aider"

    assert metric(page, base, "helpcentre_suggestion_shown") >= 1
    assert metric(page, base, "helpcentre_suggestion_clicked") == 1
    assert metric(page, base, "helpcentre_solved_by_article") == 1
    assert metric(page, base, "helpcentre_search") == 1
    assert page.problems == []  # type: ignore[attr-defined]


def test_an_agent_writes_with_the_live_preview(portal: Mailgate, page):  # noqa: F811
    with portal.app.db.write() as session:
        account = portal.app.accounts.add_agent(session, AGENT, AGENT_NAME)
        portal.app.accounts.set_password(session, account, PASSWORD)
    base = portal.config.portal.base_url
    page.goto(base + "/login")
    page.get_by_label("Adresse e-mail").fill(AGENT)
    page.get_by_label("Mot de passe").fill(PASSWORD)
    page.get_by_role("button", name="Se connecter").click()
    page.wait_for_url(re.compile(r"/tickets$"))

    page.goto(base + "/help/articles/new")
    page.get_by_label("Titre").fill("Exporter mes commandes")
    page.get_by_label("Adresse (slug)").fill("exporter-commandes")
    page.get_by_label("Rubrique").fill("Commandes")
    page.get_by_label("Statut").select_option("published")
    page.get_by_label("Texte (Markdown)").fill(
        "## Export\n\nCliquez sur **Exporter**.\n\n<script>alert(1)</script>"
    )
    preview = page.locator("#help-preview")
    preview.locator("strong").wait_for(state="visible")  # the live preview, no button pressed
    assert preview.locator("h2").inner_text() == "Export"
    assert preview.locator("script").count() == 0
    page.get_by_role("button", name="Enregistrer").click()
    page.wait_for_url(re.compile(r"/articles/exporter-commandes$"))
    assert page.locator("h1").inner_text() == "Exporter mes commandes"
    assert page.problems == []  # type: ignore[attr-defined]
