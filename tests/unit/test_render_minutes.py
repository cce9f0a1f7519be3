"""services/render.py keeps a formatted date by day and a formatted time by minute (each
mail's time differs to the microsecond): what a template says must stay what Babel says for
that very time, for times seconds apart in the same minute, across daylight-saving changes,
in zones whose offset is not whole minutes (local mean times before 1972) and in languages
whose digits or patterns differ. And each template renders as Jinja's Template.render
renders it (render._render makes the same context more quickly)."""

from __future__ import annotations

import itertools
import random
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from babel.dates import format_date, format_time, get_timezone_name
from jinja2 import Environment, TemplateNotFound, UndefinedError

from mailgate.app import TEMPLATES
from mailgate.services import render
from mailgate.services.render import MailRenderer, available_locales
from tests.unit.test_i18n_catalogues import VARIANTS, _stored

ZONES = ["Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe",
         "Africa/Monrovia", "Europe/Amsterdam", "Asia/Kathmandu", "Pacific/Chatham",
         "UTC", "Africa/Casablanca"]  # fmt: skip
LANGS = ["fr", "en", "de", "ar", "fa", "ja", "hi", "ko", "zh_Hant"]


def _expected(at: datetime, zone: str, lang: str) -> str:
    local = at.astimezone(ZoneInfo(zone))
    return " | ".join(
        [
            format_date(local, "long", locale=lang),
            format_time(local, "short", tzinfo=local.tzinfo, locale=lang),
            get_timezone_name(local, "long", locale=lang),
        ]
    )


def _renderer(tmp_path: Path) -> MailRenderer:
    for lang in LANGS:
        (tmp_path / "mail" / lang).mkdir(parents=True)
        (tmp_path / "mail" / lang / "probe.subject.j2").write_text("t")
        (tmp_path / "mail" / lang / "probe.txt.j2").write_text(
            "{{ at|date_long }} | {{ at|time_short }} | {{ at|zone_name }}"
        )
    return MailRenderer(tmp_path, "fr", "Europe/Paris")


def test_times_seconds_apart_read_as_babel_formats_each(tmp_path: Path):
    renderer = _renderer(tmp_path)
    rng = random.Random(1972)
    starts = [
        datetime(2026, 3, 29, 0, 58, 59, 999999, tzinfo=UTC),  # Paris springs forward at 01:00
        datetime(2026, 10, 25, 0, 59, 30, tzinfo=UTC),  # and falls back
        datetime(2026, 11, 1, 5, 59, 1, tzinfo=UTC),  # New York falls back at 06:00 UTC
        datetime(1920, 6, 30, 23, 59, 0, tzinfo=UTC),  # Amsterdam +00:19:32, Monrovia -00:44:30
        datetime(1971, 12, 31, 23, 58, 0, tzinfo=UTC),
    ]
    cases = []
    for start in starts:
        for _ in range(150):
            at = start + timedelta(seconds=rng.randrange(0, 400), microseconds=rng.randrange(10**6))
            cases.append((at, rng.choice(ZONES), rng.choice(LANGS)))
    rng.shuffle(cases)
    for at, zone, lang in cases + cases[::-1]:
        value = at.isoformat() if rng.random() < 0.5 else at
        text = renderer.render("probe", lang, {"at": value, "tz": zone}).text
        assert text == _expected(at, zone, lang), (at, zone, lang)


def test_a_day_period_is_formatted_per_time(tmp_path: Path):
    """zh_Hant's short time names the day period ("B"): midnight itself (00:00:00) is not
    the same word as half a minute later, so such a pattern is not kept by minute."""
    renderer = _renderer(tmp_path)
    for seconds in ((0, 30), (30, 0)):
        for s in seconds:
            at = datetime(2026, 7, 1, 16, 0, s, tzinfo=UTC)  # midnight in Asia/Taipei
            text = renderer.render("probe", "zh_Hant", {"at": at, "tz": "Asia/Taipei"}).text
            assert text == _expected(at, "Asia/Taipei", "zh_Hant"), at


