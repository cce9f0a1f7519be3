"""Mail templates: templates/mail/{fr,en}/<kind>.{subject,txt,html}.j2, rendered with Jinja2.

The sender renders every mail it sends, so templates are compiled once and kept: the
environment never re-checks files on disk (`auto_reload=False`), and each (locale, kind) keeps
its three templates, the missing HTML of a text-only kind included. A changed template is
picked up at the next start.

The locales are data: every folder of templates/mail/ is a language mail is written in (the
portal offers those that also have a catalogue, templates/portal/i18n/<locale>.json; a test
checks both lists are the same).

Times (issue 15): a template says when with `{{ at|date_long }}`, `{{ at|time_short }}` and
`{{ at|zone_name }}` ("9 décembre 2026", "10:02", "heure normale d’Europe centrale"), and
numbers with `{{ n|number }}` ("12 345" / "12,345"), in the
mail's language (Babel, CLDR: a new language needs no code) and in the recipient's time zone:
`tz` in the context (the account's, from the portal), else `[mailgate] default_timezone`. A
time in a stored context is an ISO 8601 string (services/assemble.py); both are accepted.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale
from babel.dates import (
    format_date,
    format_time,
    get_date_format,
    get_time_format,
    get_timezone_name,
    tokenize_pattern,
)
from babel.numbers import format_decimal
from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    pass_context,
    select_autoescape,
)
from jinja2.runtime import Context
from jinja2.utils import internalcode


def available_locales(templates_dir: Path) -> tuple[str, ...]:
    """The locales mail has templates for (the folders of templates/mail/), in name order."""
    return tuple(sorted(f.name for f in (templates_dir / "mail").iterdir() if f.is_dir()))


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None


@dataclass(frozen=True)
class _Kind:
    subject: Template
    text: Template
    html: Template | None  # a kind may be text-only


class _Environment(Environment):
    """Templates are never reloaded (`auto_reload=False`): the one an HTML mail extends
    (_base.html.j2), which Jinja's compiled code asks for at every render, is kept in a dict
    instead of being looked up in Jinja's locked LRU cache each time. A missing one still
    raises TemplateNotFound every time."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._kept: dict[tuple[str, str | None], Template] = {}

    @internalcode  # left out of a template error's traceback, as Jinja's own is
    def get_template(
        self,
        name: str | Template,
        parent: str | None = None,
        globals: MutableMapping[str, Any] | None = None,
    ) -> Template:
        if globals is not None or not isinstance(name, str):
            return super().get_template(name, parent, globals)
        found = self._kept.get((name, parent))
        if found is None:
            found = self._kept[(name, parent)] = super().get_template(name, parent)
        return found


class MailRenderer:
    def __init__(
        self, templates_dir: Path, default_locale: str = "fr", default_timezone: str = "UTC"
    ) -> None:
        self.locales = available_locales(templates_dir)
        if default_locale not in self.locales:
            raise ValueError(f"default_locale {default_locale!r} has no templates/mail folder")
        self.default_locale = default_locale
        ZoneInfo(default_timezone)  # a bad name stops start-up, not a mail
        self.env = _Environment(
            loader=FileSystemLoader(str(templates_dir / "mail")),
            # Asked at every render (Jinja's EvalContext): the answer for a name is kept.
            autoescape=lru_cache(maxsize=None)(
                select_autoescape(enabled_extensions=("html.j2",), default=False)
            ),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            auto_reload=False,
        )
        # The filters are module functions (no per-renderer state): the site's zone is a global.
        self.env.globals["default_tz"] = default_timezone
        self.env.filters.update(
            date_long=_date_long, time_short=_time_short, zone_name=_zone_name, number=_number
        )
        self._kinds: dict[tuple[str, str], _Kind] = {}

    def locale_for(self, locale: str | None) -> str:
        return locale if locale in self.locales else self.default_locale

    def _templates(self, lang: str, kind: str) -> _Kind:
        found = self._kinds.get((lang, kind))
        if found is None:
            try:
                html: Template | None = self._load(f"{lang}/{kind}.html.j2")
            except TemplateNotFound:
                html = None
            found = _Kind(
                subject=self._load(f"{lang}/{kind}.subject.j2"),
                text=self._load(f"{lang}/{kind}.txt.j2"),
                html=html,
            )
            self._kinds[(lang, kind)] = found
        return found

    def _load(self, name: str) -> Template:
        template = self.env.get_template(name)
        # A template's globals are a ChainMap over the environment's, copied into each render's
        # context (dict(), set()) at a third of Jinja's cost per render. The environment's are
        # all set in __init__, before any template is loaded: a dict of the same is the same.
        template.globals = dict(template.globals)
        return template

    def render(self, kind: str, locale: str | None, context: dict[str, Any]) -> Rendered:
        lang = self.locale_for(locale)
        templates = self._templates(lang, kind)
        context = {"lang": lang, **context}
        subject = " ".join(_render(templates.subject, context).split())
        context["title"] = subject
        text = _render(templates.text, context)
        html = _render(templates.html, context) if templates.html is not None else None
        return Rendered(subject=subject, text=text, html=html)


