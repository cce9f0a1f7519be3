"""The portal adapter's pure helpers: language negotiation, catalogs, local redirects, Origin
checks, and the CSRF token scheme."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mailgate.adapters.portal.i18n import Catalogs, negotiate
from mailgate.adapters.portal.security import Csrf, safe_next, same_origin_post

CATALOGS = Path(__file__).resolve().parents[2] / "templates" / "portal" / "i18n"
TEMPLATES = CATALOGS.parent


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", "fr"),
        ("en-US,en;q=0.9", "en"),
        ("de-DE,de;q=0.9,en;q=0.8,fr;q=0.7", "en"),
        ("fr-CA", "fr"),
        ("en;q=0.2, fr;q=0.8", "fr"),
        ("en;q=bogus, fr;q=0.1", "fr"),
        ("es, it", "fr"),
        ("*", "fr"),
    ],
)
def test_negotiate(header: str, expected: str) -> None:
    assert negotiate(header, "fr", ("en", "fr")) == expected
    assert negotiate(header, "fr", ("fr",)) == "fr"  # only the catalogues present count


def test_catalogs_have_the_same_keys_and_every_key_a_template_uses() -> None:
    fr = json.loads((CATALOGS / "fr.json").read_text())
    en = json.loads((CATALOGS / "en.json").read_text())
    assert set(fr) == set(en)
    used = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"\bt\('([a-z0-9_.]+)'\s*[,)]", template.read_text()))
    assert len(used) > 50 and used - set(fr) == set()
    statuses = {k: fr[k] for k in fr if k.startswith("status.")}
    assert statuses == {
        "status.new": "Nouveau",
        "status.open": "Ouvert",
        "status.pending": "En attente de votre réponse",
        "status.solved": "Résolu",
        "status.closed": "Clos",
    }
    assert [en[k] for k in statuses] == ["New", "Open", "Awaiting your reply", "Solved", "Closed"]


def test_catalog_text_fills_values_and_formats_per_language() -> None:
    catalogs = Catalogs(CATALOGS)
    assert catalogs.text("fr", "tickets.created", id=7).startswith("Votre demande n°7")
    assert catalogs.text("en", "tickets.created", id=7).startswith("Your request #7")
    assert catalogs.size("fr", 1536 * 1024) == "1,5 Mo"
    assert catalogs.size("en", 2048) == "2 KB"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/tickets/3", "/tickets/3"),
        ("/tickets?status=open", "/tickets?status=open"),
        ("//evil.example/", None),
        ("https://evil.example/", None),
        ("/\\evil.example", None),
        ("/x\r\nSet-Cookie: a=b", None),
        ("", None),
        (None, None),
    ],
)
def test_safe_next(value: str | None, expected: str | None) -> None:
    assert safe_next(value) == expected


def test_same_origin_post() -> None:
    base = "https://support.example.com/help"
    assert same_origin_post(None, base)  # older clients send none; the CSRF token still counts
    assert same_origin_post("https://support.example.com", base)
    assert not same_origin_post("https://evil.example", base)
    assert not same_origin_post("http://support.example.com", base)
    assert not same_origin_post("null", base)


def test_csrf_tokens() -> None:
    csrf = Csrf(b"k" * 32)
    cookie = csrf.new_cookie()
    token = csrf.for_cookie(cookie)
    assert csrf.valid(token, None, cookie)
    assert not csrf.valid(token, None, csrf.new_cookie())  # bound to the browser's cookie
    assert not csrf.valid("", None, cookie)
    assert not csrf.valid(token, None, None)
    assert csrf.valid("session-token", "session-token", None)
    assert not csrf.valid("other", "session-token", None)
    assert Csrf(b"x" * 32).for_cookie(cookie) != token  # bound to the server's secret
