"""Issue 15: every page in every language, as a visitor, a customer and an agent, over real
HTTP. A page fails on a catalogue key shown raw (a key missing from the catalogue comes out as
itself), on a text of another language's catalogue (a word the page took from the wrong
table, or hard-coded), and on a wrong `<html lang>`.

The catalogues and mail templates themselves are checked without a server in
tests/unit/test_i18n_catalogues.py."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from mailgate.app import TEMPLATES
from tests.support.conversation import AGENT, AGENT_NAME, Desk
from tests.support.peers import Mailgate
from tests.support.portal_web import PASSWORD, Web, customer_with_ticket, hidden_fields

pytest_plugins = ["tests.support.portal"]

ROOT = Path(__file__).resolve().parents[2]
CATALOGUES = {
    p.stem: json.loads(p.read_text(encoding="utf-8"))
    for p in sorted((TEMPLATES / "portal" / "i18n").glob("*.json"))
}
LOCALES = tuple(CATALOGUES)
# Keys as the templates and the code name them: any of them in a page is a key shown raw.
KEY = re.compile(r"(?<![\w.@/-])([a-z][a-z0-9_]*(?:\.[a-z0-9_-]+)+)(?![\w@/-])")
ALL_KEYS = set().union(*CATALOGUES.values())
# Texts meant to be in their own language on every page: each language's name in the switcher.
EVERY_LANGUAGE = {"language.name"}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 100  # 25 KB: "25 Ko" / "25 KB"


@pytest.fixture
def config_extra() -> str:
    return (
        'customer_id_label = { fr = "Id client", en = "Customer ID" }\n'
        'problem_categories = [{ fr = "Flux produits", en = "Product feeds" }, '
        '{ fr = "Commandes", en = "Orders" }]\n'
        'broadcasters = ["Amazon", "Cdiscount"]\n'
    )


def visible(page: str, content: bool = True) -> str:
    """What a reader sees or hears: text, and the attributes a browser shows or reads out.
    `content=False` leaves out what people wrote in their own language: an article's title,
    section and body (each marked with its `lang`), search hits and links to articles, which
    list articles in every language."""
    page = re.sub(r"(?s)<(script|style)\b.*?</\1>", " ", page)
    if not content:
        page = re.sub(r'(?s)<(h1|span|div)\b[^>]*\blang="[a-z]+"[^>]*>.*?</\1>', " ", page)
        page = re.sub(r'(?s)<ol class="help-hits">.*?</ol>', " ", page)
        page = re.sub(r'(?s)<a\b[^>]*href="[^"]*/articles/[^"]*"[^>]*>.*?</a>', " ", page)
        page = re.sub(r"(?s)<textarea\b[^>]*>.*?</textarea>", " ", page)  # what was typed
        page = re.sub(r'(?s)<div class="help-body help-preview".*?</div>', " ", page)
    said = re.findall(r'\b(?:title|placeholder|aria-label|alt|data-too-big)="([^"]*)"', page)
    text = re.sub(r"<[^>]+>", " ", page)
    return html.unescape(" ".join([text, *said]))


def foreign_texts(locale: str) -> dict[str, str]:
    """Texts of the other catalogues a page in `locale` must not show (long enough to tell,
    without placeholders, and not also this locale's own words)."""
    own = set(CATALOGUES[locale].values())
    found = {}
    for other, table in CATALOGUES.items():
        for key, text in table.items():
            if other == locale or key in EVERY_LANGUAGE or "{" in text or len(text) < 12:
                continue
            if text not in own and text != CATALOGUES[locale][key]:
                found[text] = f"{other}:{key}"
    return found


FOREIGN = {lang: foreign_texts(lang) for lang in LOCALES}


def check(page: str, locale: str, where: str) -> None:
    assert f'<html lang="{locale}">' in page, where
    seen = visible(page)
    raw = sorted({k for k in KEY.findall(seen) if k in ALL_KEYS or k.split(".")[0] in _PREFIXES})
    assert not raw, f"{where}: keys shown raw: {raw}"
    words = visible(page, content=False)
    leaks = sorted(
        f"{origin} {text!r}" for text, origin in FOREIGN[locale].items() if text in words
    )
    assert not leaks, f"{where} ({locale}): text of another language: {leaks}"


_PREFIXES = {key.split(".")[0] for key in ALL_KEYS}


def switch(web: Web, lang: str) -> None:
    """The footer's language switcher, as a person uses it (stored on the account when signed
    in, in a cookie otherwise)."""
    fields = hidden_fields(web.get("/").text)
    answer = web.post("/language", data={"csrf": fields["csrf"], "back": "/", "lang": lang})
    assert answer.status_code == 303, answer.text


def walk(web: Web, locale: str, pages: list[str], who: str) -> int:
    for path in pages:
        answer = web.get(path)
        assert answer.status_code == 200, (who, locale, path, answer.status_code)
        check(answer.text, locale, f"{who} GET {path}")
    return len(pages)


def refused(web: Web, locale: str, page: str, data: dict[str, str], action: str = "") -> None:
    """A form sent wrong: the page that says what to fix is in the language too."""
    answer = web.submit(page, data, action or None)
    assert answer.status_code in (400, 401, 422), (page, answer.status_code)
    check(answer.text, locale, f"refused POST {action or page}")


def test_every_page_in_every_language(
    portal: Mailgate, helpdesk: Desk, web: Web, make_web: Callable[..., Web]
) -> None:
    report = portal.app.portal.help.articles.import_dir(ROOT / "tests" / "data" / "helpcentre")
    assert report is not None
    ticket = customer_with_ticket(helpdesk, web, subject="Imprimante en panne")
    reply = web.submit(
        f"/tickets/{ticket}", {"body": "Voici une capture."}, f"/tickets/{ticket}/reply",
        files=[("attachments", ("capture.png", PNG, "image/png"))],
    )  # fmt: skip
    assert reply.status_code == 303, reply.text
    with portal.app.db.write() as session:
        agent = portal.app.accounts.add_agent(session, AGENT, AGENT_NAME)
        portal.app.accounts.set_password(session, agent, PASSWORD)
    desk = make_web()
    assert desk.submit("/login", {"email": AGENT, "password": PASSWORD}).status_code == 303
    visitor = make_web()

    public = ["/", "/login", "/signup", "/password/forgot", "/search?q=mot+de+passe",
              "/search?q=password", "/search?q=zzzqqq", "/help/ask?q=imprimante",
              "/articles/reinitialiser-mot-de-passe", "/articles/reset-your-password"]  # fmt: skip
    customer = ["/tickets", "/tickets/new", f"/tickets/{ticket}", f"/tickets/{ticket}/delete",
                f"/tickets/{ticket}/solve", "/account", "/account/sign-in",
                "/search?q=compte"]  # fmt: skip
    agents = ["/tickets", f"/tickets/{ticket}", "/help/articles", "/help/articles/new",
              "/help/articles/reinitialiser-mot-de-passe/edit",
              "/help/articles/reinitialiser-mot-de-passe/delete", "/account",
              "/search?q=brouillon"]  # fmt: skip
    walked = 0
    for locale in LOCALES:
        for browser in (visitor, web, desk):
            switch(browser, locale)
        walked += walk(visitor, locale, public, "visitor")
        walked += walk(web, locale, customer, "customer")
        walked += walk(desk, locale, agents, "agent")
        # Pages that are answers: not found, a dead link, forms refused.
        missing = visitor.get("/no/such/page")
        assert missing.status_code == 404
        check(missing.text, locale, "404")
        dead = visitor.get("/activate/not-a-token")
        check(dead.text, locale, "dead link")
        refused(visitor, locale, "/login", {"email": "nobody@client.example", "password": "x"})
        refused(visitor, locale, "/signup", {"email": "not an address", "name": ""})
        refused(web, locale, "/tickets/new", {"customer_id": "?", "subject": "", "description": ""})
        refused(web, locale, "/account", {"language": locale, "timezone": "Mars/Olympus"})
        page = web.get(f"/tickets/{ticket}").text
        size = {"fr": "25 Ko", "en": "25 KB"}.get(locale)
        if size:  # the catalogue's unit and the locale's number, not "25 KB" everywhere
            assert f"({size})" in visible(page) or size in visible(page), page
    assert walked == len(LOCALES) * (len(public) + len(customer) + len(agents))
