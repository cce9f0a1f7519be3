"""Issue 15: the words of every language, checked where they are kept. The portal's catalogues
(templates/portal/i18n/<locale>.json) have the same keys, every key a template or the code
asks for exists, and no text is left untranslated (the same in two languages) unless it is
the same word in both (allow-list below). Every mail template of every locale renders with
every branch taken, and no line of it is the same in two languages.

Pages are walked over HTTP in tests/integration/test_i18n_walk.py."""

from __future__ import annotations

import html
import itertools
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mailgate.app import TEMPLATES
from mailgate.core.commands import CommandError, parse_commands
from mailgate.services.assemble import _plain
from mailgate.services.digests import DigestLine
from mailgate.services.render import MailRenderer, available_locales

ROOT = Path(__file__).resolve().parents[2]
CATALOGUES = {
    p.stem: json.loads(p.read_text(encoding="utf-8"))
    for p in sorted((TEMPLATES / "portal" / "i18n").glob("*.json"))
}
# The same text in French and English on purpose: the same word in both, or a header's name.
SAME_IN_BOTH = {
    "ticket.conversation",  # Conversation
    "ticket.support",  # Support
    "new.description",  # Description
    "role.agent",  # Agent
    "agent.message",  # Message
    "match.in-reply-to",  # a mail header's name: In-Reply-To
    "match.references",  # References
    "duration.hours",  # {hours} h {minutes}
    "duration.minutes",  # {minutes} min
}
# t('key') in templates, ctx.t("key") and catalogs.text(locale, "key") in the code.
USED = re.compile(
    r"""(?:\bt\(|\btext\((?:[a-z_.]*(?:locale|lang)|code),\s*)['"]([a-z0-9_.\-]+)['"]"""
)


def test_every_language_has_the_same_keys() -> None:
    keys = {lang: set(table) for lang, table in CATALOGUES.items()}
    reference = set().union(*keys.values())
    assert {lang: sorted(reference - own) for lang, own in keys.items()} == {
        lang: [] for lang in keys
    }


def test_the_portal_and_mail_speak_the_same_languages() -> None:
    assert tuple(sorted(CATALOGUES)) == available_locales(TEMPLATES)
    assert len(CATALOGUES) >= 2


@pytest.mark.parametrize(("one", "other"), list(itertools.combinations(sorted(CATALOGUES), 2)))
def test_nothing_left_untranslated(one: str, other: str) -> None:
    same = sorted(
        f"{key}: {text!r}"
        for key, text in CATALOGUES[one].items()
        if text == CATALOGUES[other][key] and key not in SAME_IN_BOTH and re.search("[a-z]", text)
    )
    assert same == [], f"the same in {one} and {other}: translate, or add to SAME_IN_BOTH"


def test_every_key_asked_for_exists() -> None:
    asked: set[tuple[str, str]] = set()
    sources = [*(TEMPLATES / "portal").rglob("*.html"), *(ROOT / "mailgate").rglob("*.py")]
    for path in sources:
        for key in USED.findall(path.read_text(encoding="utf-8")):
            asked.add((key, str(path.relative_to(ROOT))))
    assert len(asked) > 200  # the pattern still finds what templates ask for
    for lang, table in CATALOGUES.items():
        missing = sorted(
            f"{where}: {key}"
            for key, where in asked
            if key not in table and not key.endswith((".", "_"))
        )
        # A family built from a value ('status.' ~ s): at least one of its keys is there.
        families = {key for key, _ in asked if key.endswith((".", "_"))}
        assert all(any(k.startswith(f) for k in table) for f in families), families
        assert missing == [], f"{lang} lacks keys"


# -- mail ----------------------------------------------------------------------------------

NOW = datetime(2026, 12, 9, 9, 2, tzinfo=UTC)
URL = "https://help.example.com/tickets/42"
TICKET = {"id": 42, "subject": "Imprimante en panne", "status": "open"}
ERRORS: list[CommandError] = [
    *parse_commands("#\n#note x\n#status done\n#category \n#cc foo\n#stauts\n#assign\n"
                    "#assign a b\n#status open\n#status closed\n").errors,
    CommandError(2, "#assign g@x.example", "'g@x.example' is not an agent", "not_agent",
                 {"address": "g@x.example"}),
]  # fmt: skip
FILES = [
    {"filename": "facture.pdf", "size": 12_345_678, "url": "https://help.example.com/files/t"},
    {"filename": "capture.png", "size": 27_000, "url": ""},
]
# Each kind with every branch its templates have (a context per variant).
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "confirmation": [
        {"ticket": TICKET, "echo": True, "customer_name": "Jérôme", "ticket_url": URL,
         "articles": [{"title": "Réinitialiser", "url": "https://help.example.com/a"}]},
        {"ticket": TICKET, "echo": False, "customer_name": "", "ticket_url": URL},
    ],
    "follow_up": [{"ticket": TICKET, "ticket_url": URL, "old_ticket_id": 41}],
    "activation": [
        {"customer_name": "Jérôme", "echo": True, "email": "j@client.example",
         "activation_url": "https://help.example.com/activate/tok", "expires": NOW},
    ],
    "password_reset": [
        {"email": "j@client.example", "reset_url": "https://help.example.com/r/tok",
         "expires": NOW},
    ],
    "agent_notification": [
        {"ticket": TICKET, "customer": "Jérôme <j@client.example>", "body": "Texte.",
         "ticket_url": URL, "is_new": new, "sender_auth": auth, "channel": channel,
         "was_deleted": deleted, "files": FILES,
         "fields": {"customer_id": "AB-12", "problem": "Flux", "broadcaster": "Amazon"}}
        for new, auth, channel, deleted in [(True, "pass", "smtp", False),
                                            (False, "fail", "smtp", True),
                                            (False, "", "portal", False),
                                            (False, "none", "smtp", False)]
    ],
    "agent_reply": [{"ticket": TICKET, "body": "Essayez ceci.", "agent_name": "Alice",
                     "ticket_url": URL}],
    "auto_resolved": [{"ticket": TICKET, "days": 7, "ticket_url": URL, "since": NOW}],
    "command_error": [{"ticket": TICKET, "errors": ERRORS}, {"ticket": TICKET,
                                                              "errors": ERRORS[:1]}],
    "limit_reached": [{}],
    "agent_digest": [
        {"tickets": [DigestLine(42, "Écran", "open", URL, 3), DigestLine(43, "Clé", "new", URL, 1)],
         "notifications": 4, "per_hour": 30},
        {"tickets": [DigestLine(42, "Écran", "open", URL, 1)], "notifications": 1,
         "per_hour": 30},
    ],
}  # fmt: skip
BASE = {"company": "Exemple", "portal_url": "https://help.example.com/", "echo": False, "tz": ""}
RENDERER = MailRenderer(TEMPLATES, "fr", "Europe/Paris")
# Lines that are the same in French and English on purpose (names, the reply prefix).
SAME_LINES = {"Re:", "Ticket #42"}


