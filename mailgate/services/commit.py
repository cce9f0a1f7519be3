"""Group commit: one writer thread runs waiting jobs in one transaction, a SAVEPOINT each.

With SQLite there is one writer at a time anyway; letting it commit several messages per fsync
is what keeps `synchronous=FULL` fast under concurrent deliveries. Every database fault a
caller sees is a TempFailure (answer 451, try again), whether the commit or its own job failed.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session

from mailgate.errors import TempFailure
from mailgate.store.db import Database

T = TypeVar("T")
Job = Callable[[Session], Any]


def as_temporary(exc: BaseException) -> BaseException:
    """Database faults become TempFailure; integrity errors and the rest stay what they are."""
    if isinstance(exc, IntegrityError) or not isinstance(exc, DBAPIError | PoolTimeout):
        return exc
    name = type(exc.orig).__name__ if isinstance(exc, DBAPIError) else "no connection free"
    failure = TempFailure(f"database unavailable: {name}")
    failure.__cause__ = exc
    return failure


class GroupCommitter:
    def __init__(self, db: Database, max_batch: int = 64) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queue: queue.Queue[tuple[Job, Future[Any]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopping = False

    def start(self) -> None:
        with self._lock:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Finish every job already queued, refuse new ones (TempFailure), then stop."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._stopping = True
            self._queue.put(None)  # under the lock: nothing can be queued behind it
        thread.join()

    def run(self, job: Callable[[Session], T]) -> T:
        """Run `job` in a write transaction; returns once its result is committed."""
        return self.submit(job).result()

    def submit(self, job: Callable[[Session], T]) -> Future[T]:
        """Queue `job` for a group commit; the future holds its result once committed. The
        caller need not hold a thread while it waits (an event loop awaits the future).
        Without a writer thread (CLI, tests) the job runs here, inline."""
        future: Future[T] = Future()
        with self._lock:
            if self._stopping:
                raise TempFailure("shutting down")
            if self._thread is not None:
                self._queue.put((job, future))
                return future
        try:
            with self.db.write() as session:
                future.set_result(job(session))
        except Exception as exc:
            future.set_exception(as_temporary(exc))
        return future

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[tuple[Job, Future[Any]]]) -> None:
        # A job whose caller gave up (its future cancelled) is dropped: nobody would say 250.
        # Once running, a future can no longer be cancelled, so every result is delivered.
        batch = [(job, future) for job, future in batch if future.set_running_or_notify_cancel()]
        if not batch:
            return
        results: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            with self.db.write() as session:
                for job, future in batch:
                    try:
                        with session.begin_nested():
                            results.append((future, job(session), None))
                    except Exception as exc:  # this job only: its savepoint is rolled back
                        results.append((future, None, as_temporary(exc)))
        except Exception as exc:  # the commit itself failed: nobody's work is durable
            failure = as_temporary(exc)
            if not isinstance(failure, TempFailure):
                # A job that lost the connection leaves the transaction unusable: the commit
                # then fails with PendingRollbackError, and the job's own fault says why.
                lost = (e for _future, _value, e in results if isinstance(e, TempFailure))
                failure = next(lost, None) or TempFailure(f"commit failed: {type(exc).__name__}")
            for _job, future in batch:
                future.set_exception(failure)
            return
        for future, value, error in results:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)
