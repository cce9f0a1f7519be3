"""Ingestor.prepare in an SMTP front, on its event loop for most mail instead of in a thread.

A thread per message cost the front more CPU than anything it did in it (the hand-off, and
the GIL going back and forth between the loop and eight threads each waiting on a parse
worker): 150-350 us per 5 KB mail, a fifth of the front. So for a mail of INLINE_RAW_BYTES or
less (no blob to write for it) the parse is awaited on the loop (ParseWorkers.parse_async,
which in a front parses such a mail on the loop itself first, within a CPU budget: see
adapters/parsing.py), then prepare runs right there, its parse answered by `ReplayedParse`
with that outcome. What can wait in prepare goes to a thread as before: a mail with
attachments (they are written to
the blob store) and a sender check that needs a DNS answer the cache does not hold (tried
first within the verifier's cache_only(), which raises WouldWait before any query is sent
and keeps nothing; a verifier without one is always run in a thread). Bigger mails are
prepared in a thread, as before. (The workers and the verifier are the ingestor's: reached
through it, as adapters do not import each other.)

The outcome is the same either way: prepare runs the same steps in the same order, and meets
the parse's outcome (the mail, or its error) where it parses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from mailgate.core.mail import InboundMail
from mailgate.errors import WouldWait
from mailgate.services.ingest import INLINE_RAW_BYTES, Envelope, Ingestor, Prepared

Parsed = InboundMail | Exception


class ReplayedParse:
    """The ingestor's parse in a front: the outcome of a parse already done for these very
    bytes (`held`) when there is one, else the workers' parse."""

    def __init__(self, workers: Any) -> None:  # adapters/parsing.py's ParseWorkers
        self.workers = workers
        self._held: dict[int, tuple[bytes, Parsed]] = {}

    @contextmanager
    def held(self, raw: bytes, outcome: Parsed) -> Iterator[None]:
        key = self.hold(raw, outcome)
        try:
            yield
        finally:
            self.release(key)

    def hold(self, raw: bytes, outcome: Parsed) -> int:
        """`held` without the context manager: the key to `release` afterwards."""
        self._held[id(raw)] = (raw, outcome)
        return id(raw)

    def release(self, key: int) -> None:
        del self._held[key]

    def __call__(self, raw: bytes) -> InboundMail:
        found = self._held.get(id(raw))
        if found is None or found[0] is not raw:
            return self.workers(raw)
        if isinstance(found[1], Exception):
            raise found[1]
        return found[1]


def replay_parses(ingestor: Ingestor) -> None:
    """Make the ingestor's parse (its ParseWorkers) a ReplayedParse, for `prepare`."""
    if hasattr(ingestor.parse, "parse_async"):
        ingestor.parse = ReplayedParse(ingestor.parse)


def _no_waiting(ingestor: Ingestor) -> Callable[[], AbstractContextManager[None]] | None:
    """What keeps the sender check from waiting on DNS (None: nothing can)."""
    if ingestor.verifier is None:
        return nullcontext  # nothing checked, or the MTA's Authentication-Results read
    return getattr(ingestor.verifier, "cache_only", None)


async def prepare(ingestor: Ingestor, raw: bytes, env: Envelope) -> Prepared:
    """ingestor.prepare(raw, env), on the loop when it need not wait (see the docstring)."""
    parse, no_waiting = ingestor.parse, _no_waiting(ingestor)
    if (
        not isinstance(parse, ReplayedParse)
        or no_waiting is None
        or not parse.workers.started
        or len(raw) > INLINE_RAW_BYTES
    ):
        return await asyncio.to_thread(ingestor.prepare, raw, env)
    outcome: Parsed
    try:
        outcome = await parse.workers.parse_async(raw)
    except Exception as exc:  # refused, crashed, try later: prepare meets it where it parses
        outcome = exc
    held = parse.hold(raw, outcome)  # (not `with parse.held`: a generator less per mail)
    try:
        if isinstance(outcome, InboundMail) and outcome.attachments:
            return await asyncio.to_thread(ingestor.prepare, raw, env)  # they go to the disk
        try:
            with no_waiting():
                return ingestor.prepare(raw, env)
        except WouldWait:  # the sender check needs DNS: it waits there, not here
            return await asyncio.to_thread(ingestor.prepare, raw, env)
    finally:
        parse.release(held)
