"""`make bench`: every benchmark script present in bench/, one after the other, then a summary.

Each script runs with its default arguments (`--quick` is passed on to the scripts that accept
it), its output shown as it comes; the summary repeats each script's exit code, wall time and its
PASS/FAIL lines. Exit 1 when a script failed (a lost mail, a crash, a missing peer it needs).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_PY = ROOT / ".venv" / "bin" / "python"
# In this order: the end-to-end figure first, then the parts.
SCRIPTS = (
    "ingest_bench.py",
    "sender_bench.py",
    "instances_bench.py",
    "assemble_bench.py",
    "cli_bench.py",
    "portal_bench.py",
    "search_bench.py",
    "attachment_memory.py",
)
SUMMARY_WORDS = ("PASS", "FAIL", "SKIPPED")
MAX_SUMMARY_LINES = 12


@dataclass
class Outcome:
    script: str
    code: int | None = None  # None: not run (missing)
    seconds: float = 0.0
    lines: list[str] = field(default_factory=list)


def run(script: Path, extra: list[str], timeout: float) -> Outcome:
    outcome = Outcome(script.name)
    python = str(VENV_PY if VENV_PY.exists() else Path(sys.executable))
    print(f"\n=== {script.name} {' '.join(extra)}".rstrip(), flush=True)
    start = time.monotonic()
    proc = subprocess.Popen(
        [python, str(script), *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
    )

    def forward(signum: int, _frame: object) -> None:
        proc.send_signal(signum)  # the script stops its own servers in its `finally`

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            if any(word in line for word in SUMMARY_WORDS):
                outcome.lines.append(line.strip())

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    previous = signal.signal(signal.SIGTERM, forward)
    try:
        outcome.code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        print(f"run_all: {script.name} still running after {timeout:g} s, stopping it")
        proc.terminate()
        try:
            outcome.code = proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            outcome.code = proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        proc.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    reader.join(10)
    outcome.seconds = time.monotonic() - start
    return outcome


def accepts(script: Path, option: str) -> bool:
    return f'"{option}"' in script.read_text(errors="replace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick where accepted")
    parser.add_argument("--only", help="comma-separated script names (without .py) to run")
    parser.add_argument(
        "--timeout", type=float, default=3600, help="seconds before a script is stopped"
    )
    args = parser.parse_args(argv)
    only = {n.strip().removesuffix(".py") for n in (args.only or "").split(",") if n.strip()}
    outcomes: list[Outcome] = []
    for name in SCRIPTS:
        script = BENCH / name
        if only and script.stem not in only:
            continue
        if not script.exists():
            outcomes.append(Outcome(name))
            continue
        extra = ["--quick"] if args.quick and accepts(script, "--quick") else []
        outcomes.append(run(script, extra, args.timeout))

    load = os.getloadavg()[0]
    print(f"\n=== summary (load average now {load:.2f} on {os.cpu_count()} CPUs)")
    for o in outcomes:
        if o.code is None:
            print(f"{o.script:<22} not present, skipped")
            continue
        status = "ok" if o.code == 0 else f"FAILED (exit {o.code})"
        print(f"{o.script:<22} {status:<16} {o.seconds:7.1f} s")
        for line in o.lines[:MAX_SUMMARY_LINES]:
            print(f"    {line}")
        if len(o.lines) > MAX_SUMMARY_LINES:
            print(f"    ... {len(o.lines) - MAX_SUMMARY_LINES} more PASS/FAIL lines above")
    return 1 if any(o.code not in (None, 0) for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