def _kinds(locale: str) -> set[str]:
    folder = TEMPLATES / "mail" / locale
    return {p.name.split(".")[0] for p in folder.glob("*.subject.j2")}


def _stored(context: dict[str, Any]) -> dict[str, Any]:
    """The context as the sender reads it back from the outbox row (JSON)."""
    loaded: dict[str, Any] = json.loads(json.dumps({**BASE, **context}, default=_plain))
    return loaded


def test_every_language_has_the_same_mail_templates() -> None:
    files = {
        lang: sorted(p.name for p in (TEMPLATES / "mail" / lang).iterdir())
        for lang in available_locales(TEMPLATES)
    }
    first = next(iter(files.values()))
    assert all(names == first for names in files.values()), files
    assert _kinds("fr") == set(VARIANTS), "a mail kind without contexts here: add its variants"


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _words(rendered: str, context: dict[str, Any]) -> set[str]:
    """The lines of a mail that are its own words: without what the context put in them."""
    text = html.unescape(re.sub(r"<[^>]+>", "\n", rendered))
    for value in sorted(_strings(context), key=len, reverse=True):
        if len(value) > 2:
            text = text.replace(value, " ")
    lines = {" ".join(line.split()) for line in text.splitlines()}
    return {line for line in lines if re.search(r"[A-Za-zÀ-ÿ]{3,}", line)} - SAME_LINES


@pytest.mark.parametrize("kind", sorted(VARIANTS))
def test_every_mail_renders_in_every_language_and_none_is_left_untranslated(kind: str) -> None:
    locales = available_locales(TEMPLATES)
    for context in VARIANTS[kind]:
        stored = _stored(context)
        rendered = {lang: RENDERER.render(kind, lang, dict(stored)) for lang in locales}
        for lang, mail in rendered.items():
            assert mail.subject and mail.text.strip(), (kind, lang)
            assert "{{" not in mail.text and "{%" not in mail.text
        for one, other in itertools.combinations(locales, 2):
            for part in ("subject", "text", "html"):
                a, b = getattr(rendered[one], part), getattr(rendered[other], part)
                if a is None or b is None:
                    assert a is b is None, (kind, part)  # HTML in every language or none
                    continue
                same = _words(a, stored) & _words(b, stored)
                assert not same, f"{kind}.{part}: the same in {one} and {other}: {same}"


def test_sizes_and_times_in_mail_are_each_languages_own() -> None:
    stored = _stored(VARIANTS["agent_notification"][0])
    fr = RENDERER.render("agent_notification", "fr", dict(stored)).text
    en = RENDERER.render("agent_notification", "en", dict(stored)).text
    assert "12\u202f057 Ko" in fr and "12,057 KB" in en  # Babel's grouping: a narrow space
    stored = _stored(VARIANTS["auto_resolved"][0])
    assert (
        "9 décembre 2026 à 10:02, heure normale d’Europe centrale"
        in RENDERER.render("auto_resolved", "fr", dict(stored)).text
    )
    assert "December 9, 2026 at 10:02\u202fAM, Central European Standard Time" in (
        RENDERER.render("auto_resolved", "en", dict(stored)).text
    )


def _template_words(page: str) -> tuple[list[str], list[str]]:
    """Text a portal template writes itself, outside `{{ t(...) }}`: (text, shown attributes)."""
    page = re.sub(r"(?s)\{#.*?#\}", "", page)
    page = re.sub(r"(?s)<(script|style)\b.*?</\1>", "", page)
    page = re.sub(r"(?s)\{\{.*?\}\}|\{%.*?%\}", " ", page)
    shown = re.findall(r'\b(?:title|placeholder|aria-label|alt)="([^"]*[A-Za-z]{2,}[^"]*)"', page)
    text = re.sub(r"(?s)<[^>]*>", " ", page)
    # What is left between tags; an attribute a macro writes (aria-invalid="true") is no text.
    words = [w.strip() for w in text.split("\n") if re.search(r"[A-Za-zÀ-ÿ]{2,}", w)]
    return [w for w in words if "=" not in w], shown


def test_portal_templates_write_no_words_of_their_own() -> None:
    """Every word a page shows comes from the catalogue ("(new)" or "27 KB" written in a
    template would be in one language on every page)."""
    found = {}
    for path in sorted((TEMPLATES / "portal").rglob("*.html")):
        words, shown = _template_words(path.read_text(encoding="utf-8"))
        if words or shown:
            found[str(path.relative_to(TEMPLATES))] = words + shown
    assert found == {}
