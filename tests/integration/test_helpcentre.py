"""The help centre (issue 13) over real HTTP against `serve`, on SQLite and PostgreSQL:
search relevance on a fixed set of queries (French and English), the CLI's import/export
round trip, sanitising, visibility, deflection (suggestions, the confirmation mail's
articles, a customer closing their own request) and the counters in /metrics.

To add a relevance case when a customer's query found nothing: write or fix the article
(tests/data/helpcentre/ holds the fixture articles), then add (query, locale, expected first
slug) to RELEVANCE below.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from mailgate.store.models import Ticket, TicketEvent
from tests.support.conversation import AGENT, AGENT_NAME, CUSTOMER, Desk, addr
from tests.support.peers import Mailgate, SmtpSink
from tests.support.portal_web import PASSWORD, Web, customer_with_ticket, hidden_fields

pytestmark = pytest.mark.postgres  # the database engine matters here: run on both

pytest_plugins = ["tests.support.portal"]

ARTICLES = Path(__file__).resolve().parent.parent / "data" / "helpcentre"
JEAN = addr(CUSTOMER)
HIT = re.compile(r'<a class="help-hit-title" href="/articles/([a-z0-9-]+)">')

# (query, visitor's language, the slug that must come first; None: nothing found)
RELEVANCE: list[tuple[str, str, str | None]] = [
    ("réinitialiser", "fr", "reinitialiser-mot-de-passe"),
    ("reinitialisation", "fr", "reinitialiser-mot-de-passe"),  # stem, no accents
    ("RÉINITIALISATION", "fr", "reinitialiser-mot-de-passe"),  # case
    ("mot de pase", "fr", "reinitialiser-mot-de-passe"),  # one typo
    ("mot de passe oublie", "fr", "reinitialiser-mot-de-passe"),
    ('"mot de passe"', "fr", "reinitialiser-mot-de-passe"),  # phrase
    ("réinit*", "fr", "reinitialiser-mot-de-passe"),  # prefix
    ("activer mon compte", "fr", "activer-mon-compte"),
    ("activation", "fr", "activer-mon-compte"),
    ("comment créer un ticket", "fr", "creer-un-ticket"),
    ("creer ticket", "fr", "creer-un-ticket"),
    ("flux produits pas a jour", "fr", "flux-produits"),
    ("catalogue", "fr", "flux-produits"),
    ("ampazon", "fr", "flux-produits"),  # a typo in a marketplace's name
    ("reset password", "en", "reset-your-password"),
    ("pasword", "en", "reset-your-password"),
    ("forgotten password", "en", "reset-your-password"),
    ("activate account", "en", "activate-your-account"),
    ("submitting requests", "en", "submit-a-request"),
    ('"customer ID"', "en", "submit-a-request"),
    ("reinitialiser", "en", "reinitialiser-mot-de-passe"),  # nothing in English: French
    ("facturation", "fr", None),  # only a draft mentions it
    ("invoices", "en", None),  # signed-in customers only
    ("xylophone", "fr", None),
]


@pytest.fixture
def config_extra() -> str:
    return 'customer_id_pattern = "^[0-9]{4,8}$"\nproblem_categories = ["Flux produits"]\n'


@pytest.fixture
def articles(portal: Mailgate) -> Mailgate:
    result = portal.cli("articles", "import", str(ARTICLES))
    assert result.stdout.decode().startswith("10 created")
    return portal


@pytest.fixture
def agent_web(portal: Mailgate, make_web: Callable[..., Web]) -> Web:
    with portal.app.db.write() as session:
        account = portal.app.accounts.add_agent(session, AGENT, AGENT_NAME)
        portal.app.accounts.set_password(session, account, PASSWORD)
    browser = make_web()
    assert browser.submit("/login", {"email": AGENT, "password": PASSWORD}).status_code == 303
    return browser


def first_hits(web: Web, query: str, locale: str) -> list[str]:
    page = web.get("/search", params={"q": query}, headers={"Accept-Language": locale})
    assert page.status_code == 200
    return HIT.findall(page.text)


def metric(web: Web, name: str) -> float:
    found = re.search(rf"^mailgate_{name}(?:_total)? (\S+)$", web.get("/metrics").text, re.M)
    assert found, name
    return float(found.group(1))


def test_relevance_on_a_fixed_set_of_queries(articles: Mailgate, web: Web):
    wrong = []
    for query, locale, expected in RELEVANCE:
        hits = first_hits(web, query, locale)
        first = hits[0] if hits else None
        if first != expected:
            wrong.append(f"{query!r} ({locale}): expected {expected}, got {hits[:3]}")
    assert not wrong, "\n".join(wrong)


def test_results_highlight_the_matching_passage(articles: Mailgate, web: Web):
    page = web.get("/search", params={"q": "réinitialiser"}).text
    assert "Voici la marche à suivre pour sa <mark>réinitialisation</mark>." in page
    typo = web.get("/search", params={"q": "mot de pase"}).text
    assert "<mark>passe</mark>" in typo
    # What the visitor typed comes back escaped, never as markup.
    evil = web.get("/search", params={"q": '<script>alert(1)</script> "mot'}).text
    assert "<script>alert(1)" not in evil and "&lt;script&gt;" in evil


def test_import_export_round_trip_is_idempotent(articles: Mailgate, tmp_path: Path):
    again = articles.cli("articles", "import", str(ARTICLES)).stdout.decode()
    assert again.strip() == "0 created, 0 updated, 10 unchanged"
    out = tmp_path / "export"
    articles.cli("articles", "export", str(out))
    exported = sorted(p.name for p in out.glob("*.md"))
    assert exported == sorted(p.name for p in ARTICLES.glob("*.md"))
    # The exported folder imports as "nothing changed", and says the same things.
    assert (
        articles.cli("articles", "import", str(out))
        .stdout.decode()
        .startswith("0 created, 0 updated, 10 unchanged")
    )
    text = (out / "reset-your-password.md").read_text()
    assert text.startswith("---\ntitle: Reset your password\nslug: reset-your-password\n")
    # An edited file updates its article (by slug), and search follows.
    edited = text.replace("valid for one hour", "valid for one hour. Mention the zanzibar code")
    (out / "reset-your-password.md").write_text(edited)
    assert "1 updated" in articles.cli("articles", "import", str(out)).stdout.decode()
    web = Web(articles.config.portal.base_url)
    try:
        assert first_hits(web, "zanzibar", "en") == ["reset-your-password"]
    finally:
        web.close()


def test_a_bad_file_imports_nothing(portal: Mailgate, tmp_path: Path):
    (tmp_path / "good.md").write_text("---\ntitle: Good\n---\nfine\n")
    (tmp_path / "bad.md").write_text("---\ntitle: Bad\nvisibility: everyone\n---\nno\n")
    failed = portal.cli("articles", "import", str(tmp_path), check=False)
    assert failed.returncode == 1
    assert failed.stderr.decode().strip() == "mailgate: bad.md: visibility.invalid"
    assert json.loads(portal.cli("articles", "list", "--json").stdout) == []


def test_articles_list_json_shape(articles: Mailgate):
    rows = json.loads(articles.cli("articles", "list", "--json", "--locale", "en").stdout)
    assert [r["slug"] for r in rows] == [
        "billing-invoices",
        "activate-your-account",
        "reset-your-password",
        "submit-a-request",
    ]  # by section, then title
    first = rows[0]
    assert set(first) >= {
        "slug",
        "title",
        "section",
        "locale",
        "visibility",
        "status",
        "updated_at",
    }
    assert first["visibility"] == "customers" and first["status"] == "published"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", first["updated_at"])
    table = articles.cli("articles", "list").stdout.decode().splitlines()
    assert table[0].split()[:3] == ["SLUG", "TITLE", "SECTION"]


def test_home_page_sections_most_read_and_a_request_button(articles: Mailgate, web: Web):
    home = web.get("/", headers={"Accept-Language": "fr"})
    assert home.status_code == 200
    page = home.text
    assert 'role="search"' in page and 'action="/search"' in page
    for section in ("Mon compte", "Tickets", "Flux produits"):
        assert f"<h2>{section}</h2>" in page
    assert "Envoyer une demande" in page and 'href="/help/ask"' in page
    assert "facturation-brouillon" not in page  # a draft
    assert "supprimer-un-ticket" not in page  # signed-in customers only
    assert "Les plus lus" not in page  # nobody read anything yet
    for _ in range(2):
        assert web.get("/articles/flux-produits").status_code == 200
    assert web.get("/articles/creer-un-ticket").status_code == 200
    page = web.get("/").text
    popular = page.split("Les plus lus")[1].split("</ol>")[0]
    assert popular.index("flux-produits") < popular.index("creer-un-ticket")
    english = web.get("/", headers={"Accept-Language": "en"}).text
    assert "Submit a request" in english and "<h2>My account</h2>" in english


def test_an_article_page(articles: Mailgate, web: Web):
    page = web.get("/articles/reinitialiser-mot-de-passe").text
    # The article's words carry its language; the page's own labels are the visitor's.
    assert '<h1 lang="fr">Réinitialiser votre mot de passe</h1>' in page
    assert '<article class="help-article card">' in page
    assert "<ol>" in page and "<li>Cliquez sur « Se connecter »" in page  # Markdown rendered
    assert 'id="top"' in page and 'href="#top">Retour au début de l&#39;article' in page
    related = page.split("Articles liés")[1].split("</section>")[0]
    assert "/articles/activer-mon-compte" in related
    assert "/articles/reinitialiser-mot-de-passe" not in related
    assert web.get("/articles/no-such-article").status_code == 404
    assert web.get("/articles/Bad..Slug").status_code == 404
    # The search box is on every page, this one included.
    assert 'id="help-q"' in page


def test_visibility_public_customers_and_drafts(
    articles: Mailgate, helpdesk: Desk, web: Web, make_web, agent_web: Web
):
    anonymous = make_web()
    # Signed-in customers only: signed out, sign in first; it is in no public search.
    gated = anonymous.get("/articles/supprimer-un-ticket")
    assert gated.status_code == 303
    assert gated.headers["location"].endswith("/login?next=/articles/supprimer-un-ticket")
    assert first_hits(anonymous, "supprimer", "fr") == []
    # A draft is for agents only: 404 for everyone else, never in search.
    assert anonymous.get("/articles/facturation-brouillon").status_code == 404
    customer_with_ticket(helpdesk, web)
    assert web.get("/articles/supprimer-un-ticket").status_code == 200
    assert first_hits(web, "supprimer", "fr") == ["supprimer-un-ticket"]
    assert web.get("/articles/facturation-brouillon").status_code == 404
    assert first_hits(web, "grille", "fr") == []
    draft = agent_web.get("/articles/facturation-brouillon")
    assert draft.status_code == 200 and "Brouillon" in draft.text


def test_agents_write_articles_rendered_safe(articles: Mailgate, agent_web: Web, web: Web):
    body = (
        "# Titre\n\nDu **gras** et <script>alert('md')</script> du HTML brut.\n\n"
        "[un lien](javascript:alert(1)) et [un autre](https://example.com/doc)\n\n"
        '<img src="x" onerror="alert(2)">\n\n![image](https://tracker.example/p.gif)\n'
    )
    form = {
        "title": "Imprimer une étiquette",
        "slug": "imprimer-etiquette",
        "section": "Commandes",
        "locale": "fr",
        "visibility": "public",
        "status": "published",
        "body": body,
    }
    preview = agent_web.submit(
        "/help/articles/new", {**form, "action": "preview"}, "/help/articles"
    )
    assert preview.status_code == 200 and "<strong>gras</strong>" in preview.text
    saved = agent_web.submit("/help/articles/new", {**form, "action": "save"}, "/help/articles")
    assert saved.status_code == 303, saved.text
    page = web.get("/articles/imprimer-etiquette").text
    article = page.split('<div class="help-body"')[1].split(">", 1)[1].split("</div>")[0]
    assert "<strong>gras</strong>" in article
    # Raw HTML shows as text, never as markup; no javascript: link, no remote image.
    assert "<script" not in article and "&lt;script&gt;alert('md')" in article
    assert re.search(r"<[^>]*\bon\w+=", article) is None
    assert 'href="javascript' not in article and "tracker.example" not in article
    assert 'href="https://example.com/doc"' in article
    assert first_hits(web, "etiquette", "fr") == ["imprimer-etiquette"]
    # The live preview answers agents only, with the same sanitised rendering.
    fields = hidden_fields(agent_web.get("/help/articles/new").text)
    live = agent_web.post("/help/preview", data={"csrf": fields["csrf"], "body": body})
    assert live.status_code == 200 and "<script" not in live.text
    assert web.post("/help/preview", data={"body": body}).status_code == 403
    # Slugs are unique; a wrong one is refused with a reason.
    again = agent_web.submit("/help/articles/new", {**form, "action": "save"}, "/help/articles")
    assert again.status_code == 400 and "déjà cette adresse" in html.unescape(again.text)
    # Customers never reach the editor.
    assert web.get("/help/articles").status_code in (303, 404)


def test_confirmation_mail_lists_matching_articles(articles: Mailgate, helpdesk: Desk):
    opened = helpdesk.open_ticket(subject="Mot de passe oublié", body="Je ne peux plus entrer.")
    text = opened.confirmation.text()
    assert "Ces articles répondent peut-être déjà à votre question" in text
    links = re.findall(r"https?://\S+/articles/([a-z0-9-]+)\?ticket=(\d+)", text)
    assert links[0] == ("reinitialiser-mot-de-passe", str(opened.id))
    assert len(links) <= 3
    unrelated = helpdesk.open_ticket(subject="Xylophone", sender="Paul <paul@autre.example>")
    assert "/articles/" not in unrelated.confirmation.text()


def test_this_article_solved_my_problem_from_the_confirmation(
    articles: Mailgate, helpdesk: Desk, web: Web, sink: SmtpSink
):
    ticket_id = customer_with_ticket(helpdesk, web, subject="Réinitialiser mon mot de passe")
    path = f"/articles/reinitialiser-mot-de-passe?ticket={ticket_id}"
    page = web.get(path).text
    assert "Cet article a résolu mon problème" in page
    solved = web.submit(path, {}, "/articles/reinitialiser-mot-de-passe/solved")
    assert solved.status_code == 303 and solved.headers["location"].endswith(
        f"/tickets/{ticket_id}"
    )
    with articles.app.db.read() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None and ticket.status == "solved"
        events = session.exec(
            TicketEvent.__table__.select().where(TicketEvent.ticket_id == ticket_id)  # type: ignore[attr-defined]
        ).all()
    assert any(e.kind == "solved_by_customer" and "reinitialiser" in e.detail for e in events)
    assert metric(web, "helpcentre_solved_by_article") == 1
    assert metric(web, "helpcentre_suggestion_clicked") == 2  # opened twice (submit reloads)


def test_my_question_is_answered(articles: Mailgate, helpdesk: Desk, web: Web, make_web):
    ticket_id = customer_with_ticket(helpdesk, web)
    page = web.get(f"/tickets/{ticket_id}").text
    assert f'href="/tickets/{ticket_id}/solve"' in page
    done = web.submit(f"/tickets/{ticket_id}/solve", {})
    assert done.status_code == 303
    assert 'class="status status-solved"' in web.get(f"/tickets/{ticket_id}").text
    assert f"/tickets/{ticket_id}/solve" not in web.get(f"/tickets/{ticket_id}").text
    assert metric(web, "helpcentre_solved_by_customer") == 1
    # Someone else's request: not found, nothing changes.
    other = helpdesk.open_ticket(sender="Paul <paul@autre.example>", subject="Autre")
    refused = web.submit(f"/tickets/{ticket_id}/solve", {}, f"/tickets/{other.id}/solve")
    assert refused.status_code == 404
    with articles.app.db.read() as session:
        ticket = session.get(Ticket, other.id)
        assert ticket is not None and ticket.status == "new"


def test_search_first_suggestions_and_counters(articles: Mailgate, web: Web, agent_web: Web):
    ask = web.get("/help/ask", params={"q": "mot de passe oublié"})
    assert ask.status_code == 200
    assert HIT.findall(ask.text)[0] == "reinitialiser-mot-de-passe"
    assert "/tickets/new?subject=mot+de+passe+oubli%C3%A9" in ask.text
    typed = web.get("/help/suggest", params={"q": "mot de pas"}).json()["articles"]
    assert typed[0]["url"] == "/articles/reinitialiser-mot-de-passe?suggested=1"
    assert "<mark>" in typed[0]["passage"] and "<script" not in typed[0]["passage"]
    assert web.get("/help/suggest", params={"q": "mo"}).json() == {"articles": []}
    web.get("/search", params={"q": "xylophone orange"})
    web.get("/search", params={"q": "Xylophone  ORANGE"})
    web.get("/search", params={"q": "password"})
    assert metric(web, "helpcentre_search") == 3
    assert metric(web, "helpcentre_search_empty") == 2
    assert metric(web, "helpcentre_suggestion_shown") == 2
    # The agents see what customers looked for and did not find.
    desk = agent_web.get("/help/articles").text
    assert "xylophone orange" in desk and "× 2" in desk


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64  # served as stored: only its name gives its type
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


def test_article_images_files_drafts_and_deletion(
    articles: Mailgate, agent_web: Web, web: Web, make_web, tmp_path: Path
):
    form = {
        "title": "Captures du formulaire",
        "slug": "captures-formulaire",
        "section": "Demandes",
        "locale": "fr",
        "visibility": "public",
        "status": "draft",
        "body": "Le zorglub :\n\n![Le formulaire](Formulaire.png)\n\n[Le guide](guide.pdf)\n",
        "action": "save",
    }
    files = [
        ("files", ("Formulaire.PNG", PNG, "image/png")),
        ("files", ("Guide.pdf", b"%PDF-1.4 guide", "application/pdf")),
        ("files", ("évil.svg", SVG, "image/svg+xml")),  # an image type that can carry script
    ]
    saved = agent_web.submit("/help/articles/new", form, "/help/articles", files=files)
    assert saved.status_code == 303, saved.text
    base = "/articles/captures-formulaire"
    # A draft's files, like the draft, are for agents only; agents find drafts in search.
    anonymous = make_web()
    assert anonymous.get(f"{base}/files/formulaire.png").status_code == 404
    assert agent_web.get(f"{base}/files/formulaire.png").status_code == 200
    assert first_hits(agent_web, "zorglub", "fr") == ["captures-formulaire"]
    assert first_hits(web, "zorglub", "fr") == []
    editor = agent_web.get("/help/articles/captures-formulaire/edit").text
    assert "![formulaire.png](formulaire.png)" in editor and "evil.svg" in editor

    published = agent_web.submit(
        "/help/articles/captures-formulaire/edit",
        {**form, "status": "published"},
        "/help/articles",
    )
    assert published.status_code == 303
    page = anonymous.get(base).text
    body = page.split('<div class="help-body"')[1].split(">", 1)[1].split("</div>")[0]
    assert f'<img src="{base}/files/formulaire.png" alt="Le formulaire">' in body
    assert f'href="{base}/files/guide.pdf"' in body
    image = anonymous.get(f"{base}/files/formulaire.png")
    assert image.status_code == 200 and image.content == PNG
    assert image.headers["content-type"] == "image/png"
    assert image.headers["content-disposition"].startswith("inline")
    assert image.headers["x-content-type-options"] == "nosniff"
    svg = anonymous.get(f"{base}/files/evil.svg")
    assert svg.headers["content-type"] == "application/octet-stream"
    assert svg.headers["content-disposition"].startswith("attachment")
    assert "sandbox" in svg.headers["content-security-policy"]
    for wrong in ("nothing.png", "..%2F..%2Fsecret", "%2Fetc%2Fpasswd"):
        assert anonymous.get(f"{base}/files/{wrong}").status_code == 404

    # Export puts the files beside the Markdown; importing them again changes nothing.
    out = tmp_path / "export"
    articles.cli("articles", "export", str(out))
    assert (out / "captures-formulaire" / "formulaire.png").read_bytes() == PNG
    again = articles.cli("articles", "import", str(out)).stdout.decode().strip()
    assert again == "0 created, 0 updated, 11 unchanged"

    # A file removed in the editor is gone; the others stay.
    removed = agent_web.submit(
        "/help/articles/captures-formulaire/edit",
        {**form, "status": "published", "remove_files": "guide.pdf"},
        "/help/articles",
    )
    assert removed.status_code == 303
    assert anonymous.get(f"{base}/files/guide.pdf").status_code == 404
    assert anonymous.get(f"{base}/files/formulaire.png").status_code == 200

    # Deleting asks first, for agents only; then the article, its files and its words go.
    assert web.get("/help/articles/captures-formulaire/delete").status_code in (303, 404)
    confirm = agent_web.get("/help/articles/captures-formulaire/delete")
    assert confirm.status_code == 200 and "Captures du formulaire" in html.unescape(confirm.text)
    gone = agent_web.submit(
        "/help/articles/captures-formulaire/delete", {}, "/help/articles/captures-formulaire/delete"
    )
    assert gone.status_code == 303 and "deleted=captures-formulaire" in gone.headers["location"]
    assert anonymous.get(base).status_code == 404
    assert anonymous.get(f"{base}/files/formulaire.png").status_code == 404
    assert first_hits(agent_web, "zorglub", "fr") == []
    slugs = [a["slug"] for a in json.loads(articles.cli("articles", "list", "--json").stdout)]
    assert "captures-formulaire" not in slugs and len(slugs) == 10
    missing = articles.cli("articles", "delete", "captures-formulaire", check=False)
    assert missing.returncode == 64  # EX_USAGE, as for every unknown name on the command line
    assert missing.stderr.decode().strip() == "mailgate: no article captures-formulaire"
    assert articles.cli("articles", "delete", "flux-produits").stdout == b"deleted flux-produits\n"
    assert first_hits(web, "catalogue", "fr") == []
