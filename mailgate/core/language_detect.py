"""The language of the text someone wrote, offline, among the configured locales (issue 15).

lingua with its trigram models only ("low accuracy mode": ~25 MB less memory than the full
models, built in ~30 ms), on the first SAMPLE_CHARS characters of the new text (quoted history
and signature left out): a few hundred microseconds per mail, in the parse worker. Short texts
("ok merci") are too little to tell, and an answer below MIN_CONFIDENCE is no answer: None, not
a guess.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache, partial
from itertools import islice

from lingua import IsoCode639_1, Language, LanguageDetector, LanguageDetectorBuilder

from mailgate.core.mail import InboundMail, parse_mail
from mailgate.core.quotes import strip_quotes

MIN_LETTERS = 20  # fewer letters than this: too little text to tell
MIN_CONFIDENCE = 0.8  # the best language's share of the two (or more) candidates
# The first characters of the new text are enough, and bound the cost (lingua's is linear in
# them: ~0.43 us each). 200, not 300: on 1861 French and English paragraphs (man pages) 1853
# answers are the same (the rest: None instead of a language, or the other way), for a third
# less of the parse worker's largest cost.
SAMPLE_CHARS = 200
# A first look at the sample's first QUICK_CHARS: when it is this sure, it is the answer and the
# rest is not read (lingua's cost grows with the characters it reads: a third fewer instructions
# on the bench's mails). On the same kind of corpus (10,632 paragraphs of French and English man
# pages) the answers right, wrong and None moved by +1, +9 and -10 against the whole sample's;
# the first look was sure for 98 % of them. Unsure, the whole sample decides, as before.
QUICK_CHARS = 120
QUICK_CONFIDENCE = 0.95
QUOTE_SCAN_CHARS = 2000  # quoted history is looked for in the mail's beginning only


@lru_cache(maxsize=4)
def _detector(locales: tuple[str, ...]) -> LanguageDetector | None:
    languages = []
    for code in locales:
        try:
            languages.append(Language.from_iso_code_639_1(IsoCode639_1.from_str(code)))
        except ValueError:  # a locale lingua does not know: it cannot be detected
            continue
    if len(languages) < 2:  # one candidate is no detection
        return None
    return LanguageDetectorBuilder.from_languages(*languages).with_low_accuracy_mode().build()


def sample(text: str) -> str:
    """The words the person wrote in this mail: quoted history and signature left out."""
    return strip_quotes(text[:QUOTE_SCAN_CHARS])[:SAMPLE_CHARS]


def detect_language(
    text: str, locales: tuple[str, ...], min_confidence: float = MIN_CONFIDENCE
) -> str | None:
    """The locale (among `locales`) `text` is written in, or None if it cannot be told."""
    if len(list(islice(filter(str.isalpha, text), MIN_LETTERS))) < MIN_LETTERS:
        return None  # (counted up to MIN_LETTERS only)
    detector = _detector(tuple(sorted(locales)))
    if detector is None:
        return None
    values = None
    if len(text) > QUICK_CHARS:
        first = detector.compute_language_confidence_values(text[:QUICK_CHARS])
        if first and first[0].value >= max(QUICK_CONFIDENCE, min_confidence):
            values = first
    if values is None:
        values = detector.compute_language_confidence_values(text)
    if not values or values[0].value < min_confidence:
        return None
    code = values[0].language.iso_code_639_1.name.lower()
    return code if code in locales else None


def mail_language(mail: InboundMail, locales: tuple[str, ...]) -> str | None:
    return detect_language(sample(mail.text), locales)


def header_language(mail: InboundMail, locales: tuple[str, ...]) -> str | None:
    """The first of the mail's Content-Language (else Accept-Language) tags we have a locale for."""
    if mail.locale in locales:
        return mail.locale
    for name in ("Content-Language", "Accept-Language"):
        for item in (mail.header(name) or "").split(",")[:20]:
            primary = item.split(";")[0].strip().lower().split("-")[0]
            if primary in locales:
                return primary
    return None


def parse_detecting(raw: bytes, locales: tuple[str, ...]) -> InboundMail:
    """parse_mail, its header language kept to `locales`, and the language of the text the
    writer wrote (for the parse workers: `functools.partial(parse_detecting, locales=...)`)."""
    mail = parse_mail(raw)
    header = header_language(mail, locales)
    # The header outranks the text: no need to spend the detection on it.
    detected = None if header else mail_language(mail, locales)
    return replace(mail, locale=header, detected_locale=detected)


def parser_for(locales: tuple[str, ...]) -> Callable[[bytes], InboundMail]:
    """The parse function for ingest and its workers (picklable: a partial of a module-level
    function), detecting among `locales`."""
    return partial(parse_detecting, locales=tuple(locales))
