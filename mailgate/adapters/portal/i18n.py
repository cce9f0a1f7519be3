"""The portal's languages: which one a request gets, and the words, numbers, sizes and dates in
each (issue 15).

Catalogs are JSON files next to the templates (templates/portal/i18n/<locale>.json), one flat
key -> text table per language, so a translator never has to read a template. The languages
are the catalogues present: adding one is data only (a catalogue and templates/mail/<locale>/).
Numbers, dates and time-zone names come from Babel (CLDR), in each locale's own conventions.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_date, format_time
from babel.numbers import format_decimal

# Sizes: the number by Babel, the unit from the catalogue ("27 Ko" / "27 KB").
_KB, _MB = 1024, 1024 * 1024


def negotiate(accept_language: str, default: str, locales: tuple[str, ...]) -> str:
    """The best of `locales` for an Accept-Language header (RFC 9110 quality values), or
    `default` when it names none of them."""
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
        if primary in locales and q > best_q:
            best, best_q = primary, q
    return best


def zone_or_none(name: str) -> ZoneInfo | None:
    """A time zone from an IANA name a browser or a person gave, or None if it is not one."""
    if not name or len(name) > 64 or not all(c.isalnum() or c in "/_+-" for c in name):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


class _Values(dict[str, object]):
    """Values for a text; one it does not have stays as written ("{time}"), never a crash."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class Catalogs:
    def __init__(self, folder: Path) -> None:
        self.texts = {
            path.stem: json.loads(path.read_text(encoding="utf-8"))
            for path in sorted(folder.glob("*.json"))
        }
        self.locales = tuple(self.texts)
        if not self.locales:
            raise ValueError(f"no portal catalogue in {folder}")
        keys = set().union(*(set(t) for t in self.texts.values()))
        missing = sorted(
            f"{lang}: {key}" for lang, t in self.texts.items() for key in keys - set(t)
        )
        if missing:  # a page half in one language is worse than a crash at start-up
            raise ValueError(f"portal catalogs differ on: {', '.join(missing)}")

    def text(self, locale: str, key: str, **values: object) -> str:
        table = self.texts.get(locale) or next(iter(self.texts.values()))
        template = table.get(key)
        if template is None:
            return key
        return template.format_map(_Values(values)) if values else template

    def date(self, locale: str, value: datetime, zone: ZoneInfo) -> str:
        """A moment in the viewer's zone, the locale's way: "2 déc. 2026 10:02", "Dec 2, 2026,
        10:02 AM" (the page says which zone once, in its footer)."""
        return self.text(
            locale,
            "format.datetime",
            date=format_date(value.astimezone(zone), "medium", locale=locale),
            time=format_time(value, "short", tzinfo=zone, locale=locale),
        )

    def time(self, locale: str, value: datetime, zone: ZoneInfo) -> str:
        return format_time(value, "short", tzinfo=zone, locale=locale)

    def duration(self, locale: str, value: timedelta) -> str:
        """A wait, to the minute under a day and to the hour beyond: "3 h 05", "2 d 4 h"."""
        minutes = max(0, int(value.total_seconds() // 60))
        days, rest = divmod(minutes, 24 * 60)
        hours, minutes = divmod(rest, 60)
        if days:
            key = "duration.days_hours" if hours else "duration.days"
            return self.text(locale, key, days=days, hours=hours)
        if hours:
            return self.text(locale, "duration.hours", hours=hours, minutes=f"{minutes:02d}")
        return self.text(locale, "duration.minutes", minutes=minutes)

    def number(self, locale: str, value: float) -> str:
        return format_decimal(value, locale=locale)

    def size(self, locale: str, size: int) -> str:
        if size < _KB:
            return self.text(locale, "size.bytes", n=format_decimal(size, locale=locale))
        if size < _MB:
            kb = format_decimal(round(size / _KB), locale=locale)
            return self.text(locale, "size.kb", n=kb)
        mb = format_decimal(round(size / _MB, 1), format="#,##0.0", locale=locale)
        return self.text(locale, "size.mb", n=mb)
