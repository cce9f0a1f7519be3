"""Issue 11: `deliver` builds its ingest core with mailgate.wiring, not app.build() (which
loads Starlette, the portal and every adapter). The two must build the same thing: a setting
app.build() passes and wiring forgets would make mail by `deliver` behave differently."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from mailgate import config as config_mod
from mailgate.app import App, build
from mailgate.wiring import Core, build_for_ingest
from tests.support.peers import write_config

SCALARS = (str, bytes, int, float, bool, type(None), frozenset, set, dict, Path, Enum)
# Under serve, parsing runs in worker processes (ParseWorkers); in a CLI command it runs inline,
# which is what an unstarted ParseWorkers does too.
DIFFERENT_ON_PURPOSE = {"parse"}


@pytest.fixture
def both(tmp_path: Path) -> Iterator[tuple[App, Core]]:
    extra = (
        '[security]\nauthserv_id = "mx.example.com"\n'
        'verification_senders = ["verify@bank.example"]\n'
    )
    path = write_config(tmp_path, database_url=f"sqlite:///{tmp_path / 'db'}", sink_port=1,
                        extra=extra)
    cfg = config_mod.load(path)
    full, lean = build(cfg), build_for_ingest(cfg)
    yield full, lean
    full.db.dispose()
    lean.db.dispose()


def _same(full: Any, lean: Any, where: str, depth: int, seen: set[int]) -> list[str]:
    """What differs between two object graphs, down to `depth` objects deep."""
    if type(full) is not type(lean):
        return [f"{where}: {type(full).__name__} in app.build, {type(lean).__name__} in wiring"]
    if inspect.ismethod(full):  # the ingest steps: the same functions, bound to each ingestor
        return [] if full.__func__ is lean.__func__ else [f"{where}: another method"]
    if isinstance(full, tuple | list):
        if len(full) != len(lean):
            return [f"{where}: {len(full)} items in app.build, {len(lean)} in wiring"]
        return [p for i, (f, g) in enumerate(zip(full, lean, strict=True))
                for p in _same(f, g, f"{where}[{i}]", depth, seen)]
    if hasattr(full, "__wrapped__") and hasattr(lean, "__wrapped__"):  # lru_cache(closure)
        return _same(full.__wrapped__, lean.__wrapped__, where, depth, seen)
    if inspect.isfunction(full):  # closures made afresh by each build: the same code will do
        return [] if full.__qualname__ == lean.__qualname__ else [f"{where}: another function"]
    if isinstance(full, SCALARS) or dataclasses.is_dataclass(full) or callable(full):
        return [] if full == lean else [f"{where}: {full!r} in app.build, {lean!r} in wiring"]
    if depth == 0 or id(full) in seen or not hasattr(full, "__dict__"):
        return []
    seen.add(id(full))
    problems = []
    for name, value in vars(full).items():
        if name in DIFFERENT_ON_PURPOSE:
            continue
        if name not in vars(lean):
            problems.append(f"{where}.{name}: missing in wiring")
            continue
        problems += _same(value, vars(lean)[name], f"{where}.{name}", depth - 1, seen)
    return problems


def test_wiring_builds_the_ingest_core_as_app_build_does(both: tuple[App, Core]):
    full, lean = both
    problems: list[str] = []
    for part in ("db", "blobs", "mailer", "accounts", "conversations", "ingestor"):
        problems += _same(getattr(full, part), getattr(lean, part), part, 3, set())
    assert not problems, "\n".join(problems)
