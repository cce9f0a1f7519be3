"""The outbound sender worker: leases a batch of due outbox rows, hands their bytes to the
transport, and records every outcome of the batch at once.

`run_once()` drains what is due now (tests and `mailgate outbox send` use it); `run()` loops
in the serving process until stopped, and `serve_forever()` is the same loop, blocking, for
the sender's own process (adapters/sender_process.py)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Protocol

from mailgate import logs
from mailgate.errors import TempFailure
from mailgate.metrics import Metrics
from mailgate.services.outbox import Transport, TransportPermError, TransportTempError
from mailgate.services.outbox_queue import (
    SENT,
    SKIPPED,
    Attempt,
    ClaimedRow,
    Delivery,
    OutboundMail,
    Outcome,
)
from mailgate.store.models import Outbox

Row = Outbox | ClaimedRow  # a claimed row: the sender reads it, never changes it
Stop = Callable[[], bool]
Assemble = Callable[[Row], bytes]
# What each row's new status counts as, in the `mailgate_outbound_total{result}` metric.
_RESULT = {"sent": "sent", "queued": "retried", "failed": "failed"}


class Queue(Protocol):
    """Leases and records rows: OutboxQueue, or in the sender's own process the queue that
    writes through serve's group commits (adapters/sender_process.py)."""

    lease: timedelta

    def claim_due(self, limit: int = ...) -> Sequence[Row]: ...

    def settle(self, outcomes: list[Outcome]) -> dict[int, str]: ...


def stored_bytes(row: Row) -> bytes:
    """The bytes to put on the wire for a row: those fixed at enqueue time. The composition
    root passes another function (MailAssembler.assemble) once rows carry kind + parameters."""
    return row.raw


def _never() -> bool:
    return False


