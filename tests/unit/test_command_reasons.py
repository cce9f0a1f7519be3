"""Issue 15: an agent's refused command is explained in the agent's language. Every
CommandError code has its own words in each locale's templates/mail/<locale>/_command_reasons.j2
(the English ones say exactly what core/commands.py's English reason says)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailgate.core.commands import ERROR_CODES, CommandError, parse_commands
from mailgate.services.assemble import _plain
from mailgate.services.render import MailRenderer

ROOT = Path(__file__).resolve().parents[2]
RENDERER = MailRenderer(ROOT / "templates", "fr")
# One line for each way a command line can be refused (the conflict needs the line before it).
LINES = "#\n#note x\n#status done\n#category \n#cc foo\n#stauts open\n#assign\n#assign a b\n" \
    "#status open\n#status closed\n"  # fmt: skip
NOT_AGENT = CommandError(
    2, "#assign ghost@example.com", "'ghost@example.com' is not an agent", "not_agent",
    {"address": "ghost@example.com"},
)  # fmt: skip


def errors() -> list[CommandError]:
    return [*parse_commands(LINES).errors, NOT_AGENT]


def reasons(locale: str, errs: list[CommandError]) -> list[str]:
    """The reason lines of a command_error mail as the sender renders it (from stored JSON)."""
    context = json.loads(json.dumps({"ticket": {"id": 7}, "errors": errs}, default=_plain))
    text = RENDERER.render("command_error", locale, context).text
    return [line.strip() for line in text.splitlines() if line.startswith("  ")]


def test_every_code_is_met() -> None:
    assert sorted(e.code for e in errors()) == sorted(ERROR_CODES)


def test_english_words_each_reason_as_the_parser_does() -> None:
    errs = errors()
    assert reasons("en", errs) == [e.reason for e in errs]


@pytest.mark.parametrize("locale", [lang for lang in RENDERER.locales if lang != "en"])
def test_other_languages_word_every_reason_their_own_way(locale: str) -> None:
    errs = errors()
    said = reasons(locale, errs)
    assert len(said) == len(errs)
    for error, line in zip(errs, said, strict=True):
        assert line and line != error.reason, (error.code, line)  # not the English fallback


def test_a_mail_queued_before_codes_existed_still_says_why() -> None:
    old = {"line_number": 1, "line": "#status done", "reason": "'#status' needs one of: open"}
    context = {"ticket": {"id": 7}, "errors": [old]}
    assert "needs one of: open" in RENDERER.render("command_error", "fr", context).text
