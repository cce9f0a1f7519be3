"""core/verification.py over a corpus of real-looking mail (tests/data/verification): a
third-party service's codes and confirmation links are held (held/), a customer writing about
a code, a password, a link or an activation problem is not (not_held/). And the rules as a
value: the built-in lists, an operator's additions, and the switch that turns them off."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailgate.core.mail import parse_mail
from mailgate.core.verification import (
    DEFAULT_RULES,
    VerificationRules,
    third_party_verification,
)

CORPUS = Path(__file__).resolve().parents[1] / "data" / "verification"
HELD = sorted((CORPUS / "held").glob("*.eml"))
NOT_HELD = sorted((CORPUS / "not_held").glob("*.eml"))


def _check(path: Path, rules: VerificationRules = DEFAULT_RULES) -> str | None:
    mail = parse_mail(path.read_bytes())
    return third_party_verification(mail.from_addr, mail.subject, mail.text, rules)


def test_the_corpus_covers_both_languages_and_enough_cases():
    assert len(HELD) >= 12 and len(NOT_HELD) >= 8
    for group in (HELD, NOT_HELD):
        assert {p.stem.rsplit("_", 1)[1] for p in group} == {"en", "fr"}


@pytest.mark.parametrize("path", HELD, ids=lambda p: p.stem)
def test_sign_up_codes_and_links_are_held(path: Path):
    assert _check(path) is not None


@pytest.mark.parametrize("path", NOT_HELD, ids=lambda p: p.stem)
def test_customers_writing_about_codes_passwords_and_links_are_not(path: Path):
    assert _check(path) is None


@pytest.mark.parametrize("path", HELD, ids=lambda p: p.stem)
def test_switched_off_nothing_is_held(path: Path):
    assert _check(path, DEFAULT_RULES.with_extra(enabled=False)) is None


def test_the_old_three_argument_call_uses_the_default_rules():
    assert third_party_verification("noreply@x.example", "Your code", "Your code is 482913.")
    assert VerificationRules() == DEFAULT_RULES


def test_an_operator_adds_a_sender_and_a_phrase():
    sender, subject = "robot@crm.example", "Jeton d'accès"
    text = "Voici votre jeton d'accès : 582147"
    assert third_party_verification(sender, subject, text) is None
    only_sender = DEFAULT_RULES.with_extra(senders=[r"robot"])
    assert third_party_verification(sender, subject, text, only_sender) is None  # no phrase
    rules = DEFAULT_RULES.with_extra(senders=[r"robot"], phrases=[r"jeton d'accès"])
    reason = third_party_verification(sender, subject, text, rules)
    assert reason is not None and "configured phrase" in reason
    # The phrase alone, without a code or a link, is not enough.
    assert third_party_verification(sender, subject, "Votre jeton d'accès expire.", rules) is None
    # The built-in rules are untouched (a frozen value).
    assert DEFAULT_RULES.extra_phrases == () and "robot" not in DEFAULT_RULES.senders


def test_operator_patterns_ignore_case_and_accents_as_the_text_does():
    rules = DEFAULT_RULES.with_extra(senders=[r"Robot\d*"], phrases=[r"\bJETON D'ACCÈS\b"])
    assert third_party_verification(
        "robot42@crm.example", "x", "Votre Jeton d'acces : 582147", rules
    )


def test_a_bad_pattern_fails_when_the_rules_are_built():
    with pytest.raises(re.error):
        DEFAULT_RULES.with_extra(phrases=["(unclosed"])
