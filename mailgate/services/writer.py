"""How portal use cases reach the database for writing: through the writer's `run` (the
GroupCommitter), with database faults turned into TempFailure.

The committer hands a job's own error back as is; a locked or unreachable database then shows
up as a driver error, which the portal answers with 503 "try again" instead of a crash.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session

from mailgate.errors import TempFailure

T = TypeVar("T")


class Writer(Protocol):
    """Runs a job in the writer's transaction (GroupCommitter.run)."""

    def __call__(self, job: Callable[[Session], T]) -> T: ...


def faults_as_temporary(write: Writer) -> Writer:
    def guarded(job: Callable[[Session], T]) -> T:
        try:
            return write(job)
        except IntegrityError:
            raise
        except DBAPIError as exc:  # OperationalError included: locked, down, timed out
            raise TempFailure(f"database unavailable: {type(exc.orig).__name__}") from exc
        except PoolTimeout as exc:  # every writer connection is stuck behind the same fault
            raise TempFailure("database unavailable: no connection free") from exc

    return guarded
