"""gctune.settle: what a process built before it is out of the collector's sight, and young
collections come less often (serve, the SMTP fronts, the sender and the parse workers call it
once started). Run in a child interpreter: freezing the test runner's own heap would change it
for every test after this one."""

from __future__ import annotations

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
    import json

    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, check=True, text=True)
    (threshold0, frozen0), (threshold1, frozen1), found = json.loads(out.stdout)
    assert tuple(threshold0) == (700, 10, 10)  # CPython's defaults before
    assert frozen0 == 0
    assert tuple(threshold1) == gctune.THRESHOLDS
    assert frozen1 > 5000  # the kept lists (and everything imported) are frozen
    assert found >= 1  # the cycle made after settle() was collected
