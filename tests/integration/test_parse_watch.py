"""parse_async keeps each worker's pipe registered with the event loop from one mail to the
next (a duplicate descriptor, read by the loop's callback), instead of an add_reader and a
remove_reader per mail. The outcomes stay those of the blocking parse; a worker that dies
idle, a thread's parse on the same worker, and the loop's end leave nothing watched or open."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from mailgate.adapters.parsing import ParseWorkers, _Worker
from tests.integration.test_hygiene_parse_workers import MAIL, hang_on_request


@pytest.fixture
def one_worker() -> ParseWorkers:
    pool = ParseWorkers(workers=1, timeout=2.0, parse=hang_on_request)
    pool.start()
    yield pool
    pool.stop()


def the_worker(pool: ParseWorkers) -> _Worker:
    assert pool._idle is not None
    worker = pool._idle.queue[0]
    assert worker is not None
    return worker


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def test_one_registration_for_many_mails(one_worker: ParseWorkers):
    async def run() -> tuple[list[str], set[object], bool]:
        loop = asyncio.get_running_loop()
        added = 0
        add_reader = loop.add_reader

        def counting(*args: object) -> None:
            nonlocal added
            added += 1
            add_reader(*args)  # type: ignore[arg-type]

        loop.add_reader = counting  # type: ignore[method-assign]
        subjects = [(await one_worker.parse_async(MAIL)).subject for _ in range(5)]
        worker = the_worker(one_worker)
        assert worker.watch is not None
        registered = loop._selector.get_key(worker.watch[1]) is not None  # type: ignore[attr-defined]
        return subjects, {added}, registered

    subjects, added, registered = asyncio.run(run())
    assert subjects == ["Bonjour"] * 5
    assert added == {1} and registered


def test_a_worker_dead_while_idle_is_dropped_by_the_loop_and_replaced(one_worker: ParseWorkers):
    async def run() -> list[str]:
        first = (await one_worker.parse_async(MAIL)).subject
        worker = the_worker(one_worker)
        os.kill(worker.process.pid, signal.SIGKILL)
        end = time.monotonic() + 10
        while worker.watch is not None:  # the loop reads the end of the pipe and lets it go
            assert time.monotonic() < end, "the watch of a dead worker was kept"
            await asyncio.sleep(0.01)
        return [first, *[(await one_worker.parse_async(MAIL)).subject for _ in range(3)]]

    assert asyncio.run(run()) == ["Bonjour"] * 4


def test_a_threads_parse_on_a_watched_worker_then_the_loops(one_worker: ParseWorkers):
    async def run() -> list[str]:
        out = [(await one_worker.parse_async(MAIL)).subject]
        for _ in range(3):
            out.append((await asyncio.to_thread(one_worker, MAIL)).subject)
            out.append((await one_worker.parse_async(MAIL)).subject)
        return out

    assert asyncio.run(asyncio.wait_for(run(), 30)) == ["Bonjour"] * 7


def test_nothing_left_open_after_the_loop_and_the_stop():
    before = open_fds()
    pool = ParseWorkers(workers=2, timeout=2.0, parse=hang_on_request)
    pool.start()

    async def run() -> list[str]:
        return [(await pool.parse_async(MAIL)).subject for _ in range(4)]

    assert asyncio.run(run()) == ["Bonjour"] * 4
    assert pool(MAIL).subject == "Bonjour"  # after the loop closed: the blocking path
    pool.stop()
    assert open_fds() - before == set()
