"""Mail templates: templates/mail/{fr,en}/<kind>.{subject,txt,html}.j2, rendered with Jinja2."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

LOCALES = ("fr", "en")


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None


class MailRenderer:
    def __init__(self, templates_dir: Path, default_locale: str = "fr") -> None:
        self.default_locale = default_locale
        self.env = Environment(
            loader=FileSystemLoader(str(templates_dir / "mail")),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )

    def locale_for(self, locale: str | None) -> str:
        return locale if locale in LOCALES else self.default_locale

    def render(self, kind: str, locale: str | None, context: dict[str, Any]) -> Rendered:
        lang = self.locale_for(locale)
        context = {"lang": lang, **context}
        subject = self.env.get_template(f"{lang}/{kind}.subject.j2").render(context)
        context["title"] = " ".join(subject.split())
        text = self.env.get_template(f"{lang}/{kind}.txt.j2").render(context)
        html: str | None = None
        try:
            template = self.env.get_template(f"{lang}/{kind}.html.j2")
        except Exception:  # a kind may be text-only
            template = None
        if template is not None:
            html = template.render(context)
        return Rendered(subject=" ".join(subject.split()), text=text, html=html)
