"""adapters/transports._Workers: slot 0 is worked in the calling thread, the others on the
pool; every slot is done before run() returns or raises."""

from __future__ import annotations

import threading

import pytest

from mailgate.adapters.transports import _Workers


def test_every_slot_runs_once_slot_0_in_the_caller_s_thread():
    workers = _Workers(3, "t")
    seen: dict[int, int] = {}
    lock = threading.Lock()

    def work(slot: int) -> None:
        with lock:
            seen[slot] = threading.get_ident()

    try:
        for slots in (1, 2, 3):
            seen.clear()
            workers.run(work, slots)
            assert sorted(seen) == list(range(slots))
            assert seen[0] == threading.get_ident()
            assert all(ident != threading.get_ident() for s, ident in seen.items() if s)
    finally:
        workers.close()


def test_a_failing_slot_0_is_raised_once_the_other_slots_are_done():
    workers = _Workers(2, "t")
    release = threading.Event()
    done = threading.Event()

    def work(slot: int) -> None:
        if slot == 0:
            release.set()  # slot 1 may finish now: run() must still wait for it
            raise RuntimeError("slot 0")
        release.wait(10)
        done.set()

    try:
        with pytest.raises(RuntimeError, match="slot 0"):
            workers.run(work, 2)
        assert done.is_set()
    finally:
        workers.close()


def test_a_failing_pool_slot_is_raised():
    workers = _Workers(2, "t")

    def work(slot: int) -> None:
        if slot == 1:
            raise OSError("slot 1")

    try:
        with pytest.raises(OSError, match="slot 1"):
            workers.run(work, 2)
    finally:
        workers.close()
