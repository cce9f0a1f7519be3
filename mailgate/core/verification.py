"""Recognise a third-party service's sign-up or verification mail sent to our address.

Someone who signs up elsewhere with support@ as their address gets the service's "confirm your
e-mail" link or one-time code delivered to us; ticketing and acknowledging it would put a
working credential in front of whoever can read or steer the ticket. Such mail is quarantined.

The test is narrow on purpose, so that a customer writing about a code, a password or a link
is never held: a no-reply style SENDER (its local part) AND either
- a code phrase ("verification code", "votre code est", "code de connexion"...) and a code
  (4 to 8 digits, "123 456", "G-123456", "4BX-R9C"), or
- a link phrase ("confirm your email", "activez votre compte"...) and a link (http/https),
- or a phrase added by the operator and either a code or a link.
Phrases are matched against the subject and the text folded: lower case, accents removed,
white space collapsed. The rules are a value (`VerificationRules`); `DEFAULT_RULES` is the
built-in list, and `with_extra` adds the operator's patterns (`[security]
verification_senders`, `verification_phrases`) or turns the check off
(`hold_verification_mail = false`). docs/hygiene.md lists the rules.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

__all__ = [
    "CODE_PHRASES",
    "DEFAULT_RULES",
    "LINK_PHRASES",
    "SENDERS",
    "VerificationRules",
    "third_party_verification",
]

SCAN_CHARS = 20000  # the code or link is near the top; a huge mail is not scanned whole

# Local parts (folded) of no-reply style senders, each a full match; "+anything", "-anything"
# or ".anything" after one of them matches too (noreply-github, no-reply.fr, verify+abc).
SENDERS: tuple[str, ...] = (
    r"no[-_.]?reply",
    r"do[-_.]?not[-_.]?reply",
    r"ne[-_.]?pas[-_.]?repondre",
    r"nepasrepondre",
    r"notifications?",
    r"notify",
    r"verify",
    r"verification",
    r"confirm(?:ation)?",
    r"accounts?",
    r"account[-_.]security(?:[-_.]noreply)?",
    r"security",
    r"securite",
    r"signup",
    r"sign[-_.]up",
    r"welcome",
    r"bienvenue",
    r"auth",
    r"login",
    r"identity",
    r"mailer",
    r"info[-_.]noreply",
    r"alertes?",
    r"alerts?",
    r"otp",
)

# Phrases announcing a one-time code (folded text).
CODE_PHRASES: tuple[str, ...] = (
    r"\b(?:verification|confirmation|security|login|log[- ]in|sign[- ]?in|sign[- ]?up|one[- ]time"
    r"|activation|access|authentication|2fa|otp|temporary(?: \w+)? login|single[- ]use)\s+code\b",
    r"\b(?:one[- ]time\s+)?pass\s?code\b",
    r"\byour\s+(?:\w+\s+)?code\s+is\b",
    r"\benter\s+(?:this|the)\s+code\b",
    r"\bcode\s+(?:de\s+|d')?(?:verification|confirmation|securite|validation|connexion"
    r"|activation|acces|authentification|inscription)\b",
    r"\bcode\s+(?:a\s+usage\s+unique|temporaire|unique)\b",
    r"\bmot\s+de\s+passe\s+(?:a\s+usage\s+unique|temporaire)\b",
    r"\bvotre\s+code\s+(?:\w+\s+)?(?:est|:)",
    r"\b(?:saisissez|entrez|saisir|entrer)\s+(?:ce|le)\s+code\b",
)

# Phrases asking to follow a link to confirm an address or an account (folded text).
LINK_PHRASES: tuple[str, ...] = (
    r"\b(?:confirm|verify|validate|activate)\s+(?:your\s+)?(?:new\s+)?(?:e-?mail|email\s+address"
    r"|address|account|registration|sign[- ]?up|subscription)\b",
    r"\bcomplete\s+your\s+(?:sign[- ]?up|registration|account\s+setup)\b",
    r"\b(?:confirme[rz]?|verifie[rz]?|valide[rz]?|active[rz]?|activation\s+de)\s+"
    r"(?:votre\s+|ton\s+|de\s+votre\s+)?(?:nouvelle\s+)?"
    r"(?:adresse|e-?mail|courriel|compte|inscription|espace)\b",
    r"\bfinalise[rz]?\s+(?:votre\s+|ton\s+)?(?:inscription|compte|creation)\b",
)

_CODE = re.compile(
    r"(?<![\w-])(?:\d{4,8}|\d{3}[- ]\d{3})(?![\w-])"  # 482913, 731 204, 731-204
    r"|(?<![\w-])[A-Z]-\d{4,8}(?![\w-])"  # G-482913
    r"|(?<![\w-])(?=[A-Z0-9-]{0,6}\d)[A-Z0-9]{3}-[A-Z0-9]{3}(?![\w-])"  # 4BX-R9C
)
_LINK = re.compile(r"https?://", re.IGNORECASE)


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _fold(text: str) -> str:
    return " ".join(_strip_accents(text).lower().split())


def _compile(patterns: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    # Accents are folded out of the text, so out of the pattern too ("vérifiez" finds
    # "Vérifiez"); case by the flag, not by lowering the pattern (which would turn \D into \d).
    return tuple(re.compile(_strip_accents(p), re.IGNORECASE) for p in patterns)


def _sender_regex(patterns: Iterable[str]) -> re.Pattern[str]:
    alternatives = "|".join(f"(?:{_strip_accents(p)})" for p in patterns)
    return re.compile(rf"^(?:{alternatives})(?:[-_.+].*)?$", re.IGNORECASE)


@dataclass(frozen=True)
class VerificationRules:
    """What makes a mail someone else's sign-up or verification mail; `enabled=False` holds
    nothing. Build with `VerificationRules()` (the built-in lists) or `with_extra`."""

    enabled: bool = True
    senders: tuple[str, ...] = SENDERS
    code_phrases: tuple[str, ...] = CODE_PHRASES
    link_phrases: tuple[str, ...] = LINK_PHRASES
    extra_phrases: tuple[str, ...] = ()  # an operator's: held with either a code or a link
    _sender: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _code: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _link: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _extra: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Compiled once here (a bad pattern fails at start-up, not on the first mail).
        object.__setattr__(self, "_sender", _sender_regex(self.senders))
        object.__setattr__(self, "_code", _compile(self.code_phrases))
        object.__setattr__(self, "_link", _compile(self.link_phrases))
        object.__setattr__(self, "_extra", _compile(self.extra_phrases))

    def with_extra(
        self, senders: Iterable[str] = (), phrases: Iterable[str] = (), enabled: bool = True
    ) -> VerificationRules:
        """These rules plus an operator's sender local-part patterns and phrase patterns
        (regular expressions; raises re.error on a bad one)."""
        return replace(
            self,
            enabled=enabled,
            senders=self.senders + tuple(senders),
            extra_phrases=self.extra_phrases + tuple(phrases),
        )

    def no_reply_sender(self, from_addr: str) -> bool:
        local = from_addr.rsplit("@", 1)[0].strip('"') if "@" in from_addr else ""
        return bool(local) and bool(self._sender.match(_fold(local)))

    def reason(self, from_addr: str, subject: str, text: str) -> str | None:
        if not self.enabled or not self.no_reply_sender(from_addr):
            return None
        original = f"{subject}\n{text[:SCAN_CHARS]}"
        words = _fold(original)
        has_code = _CODE.search(original) is not None
        has_link = _LINK.search(text[:SCAN_CHARS]) is not None
        if has_code and any(p.search(words) for p in self._code):
            return "third-party verification mail (a one-time code from a no-reply sender)"
        if has_link and any(p.search(words) for p in self._link):
            return "third-party sign-up mail (a confirmation link from a no-reply sender)"
        if (has_code or has_link) and any(p.search(words) for p in self._extra):
            return "third-party verification mail (a configured phrase from a no-reply sender)"
        return None


DEFAULT_RULES = VerificationRules()


def third_party_verification(
    from_addr: str, subject: str, text: str, rules: VerificationRules = DEFAULT_RULES
) -> str | None:
    """Why this looks like someone else's sign-up mail, or None."""
    return rules.reason(from_addr, subject, text)