def test_a_pattern_with_seconds_is_formatted_per_time(monkeypatch, tmp_path: Path):
    """A language whose short time showed seconds would not be kept by minute."""
    renderer = _renderer(tmp_path)
    render._coarse.cache_clear()
    monkeypatch.setattr(render, "_MINUTE_FIELDS", frozenset("hHkKab"))  # "m" now unknown
    try:
        assert not render._coarse("time_short", "en")
        assert render._coarse("date_long", "en")
        at = datetime(2026, 7, 1, 12, 0, 1, tzinfo=UTC)
        for later in (at, at + timedelta(seconds=70), at + timedelta(hours=25)):
            text = renderer.render("probe", "en", {"at": later, "tz": "UTC"}).text
            assert text == _expected(later, "UTC", "en")
    finally:
        render._coarse.cache_clear()


def _jinja_s_own(renderer: MailRenderer, kind: str, lang: str, context: dict) -> tuple:
    """What MailRenderer.render gives when each template is rendered by Template.render."""
    templates = renderer._templates(lang, kind)
    context = {"lang": lang, **context}
    subject = " ".join(templates.subject.render(context).split())
    context["title"] = subject
    html = templates.html.render(context) if templates.html is not None else None
    return subject, templates.text.render(context), html


@pytest.mark.parametrize("kind", sorted(VARIANTS))
def test_every_mail_renders_as_template_render_renders_it(kind: str):
    renderer = MailRenderer(TEMPLATES, "fr", "Europe/Paris")
    for context in VARIANTS[kind]:
        for lang in available_locales(TEMPLATES):
            stored = _stored(context)
            mail = renderer.render(kind, lang, dict(stored))
            assert (mail.subject, mail.text, mail.html) == _jinja_s_own(
                renderer, kind, lang, dict(stored)
            )


def test_a_missing_variable_is_refused_as_template_render_refuses_it():
    renderer = MailRenderer(TEMPLATES, "fr", "Europe/Paris")
    with pytest.raises(UndefinedError) as ours:
        renderer.render("activation", "fr", {"company": "X", "echo": False})
    with pytest.raises(UndefinedError) as jinja:
        _jinja_s_own(renderer, "activation", "fr", {"company": "X", "echo": False})
    assert str(ours.value) == str(jinja.value)


def test_kept_templates_and_autoescape_answers_render_as_jinja_s_own():
    """The base template kept by name and the autoescape answer kept per template: the same
    mails as Jinja's own lookups (its LRU cache, select_autoescape asked every time)."""
    ours = MailRenderer(TEMPLATES, "fr", "Europe/Paris")
    plain = MailRenderer(TEMPLATES, "fr", "Europe/Paris")
    plain.env.autoescape = plain.env.autoescape.__wrapped__
    plain.env.get_template = types.MethodType(Environment.get_template, plain.env)
    for kind, contexts in sorted(VARIANTS.items()):
        for context, lang in itertools.product(contexts, available_locales(TEMPLATES)):
            assert ours.render(kind, lang, _stored(context)) == plain.render(
                kind, lang, _stored(context)
            )
    assert ("_base.html.j2", "fr/confirmation.html.j2") in ours.env._kept
    with pytest.raises(TemplateNotFound):  # not kept: asked again, refused again
        ours.env.get_template("_nothing.j2", "fr/confirmation.html.j2")
    with pytest.raises(TemplateNotFound):
        ours.env.get_template("_nothing.j2", "fr/confirmation.html.j2")


def test_a_zone_or_language_set_in_the_template_is_the_one_used(tmp_path: Path):
    """The filters read tz, default_tz and lang as Context.get/[] read them: a name the
    template sets itself first, then the render's."""
    renderer = _renderer(tmp_path)
    (tmp_path / "mail" / "en" / "probe.txt.j2").write_text(
        '{% set tz = "Asia/Kolkata" %}{{ at|time_short }} {{ at|zone_name }}'
        '{% set lang = "fr" %} {{ at|date_long }}'
    )
    at = datetime(2026, 7, 1, 12, 0, 30, tzinfo=UTC)
    local = at.astimezone(ZoneInfo("Asia/Kolkata"))
    text = renderer.render("probe", "en", {"at": at, "tz": "Europe/Paris"}).text
    assert text == " ".join(
        [
            format_time(local, "short", tzinfo=local.tzinfo, locale="en"),
            get_timezone_name(local, "long", locale="en"),
            format_date(local, "long", locale="fr"),
        ]
    )
