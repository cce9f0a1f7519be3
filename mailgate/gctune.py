"""The garbage collector of a long-running mailgate process, set once it has started (a leaf).

With CPython's default thresholds (700, 10, 10) a process allocating as fast as serve, an SMTP
front or a parse worker under load runs a young collection every few hundred objects and, every
hundred of those, a full one that walks everything the process holds: SQLAlchemy's mappers and
compiled statements, the templates, the configuration. Each full walk stopped the process for
tens of milliseconds, and every message in flight waited on it (ingest bench, 8 sessions flat
out, 3,000 messages: the slowest end-of-DATA -> 250 was 78-365 ms in five runs; with this,
28-30 ms in three runs of four, 95 ms in the fourth; throughput unchanged).

What start-up made lives as long as the process: `gc.freeze` moves it out of the collector's
sight. Young collections come after 20,000 allocations instead of 700 (a short-lived cycle is
still collected, a few milliseconds later); older generations are scanned as often as before
relative to them.

A command's own process (`mailgate ticket list`, `deliver` with serve stopped) lives a fraction
of a second, but imports as much: the default thresholds ran several full walks while it
imported SQLAlchemy and the models, and the interpreter's shutdown walked everything again
before it could exit. `for_command` and `before_exit` spare both (`ticket list`, serve stopped:
0.42 s -> 0.34 s wall, the means of 15 runs each, interleaved).
"""

from __future__ import annotations

import gc

THRESHOLDS = (20_000, 10, 10)


def settle() -> None:
    """Call once a process has imported and built what it keeps until it exits."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


def for_command() -> None:
    """Call first in a process that runs one command and exits."""
    gc.set_threshold(*THRESHOLDS)


def before_exit() -> None:
    """Call when the command is done: what the process holds is freed by its exit, not walked
    by the collector at shutdown (the walk only finds what exit frees anyway)."""
    gc.freeze()