def _render(template: Template, variables: dict[str, Any]) -> str:
    """`template.render(variables)`: the same Context (Jinja's new_context makes it of the
    template's globals overridden by the variables), made without new_context's keyword
    unpacking and Template.render's copy of the variables (~1 µs of ~3-7 per render)."""
    env = template.environment
    context = env.context_class(
        env, {**template.globals, **variables}, template.name, template.blocks, template.globals
    )
    try:
        return env.concat(template.root_render_func(context))  # type: ignore[no-any-return]
    except Exception:
        env.handle_exception()  # raises it again, the template's lines in its traceback
        raise


@lru_cache(maxsize=32)
def _moment(value: datetime | str, tz: str, default_tz: str) -> datetime:
    """`value` on the recipient's clock (`tz`, else the site's). Kept for the three filters
    a template applies to the same time."""
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at  # stored times are UTC
    try:
        zone = ZoneInfo(tz or default_tz)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo(default_tz)  # an account's zone that no longer exists
    return at.astimezone(zone)


# The sender formats the same time twice per mail (text and HTML part), and Babel's own work
# (parsing the locale, looking up CLDR zone names) is the same for every mail of a language:
# both are kept. Every cached result is a pure function of its key.


@lru_cache(maxsize=64)
def _locale(lang: str) -> Locale:
    return Locale.parse(lang)


# Pattern letters that read only the local date (of a date pattern), or only the local hour
# and minute (of a time pattern). A pattern of such fields alone writes the same text for
# every moment of that day, or of that minute: its result is kept by day or by minute (each
# mail's time differs, to the microsecond, so a key of the exact time never hits). Babel
# formats the date of a datetime, and the time of one already in `tzinfo` as it is
# (astimezone to its own zone is itself): only the local fields count, whatever the zone's
# offset, sub-minute ones included. A pattern with any other field is formatted per time.
_DATE_FIELDS = frozenset("GyYuUQqMLlwWdDFgEec")
# Not "b" or "B" (noon, "in the morning"): Babel's day periods read the second ("at" noon).
_MINUTE_FIELDS = frozenset("hHkKma")


@lru_cache(maxsize=64)
def _coarse(how: str, lang: str) -> bool:
    """Whether `how`'s pattern in `lang` reads the day only (date_long) or the hour and
    minute only (time_short)."""
    if how == "date_long":
        pattern, allowed = get_date_format("long", locale=_locale(lang)), _DATE_FIELDS
    else:
        pattern, allowed = get_time_format("short", locale=_locale(lang)), _MINUTE_FIELDS
    return all(
        kind != "field" or value[0] in allowed for kind, value in tokenize_pattern(pattern.pattern)
    )


_BY_DAY_OR_MINUTE: dict[tuple[object, ...], str] = {}


def _by_day_or_minute(how: str, at: datetime, lang: str) -> str:
    if how == "date_long":
        key: tuple[object, ...] = (how, at.year, at.month, at.day, lang)
    else:
        key = (how, at.hour, at.minute, lang)
    found = _BY_DAY_OR_MINUTE.get(key)
    if found is None:
        if len(_BY_DAY_OR_MINUTE) >= 4096:  # days add up over the months: start again
            _BY_DAY_OR_MINUTE.clear()
        found = _BY_DAY_OR_MINUTE[key] = _babel(how, at, lang)
    return found


def _babel(how: str, at: datetime, lang: str) -> str:
    if how == "date_long":
        return str(format_date(at, "long", locale=_locale(lang)))
    return str(format_time(at, "short", tzinfo=at.tzinfo, locale=_locale(lang)))


@lru_cache(maxsize=256)
def _formatted(how: str, value: datetime | str, tz: str, default_tz: str, lang: str) -> str:
    at = _moment(value, tz, default_tz)
    if how != "zone_name":
        return _by_day_or_minute(how, at, lang) if _coarse(how, lang) else _babel(how, at, lang)
    # A zone's name depends on the zone, daylight time or not, the offset (the fallback names
    # it: "GMT+05:30") and the language; not on the day.
    assert isinstance(at.tzinfo, ZoneInfo)
    key = (at.tzinfo.key, at.dst(), at.utcoffset(), lang)
    found = _ZONE_NAMES.get(key)
    if found is None:  # a few per zone and language: kept for good
        found = _ZONE_NAMES[key] = str(get_timezone_name(at, "long", locale=_locale(lang)))
    return found


_ZONE_NAMES: dict[tuple[str, timedelta | None, timedelta | None, str], str] = {}


def _filter(how: str, context: Context, value: datetime | str) -> str:
    # What context.get("tz"), context["default_tz"] and context["lang"] read (a name set in
    # the template itself, else the render's), without their three calls each.
    own, given = context.vars, context.parent
    tz = (own["tz"] if "tz" in own else given.get("tz")) or ""
    default_tz = own["default_tz"] if "default_tz" in own else given["default_tz"]
    lang = own["lang"] if "lang" in own else given["lang"]
    return _formatted(how, value, tz, default_tz, str(lang))


@pass_context
def _date_long(context: Context, value: datetime | str) -> str:
    return _filter("date_long", context, value)


@pass_context
def _time_short(context: Context, value: datetime | str) -> str:
    return _filter("time_short", context, value)


@pass_context
def _zone_name(context: Context, value: datetime | str) -> str:
    return _filter("zone_name", context, value)


@pass_context
def _number(context: Context, value: float) -> str:
    return format_decimal(value, locale=_locale(str(context["lang"])))
