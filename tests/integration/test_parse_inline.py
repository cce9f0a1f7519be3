"""Issue 11: on an event loop, a small mail is parsed right there under a CPU budget instead of
in a worker (the hop cost more than the parse). A parse that outlives the budget goes to a
worker under the full deadline, and inline parsing pauses; errors come out as a worker's would.
Which process parsed a mail is told by the parser itself: it writes its pid into the subject."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time

import pytest

from mailgate.adapters import parsing
from mailgate.adapters.parsing import ParseCrashed, ParseWorkers, parse_within
from mailgate.core.mail import InboundMail, MailParseError, parse_mail
from tests.integration.test_hygiene_parse_workers import MAIL

SLOW_SECONDS = 0.4  # of CPU, for a mail marked SLOW: well over the budget below
BUDGET = 0.05


def spin(seconds: float) -> None:
    """Busy for `seconds` of this process's CPU time (pure Python: a signal can stop it)."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def pid_parse(raw: bytes) -> InboundMail:
    """parse_mail, the subject replaced by the pid of the process that parsed (the workers
    import it by name)."""
    if b"SLOW" in raw:
        spin(SLOW_SECONDS)
    if b"BOOM" in raw:
        raise KeyError("an unexpected bug")
    if b"REFUSE" in raw:
        raise MailParseError("over a limit: refused by the test")
    return dataclasses.replace(parse_mail(raw), subject=str(os.getpid()))


def stubborn_parse(raw: bytes) -> InboundMail:
    """pid_parse behind a bare `except:` that swallows the first interruption, as the stdlib's
    header parser has one, and goes on as long again."""
    try:
        spin(SLOW_SECONDS)
    except BaseException:
        spin(SLOW_SECONDS)
    return pid_parse(raw)


def with_marker(marker: bytes) -> bytes:
    return MAIL.replace(b"Subject: Bonjour", b"Subject: " + marker)


def pool(inline_budget: float, timeout: float = 30.0) -> ParseWorkers:
    workers = ParseWorkers(workers=1, timeout=timeout, parse=pid_parse, inline_budget=inline_budget)
    workers.start()
    return workers


def parse_all(workers: ParseWorkers, *raws: bytes) -> list[InboundMail | Exception]:
    async def run() -> list[InboundMail | Exception]:
        outcomes: list[InboundMail | Exception] = []
        for raw in raws:
            try:
                outcomes.append(await workers.parse_async(raw))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    try:
        return asyncio.run(run())
    finally:
        workers.stop()


def parsed_by(outcome: InboundMail | Exception) -> int:
    assert isinstance(outcome, InboundMail), outcome
    return int(outcome.subject)


def test_small_mail_is_parsed_on_the_loop():
    first, second = parse_all(pool(BUDGET), MAIL, MAIL)
    assert parsed_by(first) == parsed_by(second) == os.getpid()


def test_without_a_budget_the_worker_parses():
    (outcome,) = parse_all(pool(0.0), MAIL)
    assert parsed_by(outcome) != os.getpid()


def test_a_mail_over_the_inline_size_goes_to_a_worker():
    big = MAIL + b"x" * (parsing.INLINE_PARSE_BYTES + 1)
    (outcome,) = parse_all(pool(BUDGET), big)
    assert parsed_by(outcome) != os.getpid()


def test_a_parse_over_budget_goes_to_a_worker_and_pauses_inline():
    workers = pool(BUDGET)
    slow, after = parse_all(workers, with_marker(b"SLOW"), MAIL)
    # Given the whole CPU time it needs, the inline parse would have answered our pid.
    assert parsed_by(slow) != os.getpid()
    assert parsed_by(after) != os.getpid()  # within the pause: a worker again
    assert parsing._armed is False  # nothing left armed for a late signal


def test_after_the_pause_inline_parsing_resumes(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(parsing, "INLINE_PAUSE", 0.0)
    slow, after = parse_all(pool(BUDGET), with_marker(b"SLOW"), MAIL)
    assert parsed_by(slow) != os.getpid()
    assert parsed_by(after) == os.getpid()


def test_the_deadline_still_holds_for_a_mail_over_budget():
    (outcome,) = parse_all(pool(BUDGET, timeout=0.2), with_marker(b"SLOW"))
    assert isinstance(outcome, MailParseError)
    assert "parsing took more than 0.2 s" in str(outcome)


def test_inline_errors_are_the_workers_errors():
    inline = parse_all(pool(BUDGET), with_marker(b"BOOM"), with_marker(b"REFUSE"))
    in_worker = parse_all(pool(0.0), with_marker(b"BOOM"), with_marker(b"REFUSE"))
    assert [type(o) for o in inline] == [type(o) for o in in_worker]
    assert [type(o) for o in inline] == [ParseCrashed, MailParseError]
    assert [str(o) for o in inline] == [str(o) for o in in_worker]


def test_budget_is_never_over_the_deadline():
    workers = ParseWorkers(workers=1, timeout=0.01, parse=pid_parse, inline_budget=BUDGET)
    assert workers.inline_budget == 0.01


def test_parse_within_leaves_no_timer_armed():
    assert parse_within(BUDGET, pid_parse, MAIL) is not None
    assert parse_within(BUDGET, pid_parse, with_marker(b"SLOW")) is None
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)
    spin(2 * BUDGET)  # a late signal now would raise here: none comes


def test_a_swallowed_interruption_is_not_the_last():
    assert parse_within(BUDGET, stubborn_parse, MAIL) is None
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)

