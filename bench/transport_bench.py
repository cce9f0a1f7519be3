"""SMTP transport CPU per mail (this process, every thread), batches of 2, 8 and 30 mails over
2 connections to a local sink: `_Workers.run` as it is against the way it was before ("pool":
every slot on the thread pool while the caller waits), rounds alternating.

    .venv/bin/python bench/transport_bench.py [--rounds 6]
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # bench/ is not a package
from sink import Sink  # noqa: E402

from mailgate.adapters import transports  # noqa: E402
from mailgate.services.outbox_queue import SENT, OutboundMail  # noqa: E402

RAW = b"From: a@b.example\r\nTo: c@d.example\r\nSubject: x\r\n\r\n" + b"hello world\r\n" * 150


def pool_run(self: transports._Workers, work: Callable[[int], None], slots: int) -> None:
    """The former _Workers.run: every slot on the pool."""
    if slots <= 1:
        work(0)
        return
    if self._pool is None:
        self._pool = ThreadPoolExecutor(self.size, thread_name_prefix=self.name)
    for future in [self._pool.submit(work, i) for i in range(slots)]:
        future.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="transport-bench-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        sink = Sink(folder, int(s.getsockname()[1]), sys.executable)
    sink.start()
    arms = {"pool": pool_run, "current": transports._Workers.run}
    results: dict[tuple[int, str], list[float]] = {}
    try:
        for _ in range(args.rounds):
            for name, run in arms.items():
                transports._Workers.run = run  # type: ignore[method-assign]
                transport = transports.SmtpTransport("127.0.0.1", sink.port, "h.example")
                for batch in (2, 8, 30):
                    mails = [
                        OutboundMail("s@x.example", f"r{i}@y.example", RAW) for i in range(batch)
                    ]
                    transport.send_many(mails)  # connected
                    start, sent = time.process_time(), 0
                    for _ in range(max(1, 1200 // batch)):
                        outcome = transport.send_many(mails)
                        assert all(a == SENT for a in outcome), outcome
                        sent += len(outcome)
                    us = (time.process_time() - start) / sent * 1e6
                    results.setdefault((batch, name), []).append(us)
                transport.close()
    finally:
        transports._Workers.run = arms["current"]  # type: ignore[method-assign]
        sink.stop()
    print(f"sink: {sink.kind}")
    for (batch, name), values in sorted(results.items()):
        values.sort()
        print(f"batch {batch:3} {name:8} best {values[0]:6.1f} median "
              f"{values[len(values) // 2]:6.1f} us CPU/mail")  # fmt: skip


if __name__ == "__main__":
    main()
