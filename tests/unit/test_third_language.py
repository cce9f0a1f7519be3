"""Issue 15: a third language is data only. A copy of templates/ with a German catalogue and
mail folder (the English ones with a few texts translated, as a translator would start) is
taken up by the code that reads templates: the portal's languages, the browser's choice, the
mail renderer (times and numbers by Babel), the detection of a mail's language, and the help
centre's stemming. The README's "Adding a language" is this, by hand."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailgate.adapters.portal.i18n import Catalogs, negotiate
from mailgate.app import TEMPLATES
from mailgate.core.language_detect import detect_language
from mailgate.core.textsearch import stem
from mailgate.services.render import MailRenderer

GERMAN = {
    "language.name": "Deutsch",
    "nav.sign_in": "Anmelden",
    "nav.my_activities": "Meine Aktivitäten",
    "size.kb": "{n} KB",
}


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("templates")
    shutil.copytree(TEMPLATES, root, dirs_exist_ok=True)
    table = json.loads((root / "portal" / "i18n" / "en.json").read_text(encoding="utf-8"))
    (root / "portal" / "i18n" / "de.json").write_text(
        json.dumps({**table, **GERMAN}, ensure_ascii=False), encoding="utf-8"
    )
    shutil.copytree(root / "mail" / "en", root / "mail" / "de")
    (root / "mail" / "de" / "confirmation.subject.j2").write_text(
        "[#{{ ticket.id }}] Anfrage erhalten\n", encoding="utf-8"
    )
    return root


def test_the_portal_speaks_it(templates: Path) -> None:
    catalogs = Catalogs(templates / "portal" / "i18n")
    assert catalogs.locales == ("de", "en", "fr")
    assert negotiate("de-AT,de;q=0.9,en;q=0.5", "fr", catalogs.locales) == "de"
    assert catalogs.text("de", "nav.my_activities") == "Meine Aktivitäten"
    assert catalogs.size("de", 1_300_000) == "1,2 MB"  # German numbers: a decimal comma
    when = datetime(2026, 12, 9, 9, 2, tzinfo=UTC)
    assert "09.12.2026" in catalogs.date(
        "de", when, zone=ZoneInfo("Europe/Paris")
    )  # CLDR's German date


def test_mail_is_written_in_it(templates: Path) -> None:
    renderer = MailRenderer(templates, "fr", "Europe/Paris")
    assert renderer.locales == ("de", "en", "fr")
    assert renderer.locale_for("de") == "de"
    ticket = {"id": 42, "subject": "Drucker", "status": "open"}
    confirmation = renderer.render(
        "confirmation", "de", {"ticket": ticket, "ticket_url": "u", "company": "C", "echo": False}
    )
    assert confirmation.subject == "[#42] Anfrage erhalten"
    resolved = renderer.render(
        "auto_resolved", "de",
        {"ticket": ticket, "days": 7, "ticket_url": "u", "company": "C",
         "since": "2026-12-09T09:02:00+00:00", "tz": ""},
    )  # fmt: skip
    assert "9. Dezember 2026" in resolved.text
    assert "Mitteleuropäische Normalzeit" in resolved.text


def test_a_german_mail_is_told_from_french_and_english() -> None:
    text = (
        "Guten Tag,\n\nseit gestern Abend kann ich mich nicht mehr in mein Konto einloggen: "
        "die Seite sagt, mein Passwort sei falsch. Können Sie mir bitte helfen?\n\nDanke\n"
    )
    assert detect_language(text, ("de", "en", "fr")) == "de"


def test_help_centre_words_are_stemmed_in_it() -> None:
    assert stem("Häuser", "de") == stem("Haus", "de") == "haus"
