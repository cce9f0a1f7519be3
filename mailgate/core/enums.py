"""The words the database and the logs use, as StrEnums: a typo is a NameError, not a ticket
stuck in a status nobody lists. Each member equals its string, so rows written before stay
valid and comparisons with plain strings keep working."""

from __future__ import annotations

from enum import StrEnum


class TicketStatus(StrEnum):
    NEW = "new"
    OPEN = "open"
    PENDING = "pending"
    SOLVED = "solved"
    CLOSED = "closed"


class Role(StrEnum):
    """Who wrote a message (an account's role is customer or agent)."""

    CUSTOMER = "customer"
    AGENT = "agent"
    SYSTEM = "system"


class Outcome(StrEnum):
    """What became of one delivery (Receipt.outcome, the `ingest.accepted` log line)."""

    TICKETED = "ticketed"
    DUPLICATE = "duplicate"
    AUTOMATIC = "automatic"
    LOOP = "loop"
    BOUNCE = "bounce"
    QUARANTINED = "quarantined"
    PENDING = "pending"  # claimed, decision not yet recorded (never seen after a commit)


class Step(StrEnum):
    """The ingest pipeline's steps, in order; the receipt records which one decided."""

    PARSE = "parse"
    SENDER = "sender"
    LOOP = "loop"
    BOUNCE = "bounce"
    THIRD_PARTY = "third-party"
    AUTOMATIC = "automatic"
    MATCH = "match"
    DISPATCH = "dispatch"
    DUPLICATE = "duplicate"
    HELD = "held"  # quarantined before the pipeline ran (crash, value refused)
