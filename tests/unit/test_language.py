"""Issue 15: which language an account keeps (core/language.py), and the language of the text
someone wrote (core/language_detect.py: lingua, offline, among the configured locales)."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from mailgate.core.language import Source, best_evidence, remembered
from mailgate.core.language_detect import (
    MIN_LETTERS,
    QUICK_CHARS,
    detect_language,
    parse_detecting,
    sample,
)

LOCALES = ("en", "fr")

FRENCH = (
    "Bonjour,\n\nDepuis hier soir je n'arrive plus à me connecter à mon compte : le site me dit "
    "que mon mot de passe est faux alors que je ne l'ai pas changé. Pouvez-vous m'aider ?\n\n"
    "Merci d'avance,\nJean"
)
ENGLISH = (
    "Hello,\n\nSince last night I cannot sign in to my account: the site says my password is "
    "wrong although I have not changed it. Could you help me, please?\n\nThanks,\nBob"
)


def test_french_and_english_mails_are_told_apart() -> None:
    assert detect_language(sample(FRENCH), LOCALES) == "fr"
    assert detect_language(sample(ENGLISH), LOCALES) == "en"


@pytest.mark.parametrize("text", ["ok merci", "Thanks!", "", "12345 678 / 2026-12-02", "OK"])
def test_a_short_text_is_not_guessed(text: str) -> None:
    assert detect_language(text, LOCALES) is None


def test_letters_are_counted_up_to_the_minimum() -> None:
    # 19 letters among digits and spaces: too little to tell
    assert detect_language("1 2 3 4 Bonjour, merci pour mon 2026 12 02", LOCALES) is None
    text = "1 2 3 " * 50 + "Bonjour, merci pour votre aide"
    assert sum(ch.isalpha() for ch in text) > MIN_LETTERS
    assert detect_language(text, LOCALES) == "fr"


def test_a_reply_is_judged_on_the_new_text_not_the_quoted_history() -> None:
    quoted = "\n".join("> " + line for line in FRENCH.splitlines())
    reply = (
        f"{ENGLISH}\n\nLe 1 déc. 2026 à 10:02, Support <support@example.com> a écrit :\n{quoted}"
    )
    assert detect_language(sample(reply), LOCALES) == "en"


def test_a_mixed_mail_goes_to_the_language_most_of_it_is_in() -> None:
    mixed = "Bonjour ! " + ENGLISH  # a French greeting, the rest in English
    assert detect_language(sample(mixed), LOCALES) == "en"


def test_a_half_and_half_mail_is_not_guessed_with_a_high_threshold() -> None:
    half = "Bonjour, merci beaucoup. Hello, thank you very much."
    assert detect_language(half, LOCALES, min_confidence=0.99) is None


def test_only_the_configured_locales_are_candidates() -> None:
    # German text, with only French and English configured, is never "de".
    german = "Guten Tag, ich kann mich seit gestern Abend nicht mehr bei meinem Konto anmelden."
    assert detect_language(german, LOCALES) in (None, "en", "fr")
    assert detect_language(FRENCH, ("fr",)) is None  # one candidate: nothing to tell apart


def _raw(body: str, headers: dict[str, str] | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Bob <bob@client.example>"
    msg["To"] = "support@example.com"
    msg["Subject"] = "Sign-in"
    msg["Message-ID"] = "<1@client.example>"
    msg.set_content(body)  # before the headers: it clears every Content-* one
    for name, value in (headers or {}).items():
        msg[name] = value
    return msg.as_bytes()


def test_the_parsed_mail_carries_the_detected_language() -> None:
    mail = parse_detecting(_raw(ENGLISH), LOCALES)
    assert (mail.locale, mail.detected_locale) == (None, "en")


def test_the_header_wins_and_is_kept_to_the_configured_locales() -> None:
    mail = parse_detecting(_raw(ENGLISH, {"Content-Language": "fr-FR"}), LOCALES)
    assert (mail.locale, mail.detected_locale) == ("fr", None)  # no detection spent on it
    mail = parse_detecting(_raw(FRENCH, {"Content-Language": "de-DE, en"}), LOCALES)
    assert mail.locale == "en"
    mail = parse_detecting(_raw(FRENCH, {"Content-Language": "de"}), LOCALES)
    assert (mail.locale, mail.detected_locale) == (None, "fr")


def test_evidence_order_header_then_text() -> None:
    assert best_evidence("fr", "en") == ("fr", Source.HEADER)
    assert best_evidence(None, "en") == ("en", Source.DETECTED)
    assert best_evidence(None, None) == (None, Source.DEFAULT)


def test_better_evidence_replaces_worse_and_equal_evidence_does_not() -> None:
    assert remembered("fr", "default", "en", Source.BROWSER) == ("en", Source.BROWSER)
    assert remembered("en", "browser", "fr", Source.DETECTED) == ("fr", Source.DETECTED)
    assert remembered("fr", "detected", "en", Source.HEADER) == ("en", Source.HEADER)
    assert remembered("fr", "detected", "en", Source.DETECTED) == ("fr", Source.DETECTED)
    assert remembered("fr", "header", "en", Source.DETECTED) == ("fr", Source.HEADER)
    assert remembered("fr", "header", None, Source.HEADER) == ("fr", Source.HEADER)


def test_a_choice_is_only_replaced_by_another_choice() -> None:
    assert remembered("en", "chosen", "fr", Source.HEADER) == ("en", Source.CHOSEN)
    assert remembered("en", "chosen", "fr", Source.DETECTED) == ("en", Source.CHOSEN)
    assert remembered("en", "chosen", "fr", Source.CHOSEN) == ("fr", Source.CHOSEN)
    assert remembered("en", "bogus", "fr", Source.DETECTED) == ("fr", Source.DETECTED)


class _Reading:
    """The real detector, recording how many characters each call reads."""

    def __init__(self, detector: object) -> None:
        self.detector = detector
        self.lengths: list[int] = []

    def compute_language_confidence_values(self, text: str) -> list[object]:
        self.lengths.append(len(text))
        return self.detector.compute_language_confidence_values(text)  # type: ignore[attr-defined]


@pytest.fixture
def reading(monkeypatch: pytest.MonkeyPatch) -> _Reading:
    from mailgate.core import language_detect

    recorder = _Reading(language_detect._detector(LOCALES))
    monkeypatch.setattr(language_detect, "_detector", lambda _locales: recorder)
    return recorder


def test_a_clear_beginning_is_the_answer_without_reading_the_rest(reading: _Reading) -> None:
    text = sample(FRENCH + "\n" + FRENCH)
    assert len(text) > QUICK_CHARS
    assert detect_language(text, LOCALES) == "fr"
    assert reading.lengths == [QUICK_CHARS]


def test_an_unsure_beginning_reads_the_whole_sample(reading: _Reading) -> None:
    # Names first (no language to see in them), the French sentence only after them.
    names = "Marie Dupont, Robert Smith, Paris, London, Lyon, Oxford. " * 2
    text = sample(names + "Je n'arrive plus à me connecter à mon compte, pouvez-vous m'aider ?")
    assert len(text) > QUICK_CHARS
    assert detect_language(text, LOCALES) == "fr"
    assert reading.lengths == [QUICK_CHARS, len(text)]


def test_a_short_text_is_read_once(reading: _Reading) -> None:
    assert detect_language(ENGLISH[:100], LOCALES) == "en"
    assert reading.lengths == [100]
