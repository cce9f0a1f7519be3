"""Recognise a third-party service's sign-up or verification mail sent to our address.

Someone who signs up elsewhere with support@ as their address gets the service's "confirm your
e-mail" link or one-time code delivered to us; ticketing and acknowledging it would put a
working credential in front of whoever can read or steer the ticket. Such mail is quarantined.
The test is narrow on purpose: a no-reply style sender AND a code or a confirmation link.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["third_party_verification"]

_NO_REPLY_LOCAL = re.compile(
    r"^(?:no[-_.]?reply|do[-_.]?not[-_.]?reply|ne[-_.]?pas[-_.]?repondre|notifications?|verify"
    r"|verification|confirm(?:ation)?|accounts?|account[-_.]security|security|signup|sign[-_.]up"
    r"|welcome|auth|login|identity|mailer|info[-_.]noreply)(?:[-_.+].*)?$"
)
_CODE_WORDS = re.compile(
    r"\b(?:verification|confirmation|security|login|sign[- ]?in|one[- ]time|activation|access"
    r"|authentication|2fa|otp)\s+code\b"
    r"|\bcode\s+(?:de\s+|d')?(?:verification|confirmation|securite|validation|connexion"
    r"|activation|acces)\b"
    r"|\byour\s+code\s+is\b|\bvotre\s+code\s+(?:est|:)"
)
_CODE = re.compile(r"(?<![\w-])(?:\d{4,8}|\d{3}[- ]\d{3})(?![\w-])")
_LINK_WORDS = re.compile(
    r"\b(?:confirm|verify|validate|activate)\s+(?:your\s+)?(?:e-?mail|email\s+address|address"
    r"|account|registration|sign[- ]?up|subscription)\b"
    r"|\b(?:confirme[rz]?|verifie[rz]?|valide[rz]?|active[rz]?)\s+(?:votre\s+|ton\s+)?"
    r"(?:adresse|e-?mail|courriel|compte|inscription)\b"
)
_LINK = re.compile(r"https?://", re.IGNORECASE)


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).lower().split())


def _no_reply_sender(from_addr: str) -> bool:
    local = from_addr.rsplit("@", 1)[0].strip('"').lower() if "@" in from_addr else ""
    return bool(local) and bool(_NO_REPLY_LOCAL.match(_fold(local)))


def third_party_verification(from_addr: str, subject: str, text: str) -> str | None:
    """Why this looks like someone else's sign-up mail, or None."""
    if not _no_reply_sender(from_addr):
        return None
    words = _fold(f"{subject}\n{text[:20000]}")
    if _CODE_WORDS.search(words) and _CODE.search(f"{subject}\n{text[:20000]}"):
        return "third-party verification mail (a one-time code from a no-reply sender)"
    if _LINK_WORDS.search(words) and _LINK.search(text):
        return "third-party sign-up mail (a confirmation link from a no-reply sender)"
    return None
