"""The outbound sender worker: claims due outbox rows and hands their fixed bytes to the
transport. `run_once()` drains what is due now (tests use it); `run()` loops until stopped."""

from __future__ import annotations

import asyncio
import time

from mailgate import logs
from mailgate.errors import TempFailure
from mailgate.metrics import Metrics
from mailgate.services.outbox import (
    OutboxQueue,
    Transport,
    TransportPermError,
    TransportTempError,
)


class Sender:
    def __init__(
        self,
        queue: OutboxQueue,
        transport: Transport,
        idle_seconds: float = 1.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.queue = queue
        self.transport = transport
        self.idle_seconds = idle_seconds
        self.metrics = metrics or Metrics()
        self.wakeup = asyncio.Event()

    def run_once(self) -> int:
        """Send every row due now (blocking). Returns how many rows were attempted."""
        attempted = 0
        while True:
            rows = self.queue.claim_due()
            if not rows:
                return attempted
            for row in rows:
                attempted += 1
                try:
                    self.transport.send(row.envelope_from, row.to_addr, row.raw)
                except TransportPermError as exc:
                    self.queue.mark_failed(row.id or 0, str(exc))
                    self.metrics.outbound_result("failed")
                    logs.warning("outbox.failed", outbox=row.id, to=row.to_addr, error=str(exc))
                    continue
                except TransportTempError as exc:
                    status = self.queue.mark_retry(row, str(exc))
                    self.metrics.outbound_result("failed" if status == "failed" else "retried")
                    logs.warning(
                        "outbox.retry", outbox=row.id, to=row.to_addr, status=status, error=str(exc)
                    )
                    continue
                self._settle_sent(row.id or 0)
                self.metrics.outbound_result("sent")
                logs.info(
                    "outbox.sent",
                    outbox=row.id,
                    to=row.to_addr,
                    kind=row.kind,
                    ticket=row.ticket_id,
                )

    def _settle_sent(self, outbox_id: int, attempts: int = 20) -> None:
        """The mail is gone: record it, retrying through database hiccups, because a row left
        queued would be sent a second time when its lease runs out."""
        for attempt in range(attempts):
            try:
                self.queue.mark_sent(outbox_id)
                return
            except TempFailure:
                logs.warning("outbox.mark_sent_retry", outbox=outbox_id, attempt=attempt + 1)
                time.sleep(min(5.0, 0.05 * 2**attempt))  # back off from a busy database
        raise TempFailure(f"could not record outbox row {outbox_id} as sent")

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.run_once)
            except Exception:  # fault barrier: log and keep the worker alive
                logs.error("sender.crashed", exc_info=True)
            self.wakeup.clear()
            waiters = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self.wakeup.wait()),
            ]
            await asyncio.wait(
                waiters, timeout=self.idle_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            for w in waiters:
                w.cancel()
