"""Which language a person gets, and how it is remembered (issue 15).

The language of an account is decided once, from the best evidence seen so far, in this order:
a choice made in the portal; the `Content-Language` of their mail; the language of the text they
wrote (detected here, offline, among the configured locales only, above a confidence threshold);
the browser's `Accept-Language`; `default_locale`. Better evidence replaces worse; equal or
worse evidence never changes what is remembered, and a choice is only ever replaced by another
choice, so a later mail in another language never flips it.

The detection itself is in core/language_detect.py (it loads lingua's models).
"""

from __future__ import annotations

from enum import StrEnum


class Source(StrEnum):
    """Where an account's language came from, best last."""

    DEFAULT = "default"
    BROWSER = "browser"
    DETECTED = "detected"
    HEADER = "header"
    CHOSEN = "chosen"


RANK = {source: rank for rank, source in enumerate(Source)}


def remembered(
    current: str, current_source: str, offered: str | None, source: Source
) -> tuple[str, Source]:
    """(locale, source) an account keeps when `offered` (from `source`) comes along."""
    known = Source(current_source) if current_source in RANK else Source.DEFAULT
    if offered is None or not offered:
        return current, known
    if source is Source.CHOSEN or RANK[source] > RANK[known]:
        return offered, source
    return current, known


def best_evidence(header: str | None, detected: str | None) -> tuple[str | None, Source]:
    """What a mail says of its writer's language: its header, else its text's language."""
    if header:
        return header, Source.HEADER
    if detected:
        return detected, Source.DETECTED
    return None, Source.DEFAULT
