"""gctune.settle: what a process built before it is out of the collector's sight, and young
collections come less often (serve, the SMTP fronts, the sender and the parse workers call it
once started). Run in a child interpreter: freezing the test runner's own heap would change it
for every test after this one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mailgate import gctune

CHILD = """
import gc, json
kept = [[i] for i in range(5000)]  # what start-up builds and keeps
before = (gc.get_threshold(), gc.get_freeze_count())
from mailgate import gctune
gctune.settle()
after = (gc.get_threshold(), gc.get_freeze_count())
cycle = []; cycle.append(cycle); del cycle  # garbage made afterwards is still collected
found = gc.collect()
print(json.dumps([before, after, found]))
"""


def test_settle_freezes_what_was_built_and_spaces_young_collections() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, check=True, text=True)
    (threshold0, frozen0), (threshold1, frozen1), found = json.loads(out.stdout)
    assert tuple(threshold0) == (700, 10, 10)  # CPython's defaults before
    assert frozen0 == 0
    assert tuple(threshold1) == gctune.THRESHOLDS
    assert frozen1 > 5000  # the kept lists (and everything imported) are frozen
    assert found >= 1  # the cycle made after settle() was collected


COMMAND = """
import gc, json, sys
from mailgate import cli
sys.argv = ["mailgate", *json.loads(sys.argv[1])]
try:
    code = cli.main()
except SystemExit as exc:
    code = exc.code
print(json.dumps([code, gc.get_threshold(), gc.get_freeze_count()]))
"""


def _command(*argv: str, given: bool = False) -> tuple[int, tuple[int, ...], int]:
    script = COMMAND.replace("cli.main()", "cli.main(sys.argv[1:])") if given else COMMAND
    env = {**os.environ, "MAILGATE_IN_PROCESS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps(list(argv))],
        capture_output=True,
        check=True,
        text=True,
        env=env,
    )
    code, threshold, frozen = json.loads(out.stdout.splitlines()[-1])
    return code, tuple(threshold), frozen


def test_a_command_process_spaces_collections_and_leaves_its_heap_to_exit() -> None:
    """`mailgate …` in its own process: young collections spaced while it imports, and what
    it holds frozen when it is done, so the interpreter's shutdown does not walk it."""
    code, threshold, frozen = _command("--help")
    assert code == 0
    assert threshold == gctune.THRESHOLDS
    assert frozen > 10_000  # argparse, mailgate.cli and the rest, out of the final walks


def test_a_command_run_inside_another_process_leaves_its_collector_alone() -> None:
    """main(argv) from a test or serve's warm process: that process goes on living, so its
    collector is not retuned nor its heap frozen by a command it ran."""
    code, threshold, frozen = _command("--help", given=True)
    assert code == 0
    assert threshold == (700, 10, 10)
    assert frozen == 0
