"""The portal's two languages: which one a request gets, and the words in each.

Catalogs are JSON files next to the templates (templates/portal/i18n/{fr,en}.json), one flat
key -> text table per language, so a translator never has to read a template.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

LOCALES = ("fr", "en")


def negotiate(accept_language: str, default: str) -> str:
    """The best of our locales for an Accept-Language header (RFC 9110 quality values)."""
    best, best_q = default, 0.0
    for item in accept_language.split(",")[:20]:
        lang, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        primary = lang.strip().lower().split("-")[0]
        if primary in LOCALES and q > best_q:
            best, best_q = primary, q
    return best


class Catalogs:
    def __init__(self, folder: Path) -> None:
        self.texts = {
            lang: json.loads((folder / f"{lang}.json").read_text(encoding="utf-8"))
            for lang in LOCALES
        }
        missing = set(self.texts["fr"]) ^ set(self.texts["en"])
        if missing:  # a page half in one language is worse than a crash at start-up
            raise ValueError(f"portal catalogs differ on: {', '.join(sorted(missing))}")

    def text(self, locale: str, key: str, **values: object) -> str:
        table = self.texts.get(locale) or self.texts["en"]
        template = table.get(key)
        if template is None:
            return key
        return template.format(**values) if values else template

    def date(self, locale: str, value: datetime) -> str:
        fmt = "%d/%m/%Y %H:%M" if locale == "fr" else "%Y-%m-%d %H:%M"
        return value.strftime(fmt) + " UTC"

    def duration(self, locale: str, value: timedelta) -> str:
        """A wait, to the minute under a day and to the hour beyond: "3 h 05", "2 d 4 h"."""
        minutes = max(0, int(value.total_seconds() // 60))
        days, rest = divmod(minutes, 24 * 60)
        hours, minutes = divmod(rest, 60)
        day = "j" if locale == "fr" else "d"
        if days:
            return f"{days} {day} {hours} h" if hours else f"{days} {day}"
        if hours:
            return f"{hours} h {minutes:02d}"
        return f"{minutes} min"

    def size(self, locale: str, size: int) -> str:
        units = ("o", "Ko", "Mo") if locale == "fr" else ("B", "KB", "MB")
        if size < 1024:
            return f"{size} {units[0]}"
        if size < 1024 * 1024:
            return f"{size / 1024:.0f} {units[1]}"
        number = f"{size / 1024 / 1024:.1f}"
        return f"{number.replace('.', ',') if locale == 'fr' else number} {units[2]}"
