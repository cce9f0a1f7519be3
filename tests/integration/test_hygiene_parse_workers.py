"""Issue 4, the parse deadline: parsing runs in child processes a deadline can kill. A hung
parse costs one worker for `timeout` seconds and comes back as a MailParseError (the mail is
quarantined); a parser that raises or a worker that dies comes back as a crash; either way the
worker is replaced and the next parse works."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

import pytest

from mailgate.adapters.parsing import ParseCrashed, ParseWorkers
from mailgate.core.mail import InboundMail, MailParseError, parse_mail
from tests.conftest import make_mail
from tests.support.hygiene import crlf

MAIL = crlf(make_mail(subject="Bonjour").as_bytes())


def hang_on_request(raw: bytes) -> InboundMail:
    """A parser that never returns on one input (the workers import it by name)."""
    if b"HANG" in raw:
        threading.Event().wait()
    if b"BOOM" in raw:
        raise KeyError("an unexpected bug")
    if b"DIE" in raw:
        os._exit(1)  # the worker dies mid-parse
    return parse_mail(raw)


@pytest.fixture
def workers() -> ParseWorkers:
    pool = ParseWorkers(workers=2, timeout=1.0, parse=hang_on_request)
    pool.start()
    yield pool
    pool.stop()


def _worker_processes() -> list[multiprocessing.process.BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name == "mailgate-parse"]


def _worker_pids() -> set[int]:
    return {p.pid for p in _worker_processes() if p.pid is not None}


def test_before_start_parsing_runs_in_the_callers_process():
    pool = ParseWorkers(workers=1, timeout=1.0, parse=hang_on_request)
    assert pool(MAIL).subject == "Bonjour"
    assert _worker_pids() == set()


def test_a_hung_parse_is_stopped_at_the_deadline_while_the_other_worker_serves(
    workers: ParseWorkers,
):
    before = _worker_pids()
    assert len(before) == 2
    outcome: dict[str, object] = {}

    def hung() -> None:
        started = time.monotonic()
        try:
            workers(MAIL.replace(b"Bonjour", b"HANG"))
        except MailParseError as exc:
            outcome["error"], outcome["seconds"] = str(exc), time.monotonic() - started

    thread = threading.Thread(target=hung)
    thread.start()
    assert workers(MAIL).subject == "Bonjour"  # served by the other worker meanwhile
    thread.join(30)
    assert outcome["error"] == "over a limit: parsing took more than 1 s"
    assert 1.0 <= outcome["seconds"] < 5  # type: ignore[operator]
    # The hung worker was killed and is replaced on the next parse.
    assert [workers(MAIL).subject for _ in range(4)] == ["Bonjour"] * 4
    after = _worker_pids()
    assert len(after) == 2 and after != before


def test_a_parser_bug_and_a_worker_dying_mid_parse_are_crashes_and_the_next_parse_works(
    workers: ParseWorkers,
):
    with pytest.raises(ParseCrashed, match="KeyError: 'an unexpected bug'"):
        workers(MAIL.replace(b"Bonjour", b"BOOM"))
    assert workers(MAIL).subject == "Bonjour"
    with pytest.raises(ParseCrashed, match="parse worker died"):
        workers(MAIL.replace(b"Bonjour", b"DIE"))
    assert [workers(MAIL).subject for _ in range(4)] == ["Bonjour"] * 4


def test_workers_that_died_while_idle_are_replaced_without_failing_a_mail(
    workers: ParseWorkers,
):
    processes = _worker_processes()
    dead = _worker_pids()
    for process in processes:
        os.kill(process.pid, signal.SIGKILL)  # say, the kernel's OOM killer
    for process in processes:
        process.join(10)
    assert [workers(MAIL).subject for _ in range(4)] == ["Bonjour"] * 4
    assert len(_worker_pids() - dead) >= 1
