"""Mail templates: templates/mail/{fr,en}/<kind>.{subject,txt,html}.j2, rendered with Jinja2.

The sender renders every mail it sends, so templates are compiled once and kept: the
environment never re-checks files on disk (`auto_reload=False`), and each (locale, kind) keeps
its three templates, the missing HTML of a text-only kind included. A changed template is
picked up at the next start.

The locales are data: every folder of templates/mail/ is a language mail is written in (the
portal offers those that also have a catalogue, templates/portal/i18n/<locale>.json; a test
checks both lists are the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    select_autoescape,
)


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


class MailRenderer:
    def __init__(self, templates_dir: Path, default_locale: str = "fr") -> None:
        self.locales = available_locales(templates_dir)
        if default_locale not in self.locales:
            raise ValueError(f"default_locale {default_locale!r} has no templates/mail folder")
        self.default_locale = default_locale
        self.env = Environment(
            loader=FileSystemLoader(str(templates_dir / "mail")),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            auto_reload=False,
        )
        self._kinds: dict[tuple[str, str], _Kind] = {}

    def locale_for(self, locale: str | None) -> str:
        return locale if locale in self.locales else self.default_locale

    def _templates(self, lang: str, kind: str) -> _Kind:
        found = self._kinds.get((lang, kind))
        if found is None:
            try:
                html: Template | None = self.env.get_template(f"{lang}/{kind}.html.j2")
            except TemplateNotFound:
                html = None
            found = _Kind(
                subject=self.env.get_template(f"{lang}/{kind}.subject.j2"),
                text=self.env.get_template(f"{lang}/{kind}.txt.j2"),
                html=html,
            )
            self._kinds[(lang, kind)] = found
        return found

    def render(self, kind: str, locale: str | None, context: dict[str, Any]) -> Rendered:
        lang = self.locale_for(locale)
        templates = self._templates(lang, kind)
        context = {"lang": lang, **context}
        subject = " ".join(templates.subject.render(context).split())
        context["title"] = subject
        text = templates.text.render(context)
        html = templates.html.render(context) if templates.html is not None else None
        return Rendered(subject=subject, text=text, html=html)
