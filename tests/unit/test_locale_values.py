"""Issue 15: config values shown to people take a text per locale (a plain string still
accepted), and sizes, numbers, dates and durations are written each language's way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailgate import config as config_mod
from mailgate.adapters.portal.i18n import Catalogs, zone_or_none
from mailgate.config import localized
from mailgate.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CATALOGS = Catalogs(ROOT / "templates" / "portal" / "i18n")
MINIMAL = '[mailgate]\nsecret_key = "s3cret-for-tests-that-is-32-bytes-long"\n'


def _load(tmp_path: Path, extra: str) -> config_mod.Config:
    path = tmp_path / "mailgate.toml"
    path.write_text(MINIMAL + extra, encoding="utf-8")
    return config_mod.load(path, environ={})


def test_per_locale_values_and_plain_strings_are_both_accepted(tmp_path: Path) -> None:
    cfg = _load(
        tmp_path,
        '[outbound]\nfrom_name = { fr = "Assistance Exemple", en = "Example Support" }\n'
        '[portal]\ncustomer_id_label = { fr = "Id client", en = "Customer ID" }\n'
        'problem_categories = [{ fr = "Facturation", en = "Billing" }, "Lengow"]\n'
        'broadcasters = ["Amazon", { fr = "Autre place", en = "Other marketplace" }]\n',
    )
    assert localized(cfg.outbound.from_name, "en", "fr") == "Example Support"
    assert localized(cfg.portal.customer_id_label, "fr", "fr") == "Id client"
    assert [localized(p, "en", "fr") for p in cfg.portal.problem_categories] == [
        "Billing",
        "Lengow",
    ]
    assert localized(cfg.portal.broadcasters[1], "de", "fr") == "Autre place"  # the fallback


def test_the_defaults_speak_both_languages(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "")
    labels = [localized(p, "fr", "fr") for p in cfg.portal.problem_categories]
    assert labels == ["Compte", "Facturation", "Problème technique"]
    assert localized(cfg.portal.customer_id_label, "en", "fr") == "Customer ID"


@pytest.mark.parametrize(
    "extra",
    [
        "[portal]\ncustomer_id_label = { fr = 3 }\n",
        "[portal]\ncustomer_id_label = {}\n",
        '[portal]\nproblem_categories = [{ fr = "" }]\n',
        "[outbound]\nfrom_name = 12\n",
        '[mailgate]\ndefault_locale = "de"\n',
        '[portal]\ncustomer_id_label = { fr = "Id client", dr = "a typo" }\n',
    ],
)
def test_bad_per_locale_values_are_refused(tmp_path: Path, extra: str) -> None:
    text = (
        MINIMAL + extra
        if not extra.startswith("[mailgate]")
        else extra.replace("[mailgate]\n", MINIMAL)
    )
    path = tmp_path / "mailgate.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError):
        config_mod.load(path, environ={})


def test_sizes_and_numbers_per_locale() -> None:
    assert CATALOGS.size("fr", 27 * 1024) == "27 Ko"
    assert CATALOGS.size("en", 27 * 1024) == "27 KB"
    assert CATALOGS.size("fr", 1536 * 1024) == "1,5 Mo"
    assert CATALOGS.size("en", 1536 * 1024) == "1.5 MB"
    assert CATALOGS.size("fr", 900) == "900 o"
    assert CATALOGS.number("fr", 12345.5).replace("\u202f", " ") == "12 345,5"
    assert CATALOGS.number("en", 12345.5) == "12,345.5"


def test_dates_in_the_viewers_zone_and_language() -> None:
    moment = datetime(2026, 12, 2, 9, 2, tzinfo=UTC)
    paris, new_york = ZoneInfo("Europe/Paris"), ZoneInfo("America/New_York")
    assert CATALOGS.date("fr", moment, paris) == "2 déc. 2026 10:02"
    assert CATALOGS.date("en", moment, new_york).replace("\u202f", " ") == "Dec 2, 2026, 4:02 AM"
    assert CATALOGS.time("fr", moment, new_york) == "04:02"


def test_durations_per_locale() -> None:
    assert CATALOGS.duration("fr", timedelta(days=2, hours=4)) == "2 j 4 h"
    assert CATALOGS.duration("en", timedelta(days=2, hours=4)) == "2 d 4 h"
    assert CATALOGS.duration("en", timedelta(hours=3, minutes=5)) == "3 h 05"


@pytest.mark.parametrize(
    ("name", "ok"),
    [("Europe/Paris", True), ("America/Argentina/Buenos_Aires", True), ("Mars/Olympus", False),
     ("../../etc/passwd", False), ("", False), ("x" * 100, False)],
)  # fmt: skip
def test_zone_names(name: str, ok: bool) -> None:
    assert (zone_or_none(name) is not None) is ok