class Sender:
    def __init__(
        self,
        queue: Queue,
        transport: Transport,
        idle_seconds: float = 1.0,
        metrics: Metrics | None = None,
        *,
        batch_size: int = 100,
        linger_seconds: float = 0.05,
        assemble: Assemble = stored_bytes,
        settle_every: int | None = None,
    ) -> None:
        self.queue = queue
        self.transport = transport
        self.idle_seconds = idle_seconds
        self.metrics = metrics or Metrics()
        self.batch_size = batch_size
        # After a wake-up, wait this long for more mail to be queued: under load one batch
        # (two write transactions) then carries many mails instead of one or two.
        self.linger_seconds = linger_seconds
        self.assemble = assemble
        # Record outcomes every this many mails of a batch (default: once per batch). Smaller
        # narrows what a sender dying mid-batch leaves in doubt (sent, not yet recorded) at
        # the cost of more write transactions.
        self.settle_every = max(1, settle_every or batch_size)
        self.wakeup = asyncio.Event()
        # Told each batch's counts ({"sent": n, "retried": n, "failed": n}): the sender's own
        # process relays them to the serving process's metrics.
        self.on_settled: Callable[[Counter[str]], None] | None = None

    def run_once(self, stop: Stop = _never) -> int:
        """Send every row due now (blocking), then close the connections (QUIT). Returns how
        many rows were attempted."""
        try:
            return self.drain(stop)
        finally:
            self.close()

    def drain(self, stop: Stop = _never) -> int:
        """Send every row due now, keeping the connections for the next pass.

        `stop()` true ends it early: mails in flight finish and the batch is recorded, mails
        not yet tried are given back untried."""
        attempted = 0
        while not stop():
            rows = self.queue.claim_due(self.batch_size)
            if rows:
                attempted += self._send_batch(rows, stop)
            if len(rows) < self.batch_size:  # that was everything due when it was claimed
                return attempted
        return attempted

    def _send_batch(self, rows: Sequence[Row], stop: Stop) -> int:
        # Stop starting mails well before the lease runs out: past it, another sender could
        # take a row this one is still sending.
        deadline = time.monotonic() + self.queue.lease.total_seconds() / 2
        outcomes: list[Outcome] = []
        ready: list[tuple[Row, OutboundMail]] = []
        for row in rows:
            try:
                raw = self.assemble(row)
            except Exception as exc:  # fault barrier for one row: the others still go out
                logs.error("outbox.assemble_failed", exc_info=True, outbox=row.id, kind=row.kind)
                attempt = Attempt(Delivery.TEMPORARY, f"assemble: {type(exc).__name__}: {exc}")
                outcomes.append(Outcome(row.id or 0, row.attempts, attempt))
                continue
            ready.append((row, OutboundMail(row.envelope_from, row.to_addr, raw)))
        halt: Stop = lambda: stop() or time.monotonic() > deadline  # noqa: E731
        statuses: dict[int, str] = {}
        pending = outcomes  # assemble failures: recorded with the first chunk
        outcomes = []
        for start in range(0, len(ready), self.settle_every):
            chunk = ready[start : start + self.settle_every]
            results = self._deliver([mail for _, mail in chunk], halt)
            part = pending + [
                Outcome(row.id or 0, row.attempts, result)
                for (row, _), result in zip(chunk, results, strict=True)
            ]
            pending = []
            statuses.update(self._settle(part))
            outcomes += part
        if pending:  # nothing could be assembled
            statuses.update(self._settle(pending))
            outcomes += pending
        counts: Counter[str] = Counter()
        by_id = {row.id: row for row in rows}
        for outcome in outcomes:
            if outcome.attempt.delivery is Delivery.SKIPPED:
                continue
            row, status = by_id[outcome.outbox_id], statuses[outcome.outbox_id]
            counts[_RESULT[status]] += 1
            self.metrics.outbound_result(_RESULT[status])
            if status == "sent":
                logs.info("outbox.sent", outbox=row.id, to=row.to_addr, kind=row.kind,
                          ticket=row.ticket_id)  # fmt: skip
            elif outcome.attempt.delivery is Delivery.PERMANENT:
                logs.warning("outbox.failed", outbox=row.id, to=row.to_addr,
                             error=outcome.attempt.error)  # fmt: skip
            else:
                logs.warning("outbox.retry", outbox=row.id, to=row.to_addr, status=status,
                             error=outcome.attempt.error)  # fmt: skip
        if counts and self.on_settled is not None:
            self.on_settled(counts)
        return counts.total()

    def _deliver(self, mails: list[OutboundMail], stop: Stop) -> list[Attempt]:
        send_many = getattr(self.transport, "send_many", None)
        if send_many is not None:
            return list(send_many(mails, stop))
        # A transport that only knows `send` (one mail at a time), e.g. an in-memory one.
        results: list[Attempt] = []
        for mail in mails:
            if stop():
                results.append(SKIPPED)
                continue
            try:
                self.transport.send(mail.envelope_from, mail.to_addr, mail.raw)
            except TransportPermError as exc:
                results.append(Attempt(Delivery.PERMANENT, str(exc)))
            except TransportTempError as exc:
                results.append(Attempt(Delivery.TEMPORARY, str(exc)))
            else:
                results.append(SENT)
        return results

    def _settle(self, outcomes: list[Outcome], attempts: int = 20) -> dict[int, str]:
        """The mails are gone: record them, retrying through database hiccups, because a row
        left queued would be sent a second time when its lease runs out."""
        for attempt in range(attempts):
            try:
                return self.queue.settle(outcomes)
            except TempFailure as exc:
                logs.warning("outbox.settle_retry", rows=len(outcomes), attempt=attempt + 1,
                             error=str(exc))  # fmt: skip
                time.sleep(min(5.0, 0.05 * 2**attempt))  # back off from a busy database
        ids = ",".join(str(o.outbox_id) for o in outcomes)
        raise TempFailure(f"could not record outbox rows {ids}")

    def close_idle(self) -> None:
        close_idle = getattr(self.transport, "close_idle", None)
        if close_idle is not None:
            close_idle()

    def close(self) -> None:
        """Say goodbye to the smarthost (QUIT) and let the transport's threads go."""
        close = getattr(self.transport, "close", None)
        if close is not None:
            close()

    # -- the loops ----------------------------------------------------------------------------

    def _pass(self, stop: Stop) -> None:
        try:
            self.drain(stop)
        except Exception:  # fault barrier: log and keep the worker alive
            logs.error("sender.crashed", exc_info=True)

    async def run(self, stop: asyncio.Event) -> None:
        """In the serving process: a pass on every wake-up, or every `idle_seconds`."""
        try:
            while not stop.is_set():
                self.wakeup.clear()  # before the pass: a wake-up during it is not lost
                await asyncio.to_thread(self._pass, stop.is_set)
                waiters = [
                    asyncio.ensure_future(stop.wait()),
                    asyncio.ensure_future(self.wakeup.wait()),
                ]
                await asyncio.wait(
                    waiters, timeout=self.idle_seconds, return_when=asyncio.FIRST_COMPLETED
                )
                for w in waiters:
                    w.cancel()
                if not self.wakeup.is_set():
                    await asyncio.to_thread(self.close_idle)
                elif not stop.is_set():
                    await asyncio.sleep(self.linger_seconds)
        finally:
            await asyncio.to_thread(self.close)

    def serve_forever(self, wait: Callable[[float], bool], stop: Stop) -> None:
        """In the sender's own process: `wait(timeout)` blocks until woken (True) or the
        timeout (False); `stop()` says the process is asked to finish."""
        try:
            while not stop():
                self._pass(stop)
                woken = wait(self.idle_seconds)
                if not woken:
                    self.close_idle()
                elif not stop():
                    time.sleep(self.linger_seconds)
        finally:
            self.close()
