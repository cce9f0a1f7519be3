"""How portal use cases reach the database for writing: through the writer's `run` (the
GroupCommitter), which reports every database fault as TempFailure (the portal answers 503)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from sqlmodel import Session

T = TypeVar("T")


class Writer(Protocol):
    """Runs a job in the writer's transaction (GroupCommitter.run)."""

    def __call__(self, job: Callable[[Session], T]) -> T: ...
