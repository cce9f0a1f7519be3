"""Recognise automatic mail (RFC 3834) that must never be answered.

Pure functions: callers pass header pairs as they appear in the message, with
values already decoded to ``str``. Header names compare case-insensitively.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parseaddr

__all__ = ["Automatic", "classify", "is_our_loop"]


@dataclass(frozen=True)
class Automatic:
    reason: str
    out_of_office: bool = False


# Subjects that no human types by hand at the start of a line: enough on their own,
# which catches autoresponders that send none of the RFC 3834 headers.
_STRONG_OOF_SUBJECT = re.compile(
    r"^(?:automatic reply|auto[- ]?reply|reponse automatique|automatische antwort"
    r"|abwesenheitsnotiz|out of (?:the )?office(?: auto ?reply| reply)?|absence du bureau"
    r"|respuesta automatica|risposta automatica)\s*:"
)
# Phrases a person might well write ("Absent today", "Vacation policy"): they only mark
# an out-of-office reply when a header already says the mail is an automatic reply.
_WEAK_OOF_SUBJECT = re.compile(
    r"^auto\s*:|\b(?:out of (?:the )?office|ooo|absent|absente|absence|abwesend"
    r"|abwesenheit|vacation|vacances|conges|on leave)\b"
)

_ROLE_EXACT = frozenset({"mailer-daemon", "postmaster"})
_ROLE_PREFIXES = (
    "noreply",
    "no-reply",
    "no_reply",
    "do-not-reply",
    "donotreply",
    "owner-",
    "bounce",
)
_ROLE_SUFFIXES = ("-request",)

_BULK_PRECEDENCE = frozenset({"bulk", "list", "junk"})
_X_AUTOREPLY_HEADERS = ("x-autoreply", "x-autorespond", "x-autoresponse")
_COMMENT = re.compile(r"\([^()]*\)")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDR = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@{_ATEXT}(?:\.{_ATEXT})*")


def classify(
    headers: Sequence[tuple[str, str]],
    envelope_from: str | None,
    from_addr: str,
    subject: str,
) -> Automatic | None:
    """None when a human wrote it; otherwise why it is automatic."""
    h = _HeaderView(headers)

    # A report (DSN, MDN) is the most specific answer; bounces.py takes it from here.
    content_type = h.first("content-type")
    if content_type is not None and _token(content_type) == "multipart/report":
        return Automatic("dsn")

    auto_submitted = [_token(v) for v in h.all("auto-submitted")]
    auto_submitted = [v for v in auto_submitted if v != "no"]
    null_sender = _is_null_sender(envelope_from, h.all("return-path"))
    has_suppress = h.has("x-auto-response-suppress")
    has_x_autoreply = any(h.has(name) for name in _X_AUTOREPLY_HEADERS)

    # Signals that the mail is a *reply* made by a machine; list and precedence headers
    # are left out because newsletters carry them and may talk about "vacation".
    reply_signal = (
        bool(auto_submitted)
        or null_sender
        or has_suppress
        or has_x_autoreply
        or h.has("x-ms-exchange-inbox-rules-loop")
    )
    norm_subject = _normalise_subject(subject)
    vacation_comment = any("vacation" in v.lower() for v in h.all("auto-submitted"))
    if (
        _STRONG_OOF_SUBJECT.search(norm_subject)
        or (reply_signal and _WEAK_OOF_SUBJECT.search(norm_subject))
        or vacation_comment
    ):
        return Automatic("out-of-office", out_of_office=True)

    if null_sender:
        return Automatic("null-sender")
    if auto_submitted:
        return Automatic("auto-submitted")
    if has_suppress:
        return Automatic("auto-response-suppress")
    if has_x_autoreply:
        return Automatic("x-autoreply")
    for value in h.all("precedence"):
        precedence = _token(value)
        if precedence in _BULK_PRECEDENCE:
            return Automatic(f"precedence-{precedence}")
    if any(name.startswith("list-") for name in h.names):
        return Automatic("list-header")
    if _is_role_address(from_addr):
        return Automatic("role-address")
    return None


def is_our_loop(headers: Sequence[tuple[str, str]], our_hostname: str) -> bool:
    """True when the mail carries our own loop marker.

    Either ``X-Mailgate-Loop`` equals our_hostname (case-insensitive), or a Message-ID
    ends in ``@<our_hostname>>`` together with an ``X-Mailgate-Kind`` header.
    """
    host = our_hostname.strip().rstrip(".").lower()
    if not host:
        # An empty hostname would match any empty marker header.
        return False
    h = _HeaderView(headers)
    if any(v.strip().rstrip(".").lower() == host for v in h.all("x-mailgate-loop")):
        return True
    if not h.has("x-mailgate-kind"):
        return False
    suffix = f"@{host}>"
    return any(v.strip().lower().endswith(suffix) for v in h.all("message-id"))


class _HeaderView:
    """Case-insensitive, multi-valued access to header pairs."""

    def __init__(self, headers: Sequence[tuple[str, str]]) -> None:
        # Values by name, in the mail's order: one pass, then each lookup is a dict's.
        self._values: dict[str, list[str]] = {}
        for name, value in headers:
            self._values.setdefault(str(name).strip().lower(), []).append(str(value))
        self.names = self._values.keys()

    def has(self, name: str) -> bool:
        return name in self._values

    def all(self, name: str) -> list[str]:
        return list(self._values.get(name, ()))

    def first(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None


def _token(value: str) -> str:
    """First token of a structured value: 'auto-replied (zimbra; vacation)' -> 'auto-replied'."""
    value = _COMMENT.sub(" ", value)
    return value.split(";", 1)[0].strip().lower()


def _is_null_sender(envelope_from: str | None, return_paths: list[str]) -> bool:
    if envelope_from is not None and envelope_from.strip() in ("", "<>"):
        return True
    return any(re.fullmatch(r"<\s*>", v.strip()) for v in return_paths)


def _is_role_address(from_addr: str) -> bool:
    # Accept both a bare addr-spec and a display form such as 'Name <addr>'. A plain dot-atom
    # address (what parse_mail gives) is what parseaddr would return: no parse (7 us) for it.
    if _PLAIN_ADDR.fullmatch(from_addr):
        addr = from_addr
    else:
        _, addr = parseaddr(from_addr)
        addr = (addr or from_addr).strip()
    if "@" not in addr:
        return False
    local = addr.rsplit("@", 1)[0].strip('"').lower()
    base = local.split("+", 1)[0]  # sub-addressing: postmaster+tag is still postmaster
    return base in _ROLE_EXACT or local.startswith(_ROLE_PREFIXES) or base.endswith(_ROLE_SUFFIXES)


def _normalise_subject(subject: str) -> str:
    # NFKD turns NBSP / narrow NBSP (French "réponse :") into spaces and splits accents
    # off so "Réponse" and "Reponse" compare equal.
    if subject.isascii():  # NFKD leaves ASCII as it is, and no ASCII character combines
        return " ".join(subject.lower().split())
    decomposed = unicodedata.normalize("NFKD", subject)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())
