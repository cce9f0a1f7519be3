"""Which ticket does an inbound mail belong to, and why.

Order (Roundup's, hardened): the signed reply token in the recipient address, then
In-Reply-To, then References, then the `[#ID]` subject tag. Only a verified token stands on
its own; the other three are guessable, so they thread only when the sender is allowed on that
ticket (requester, agent, accepted collaborator). Anyone else gets a ticket of their own.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

SUBJECT_TAG = re.compile(r"\[#(\d{1,10})\]")
PRIORITY = ("token", "in-reply-to", "references", "subject")


@dataclass(frozen=True)
class Candidate:
    ticket_id: int
    via: str  # one of PRIORITY
    sender_allowed: bool


def subject_ticket_ids(subject: str) -> tuple[int, ...]:
    return tuple(dict.fromkeys(int(m) for m in SUBJECT_TAG.findall(subject)))


def choose(candidates: Sequence[Candidate]) -> Candidate | None:
    """The first candidate, by PRIORITY, that may thread; None means a new ticket."""
    for via in PRIORITY:
        for cand in candidates:
            if cand.via == via and (via == "token" or cand.sender_allowed):
                return cand
    return None
