"""Argon2 with bounded concurrency: however many threads ask at once, no more than `slots`
hashes (64 MiB each) run together. An instrumented hasher, injected through the constructor,
holds each call until the test has seen how many run at the same time."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher

from mailgate.services.accounts import Accounts, Passwords


class HeldHasher(PasswordHasher):
    """Counts the calls running at once; each waits for `release` (cheap parameters)."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.calls = 0
        self.release = threading.Event()

    def _held(self) -> None:
        with self.lock:
            self.running += 1
            self.calls += 1
            self.most = max(self.most, self.running)
        self.release.wait(timeout=30)
        with self.lock:
            self.running -= 1

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        self._held()
        return super().hash(password, salt=salt)

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self._held()
        return super().verify(hash, password)


def wait_until(condition, seconds: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_no_more_than_the_slots_hash_at_once() -> None:
    hasher = HeldHasher()
    passwords = Passwords(hasher=hasher, slots=2)
    stored = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("right password")
    with ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(passwords.verify, stored, f"guess {n}") for n in range(10)]
        futures.append(pool.submit(passwords.verify, None, "unknown address"))
        futures.append(pool.submit(passwords.hash, "a new password"))
        wait_until(lambda: hasher.running == 2)
        assert hasher.most == 2  # ten more are waiting for a slot, not hashing
        hasher.release.set()
        results = [f.result(timeout=30) for f in futures]
    assert results[:11] == [False] * 11
    assert passwords.verify(results[11], "a new password") is True
    assert hasher.most == 2
    # 10 verifies, the unknown address (its dummy hash, then a verify), 1 hash, 1 check
    assert hasher.calls == 14


def test_accounts_check_passwords_through_the_injected_gate() -> None:
    hasher = HeldHasher()
    hasher.release.set()
    gate = Passwords(hasher=hasher, slots=1)
    accounts = Accounts(None, None, None, "fr", passwords=gate)  # type: ignore[arg-type]
    hashed = accounts.hash_password("right password")
    assert hasher.calls == 1
    assert accounts.verify_password(None, "anything") is False  # the dummy costs a hash too
    assert hasher.calls == 3
    assert accounts.verify_password(None, "right password") is False
    assert accounts.passwords.verify(hashed, "right password") is True
