"""Issue 15 over real HTTP: a new-request form refused for one field keeps everything else the
person entered, names the files they must choose again (a browser cannot be handed files
back), and the customer-ID error says what is expected, in the visitor's language; the
categories and broadcasters are shown in it and stored in the default language."""

from __future__ import annotations

import html
import re

import pytest
from sqlmodel import select

from mailgate.store.models import Attachment, Ticket
from tests.support.conversation import Desk
from tests.support.peers import Mailgate
from tests.support.portal_web import Web, customer_with_ticket, hidden_fields

pytest_plugins = ["tests.support.portal"]

BOB = "Bob Smith <bob@client.example>"
ENGLISH = (
    "Hello,\n\nSince last night I cannot sign in to my account: the site says my password is "
    "wrong although I have not changed it. Could you help me, please?\n\nThanks,\nBob\n"
)
FILES = [
    ("attachments", ("capture.png", b"\x89PNG\r\n\x1a\n" + bytes(64), "image/png")),
    ("attachments", ("feed-errors.csv", b"sku;error\n42;price\n", "text/csv")),
]
EXPECTED = {
    "en": "This ID is not in the expected format: 6 to 32 letters, digits or dashes, as shown "
    "in your account page.",
    "fr": "Cet identifiant n'a pas le bon format : attendu 6 à 32 lettres, chiffres ou tirets, "
    "tel qu'il figure dans votre espace client.",
}
AGAIN = {
    "en": "These files were not sent: choose them again (capture.png, feed-errors.csv).",
    "fr": "Ces fichiers n'ont pas été envoyés : choisissez-les à nouveau (capture.png, "
    "feed-errors.csv).",
}
LABELS = {"en": ("Product feeds", "Orders", "Amazon Europe"),
          "fr": ("Flux produits", "Commandes", "Amazon Europe")}  # fmt: skip


@pytest.fixture
def config_extra() -> str:
    return (
        'customer_id_label = { fr = "Id client", en = "Customer ID" }\n'
        'customer_id_pattern = "^[A-Za-z0-9-]{6,32}$"\n'
        "customer_id_format = { fr = \"6 à 32 lettres, chiffres ou tirets, tel qu'il figure "
        'dans votre espace client", en = "6 to 32 letters, digits or dashes, as shown in your '
        'account page" }\n'
        'problem_categories = [{ fr = "Flux produits", en = "Product feeds" }, '
        '{ fr = "Commandes", en = "Orders" }]\n'
        'broadcasters = ["Amazon Europe", "Cdiscount"]\n'
    )


def _selected(page: str, name: str) -> str:
    select_tag = re.search(rf'(?s)<select id="{name}".*?</select>', page)
    assert select_tag, name
    chosen = re.search(r'<option value="([^"]*)" selected>([^<]*)</option>', select_tag.group(0))
    assert chosen, f"nothing selected in {name}"
    return f"{chosen.group(1)}={chosen.group(2)}"


def _form(page: str) -> dict[str, str]:
    return {
        "customer_id": html.unescape(re.search(r'name="customer_id" value="([^"]*)"', page)[1]),
        "subject": html.unescape(re.search(r'name="subject" value="([^"]*)"', page)[1]),
        "description": html.unescape(re.search(r"(?s)<textarea[^>]*>(.*?)</textarea>", page)[1]),
        "problem": _selected(page, "problem"),
        "broadcaster": _selected(page, "broadcaster"),
    }


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_a_refused_form_keeps_the_rest_and_says_what_is_expected(
    portal: Mailgate, helpdesk: Desk, web: Web, lang: str
) -> None:
    customer_with_ticket(helpdesk, web, sender=BOB, subject="Cannot sign in", body=ENGLISH)
    fields = hidden_fields(web.get("/").text)
    web.post("/language", data={"csrf": fields["csrf"], "back": "/", "lang": lang})
    feeds, _orders, amazon = LABELS[lang]
    page = web.get("/tickets/new").text
    assert f">{feeds}</option>" in page and f'<html lang="{lang}">' in page
    typed = {
        "customer_id": "AB-1",  # too short: 4 characters
        "subject": "Amazon feed rejected <since Monday>",
        "description": "Feed 42 is rejected\nsince this morning: « prix manquant ».",
        "problem": "Flux produits",  # the option's value: the default language's word
        "broadcaster": "Amazon Europe",
    }
    refused = web.submit("/tickets/new", typed, files=FILES)
    assert refused.status_code == 400
    page = refused.text
    assert _form(page) == {
        **{k: typed[k] for k in ("customer_id", "subject", "description")},
        "problem": f"Flux produits={feeds}",
        "broadcaster": f"Amazon Europe={amazon}",
    }
    shown = html.unescape(page)
    assert EXPECTED[lang] in shown  # what an ID looks like, not only "wrong format"
    assert AGAIN[lang] in shown  # the files are named: the browser lost them
    with portal.app.db.read() as session:
        assert len(session.exec(select(Ticket)).all()) == 1  # nothing was created

    # Corrected, with the files chosen again: one ticket, in the default language's words.
    done = web.submit("/tickets/new", {**typed, "customer_id": "AB-1234"}, files=FILES)
    assert done.status_code == 303, done.text
    created = int(re.search(r"created=(\d+)", done.headers["location"])[1])
    with portal.app.db.read() as session:
        ticket = session.get(Ticket, created)
        assert ticket is not None
        assert (ticket.customer_ref, ticket.problem, ticket.broadcaster) == (
            "AB-1234", "Flux produits", "Amazon Europe",
        )  # fmt: skip
        names = session.exec(select(Attachment.filename).order_by(Attachment.id)).all()
    assert list(names)[-2:] == ["capture.png", "feed-errors.csv"]
