"""Words for the help centre's search: the same on both databases because mailgate, not the
database, decides what a word is.

A word is a run of letters or digits; it is lowercased, stemmed with Snowball in the text's
language (French or English) once its accents are gone: "Réinitialiser" and
"réinitialisation" both become "reinitialis". A query is parsed into terms (stemmed words),
prefixes (`reinit*`), and phrases (`"mot de passe"`); pure functions, no database.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

import snowballstemmer
from babel import Locale, UnknownLocaleError

LANGUAGES = {"fr": "french", "en": "english"}
WORD = re.compile(r"[^\W_]+")
QUERY_PART = re.compile(r'"([^"]*)"?|(\S+)')
MAX_QUERY_WORDS = 12
MAX_WORD = 60

# Words too common to narrow a search ("comment réinitialiser le mot de passe": the useful
# words are réinitialiser, mot, passe). Kept in the index (phrases need them), dropped from
# queries unless the query has nothing else, or they sit inside a "phrase".
STOPWORDS = {
    "fr": frozenset(
        "a au aux avec ce ces comment dans de des du elle en est et il je la le les leur ma "
        "mais me mes mon ne nous on ou par pas pour qu que qui sa se ses son sur ta te tes "
        "ton tu un une vos votre vous y l d j n s c m t qu quoi quel quelle est-ce".split()
    ),
    "en": frozenset(
        "a an and are as at be by can do does for from how i in is it its my not of on or "
        "our the to what when where which who why with you your me we".split()
    ),
}


@lru_cache(maxsize=200_000)
def fold(text: str) -> str:
    """Lowercase, without accents ("Réinitialiser" -> "reinitialiser")."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


@cache
def _stemmer(locale: str) -> Any:
    return snowballstemmer.stemmer(_algorithm(locale))


def _algorithm(locale: str) -> str:
    """Snowball's name for a language: French and English as always; a language added later
    (issue 15: data only) by its English name ("de" -> "german") when Snowball has it."""
    if locale in LANGUAGES:
        return LANGUAGES[locale]
    try:
        name = str(Locale.parse(locale).get_language_name("en")).lower()
    except (ValueError, TypeError, UnknownLocaleError):
        return "french"
    return name if name in snowballstemmer.algorithms() else "french"


@lru_cache(maxsize=200_000)  # Snowball in pure Python costs ~0.1 ms a word; words repeat
def stem(word: str, locale: str) -> str:
    """One word -> its stem, accents removed first: customers often type without them, and
    "oublie" must meet "oublié" (Snowball stems the two differently when given the accent)."""
    return str(_stemmer(locale).stemWord(fold(word)))[:MAX_WORD]


def words(text: str) -> list[str]:
    """The words of a text, lowercase, accents kept."""
    return [w[:MAX_WORD] for w in WORD.findall(text.lower())]


def index_text(text: str, locale: str) -> str:
    """What goes into the full-text index: stems separated by spaces, in order (phrases)."""
    return " ".join(stem(w, locale) for w in words(text))


def vocabulary(text: str, locale: str) -> dict[str, str]:
    """Folded word -> its stem, for every word of the text (the typo corrector's list)."""
    return {fold(w): stem(w, locale) for w in words(text) if len(w) <= MAX_WORD}


@dataclass(frozen=True)
class Term:
    """One query word: `word` folded (for typo correction and highlighting), `stem` what
    the index holds. `alternatives`: stems of the words one typo away, set by the search."""

    word: str
    stem: str
    prefix: bool = False
    alternatives: tuple[str, ...] = ()

    def choices(self) -> tuple[str, ...]:
        return (self.stem, *self.alternatives) if self.stem else self.alternatives

    def prefixes(self) -> tuple[str, ...]:
        """A word being typed matches indexed stems starting with it, or with its stem
        ("passe*" must find "pass", the stem of "passe")."""
        return tuple(dict.fromkeys(p for p in (self.word, self.stem) if p))


@dataclass(frozen=True)
class Query:
    terms: tuple[Term, ...] = ()  # every one must match (AND), typo alternatives OR'd
    phrases: tuple[tuple[str, ...], ...] = ()  # stems in order
    raw: str = ""
    dropped: tuple[str, ...] = field(default=())  # stop words left out

    @property
    def empty(self) -> bool:
        return not self.terms and not self.phrases

    def highlight_words(self) -> frozenset[str]:
        """Stems and prefixes to mark in passages."""
        stems = {s for t in self.terms for s in t.choices() if not t.prefix}
        stems.update(s for p in self.phrases for s in p)
        return frozenset(stems)

    def highlight_prefixes(self) -> tuple[str, ...]:
        return tuple(sorted({p for t in self.terms if t.prefix for p in t.prefixes()}))


def parse_query(raw: str, locale: str, *, last_is_prefix: bool = False) -> Query:
    """`"mot de passe" reinit*` -> a phrase and a prefix. Stop words are dropped outside
    phrases unless nothing else is left. `last_is_prefix`: the last word is still being
    typed (suggestions as the subject is typed)."""
    raw = raw.strip()[:500]
    terms: list[Term] = []
    phrases: list[tuple[str, ...]] = []
    stops: list[Term] = []
    parts = list(QUERY_PART.finditer(raw))
    for index, part in enumerate(parts):
        if part.group(1) is not None:
            phrase = tuple(stem(w, locale) for w in words(part.group(1)))[:MAX_QUERY_WORDS]
            if len(phrase) > 1:
                phrases.append(phrase)
            elif phrase:
                terms.append(Term(fold(words(part.group(1))[0]), phrase[0]))
            continue
        token = part.group(2)
        star = token.endswith("*")
        found = words(token)
        for n, w in enumerate(found):
            last_word = n == len(found) - 1
            typing = (
                last_is_prefix and index == len(parts) - 1 and last_word and not raw[-1:].isspace()
            )
            if (star and last_word) or (typing and len(w) >= 2):
                terms.append(Term(fold(w), stem(w, locale), prefix=True))
            elif w in STOPWORDS.get(locale, frozenset()) or len(w) < 2:
                stops.append(Term(fold(w), stem(w, locale)))
            else:
                terms.append(Term(fold(w), stem(w, locale)))
    if not terms and not phrases:
        terms = stops
        stops = []
    return Query(
        terms=tuple(terms[:MAX_QUERY_WORDS]),
        phrases=tuple(phrases[:4]),
        raw=raw,
        dropped=tuple(t.word for t in stops),
    )


ALPHABET = "abcdefghijklmnopqrstuvwxyz"  # typos in numbers are not guessed


def one_edit_away(word: str) -> set[str]:
    """Every string one deletion, insertion, substitution or swap of neighbours away."""
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    deletes = {a + b[1:] for a, b in splits if b}
    swaps = {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    replaces = {a + c + b[1:] for a, b in splits if b for c in ALPHABET}
    inserts = {a + c + b for a, b in splits for c in ALPHABET}
    return (deletes | swaps | replaces | inserts) - {word}
