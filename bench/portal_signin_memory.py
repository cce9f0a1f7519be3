"""Portal sign-in burst: memory and SMTP latency while 100 sign-ins hash at once.

`.venv/bin/python bench/portal_signin_memory.py --help`; results and the policy: docs/portal.md.

Starts a real `mailgate serve` (SQLite, portal and SMTP on free ports, maildir outbound) as a
subprocess, warms it up (one sign-in, so the dummy hash and templates exist; a few mails),
then fires --signins parallel sign-ins, each from its own client (own cookies, own
X-Forwarded-For address, so no rate limit cuts the burst short) to an unknown address: every
one costs an Argon2 verification (64 MiB each). Meanwhile one SMTP session sends mail after
mail. Reports the serve process's RSS growth (sampled every 5 ms, and the kernel's VmHWM)
and SMTP latency (whole transaction, MAIL to 250) before and during the burst.

`--tree PATH` runs the mailgate found in another checkout (e.g. an older commit unpacked
with `git archive`), to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import ingest_bench
from ingest_bench import (
    ROOT,
    VENV_PY,
    Client,
    free_port,
    is_listening,
    make_message,
    write_config,
)

FIELD = 'name="csrf" value="'


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class RssSampler(threading.Thread):
    """The highest RSS seen while running (the kernel's VmHWM cannot be reset)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            self.done.wait(0.005)


async def sign_in(base: str, n: int, tag: str) -> int:
    headers = {"X-Forwarded-For": f"10.{n // 250}.{n % 250}.{7}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=300) as http:
        page = (await http.get("/login")).text
        token = page.split(FIELD, 1)[1].split('"', 1)[0]
        form = {"csrf": token, "email": f"nobody-{tag}-{n}@bench.example", "password": "x" * 12}
        return (await http.post("/login", data=form)).status_code


async def smtp_probe(port: int, tag: str, stop: asyncio.Event) -> list[float]:
    """Mail after mail on one session until `stop`; seconds per transaction."""
    client = await Client.open("127.0.0.1", port)
    took: list[float] = []
    n = 0
    try:
        while not stop.is_set():
            msg = make_message(tag, n, 2000)
            start = time.perf_counter()
            await client.send(msg)
            took.append(time.perf_counter() - start)
            n += 1
    finally:
        await client.close()
    return took


async def burst(base: str, smtp_port: int, count: int, tag: str) -> tuple[list[int], list[float]]:
    stop = asyncio.Event()
    probe = asyncio.create_task(smtp_probe(smtp_port, tag + "b", stop))
    codes = await asyncio.gather(*(sign_in(base, n, tag) for n in range(count)))
    stop.set()
    return list(codes), await probe


async def baseline(smtp_port: int, tag: str, seconds: float) -> list[float]:
    stop = asyncio.Event()
    probe = asyncio.create_task(smtp_probe(smtp_port, tag + "q", stop))
    await asyncio.sleep(seconds)  # a measuring window, not synchronisation
    stop.set()
    return await probe


def ms(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signins", type=int, default=100, help="parallel sign-ins")
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout to run mailgate from")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    python = str(VENV_PY if VENV_PY.exists() else Path(sys.executable))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    tmp = Path(tempfile.mkdtemp(prefix="mailgate-signin-bench-"))
    smtp_port, portal_port = free_port(), free_port()
    base = f"http://127.0.0.1:{portal_port}"
    config = tmp / "mailgate.toml"
    ingest_bench.REPO_CONFIG = args.tree / "config" / "mailgate.toml"  # that tree's schema
    write_config(
        config,
        {
            ("mailgate", "data_dir"): str(tmp / "data"),
            ("database", "url"): f"sqlite:///{tmp / 'data' / 'mailgate.db'}",
            ("inbound", "smtp_listen"): f"127.0.0.1:{smtp_port}",
            ("inbound", "lmtp_listen"): "",
            ("addresses", "support"): "support@example.com",
            ("outbound", "transport"): f"maildir:{tmp / 'sent'}",
            ("portal", "listen"): f"127.0.0.1:{portal_port}",
            ("portal", "base_url"): base,
            ("metrics", "listen"): "",
        },
    )
    log = open(tmp / "mailgate.log", "wb")
    argv_ = [python, "-m", "mailgate", "--config", str(config), "serve"]
    proc = subprocess.Popen(argv_, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=args.tree)
    tag = f"{os.getpid()}x"
    try:
        deadline = time.monotonic() + 60
        while not (is_listening(smtp_port) and is_listening(portal_port)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve did not start; see {tmp / 'mailgate.log'}")
            time.sleep(0.02)
        asyncio.run(sign_in(base, 9999, tag + "w"))  # warm-up: dummy hash, templates
        quiet = asyncio.run(baseline(smtp_port, tag, 3.0))
        before = rss_kib(proc.pid)
        sampler = RssSampler(proc.pid)
        sampler.start()
        started = time.perf_counter()
        codes, during = asyncio.run(burst(base, smtp_port, args.signins, tag))
        wall = time.perf_counter() - started
        sampler.done.set()
        sampler.join()
        hwm = rss_kib(proc.pid, "VmHWM")
        print(f"mailgate from {args.tree}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
        print(f"{args.signins} parallel sign-ins to unknown addresses: {wall:.1f} s, answers ")
        print(f"  {dict(sorted((c, codes.count(c)) for c in set(codes)))}")
        print(
            f"RSS before {before / 1024:.0f} MiB, peak sampled {sampler.peak / 1024:.0f} MiB "
            f"(+{(sampler.peak - before) / 1024:.0f} MiB), VmHWM {hwm / 1024:.0f} MiB "
            f"(+{(hwm - before) / 1024:.0f} MiB)"
        )
        for name, took in (("quiet", quiet), ("during the burst", during)):
            print(
                f"SMTP transaction {name}: {len(took)} mails, p50 {ms(took, 0.5):.1f} ms, "
                f"p99 {ms(took, 0.99):.1f} ms, max {ms(took, 1.0):.1f} ms"
                + (f", mean {1000 * statistics.fmean(took):.1f} ms" if took else "")
            )
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()
        if not args.keep:
            subprocess.run(["rm", "-rf", str(tmp)], check=False)
        else:
            print(f"kept {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
