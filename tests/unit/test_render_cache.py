"""services/render.py keeps Babel's work between mails (locales, zone names, a time formatted
for the text and again for the HTML part): what a template says must stay what Babel says for
that very time, in any order, across daylight-saving changes and zones with no CLDR name."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_time, get_timezone_name

from mailgate.services.render import MailRenderer

ZONES = ["Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe",
         "America/Sao_Paulo", "Etc/GMT-14", "UTC", "Africa/Casablanca"]  # fmt: skip


def _expected(at: datetime, zone: str, lang: str) -> str:
    local = at.astimezone(ZoneInfo(zone))
    return " | ".join(
        [
            format_date(local, "long", locale=lang),
            format_time(local, "short", tzinfo=local.tzinfo, locale=lang),
            get_timezone_name(local, "long", locale=lang),
        ]
    )


def test_times_read_as_babel_formats_them_whatever_was_formatted_before(tmp_path: Path):
    for lang in ("fr", "en"):
        (tmp_path / "mail" / lang).mkdir(parents=True)
        for part, body in (("subject", "t"), ("txt", "{{ at|date_long }} | {{ at|time_short }}"
                                                     " | {{ at|zone_name }}")):  # fmt: skip
            (tmp_path / "mail" / lang / f"probe.{part}.j2").write_text(body)
    renderer = MailRenderer(tmp_path, "fr", "Europe/Paris")
    rng = random.Random(15)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    cases = [(start + timedelta(hours=rng.randrange(0, 24 * 365)), rng.choice(ZONES),
              rng.choice(["fr", "en"])) for _ in range(400)]  # fmt: skip
    for at, zone, lang in cases + cases[::-1]:  # each one twice, the cache warm the second time
        value = at.isoformat() if rng.random() < 0.5 else at
        text = renderer.render("probe", lang, {"at": value, "tz": zone}).text
        assert text == _expected(at, zone, lang), (at, zone, lang)
    # No zone, or one that no longer exists: the site's.
    at = datetime(2026, 7, 1, 12, tzinfo=UTC)
    for tz in ("", None, "Nowhere/Gone"):
        text = renderer.render("probe", "en", {"at": at, "tz": tz}).text
        assert text == _expected(at, "Europe/Paris", "en")
