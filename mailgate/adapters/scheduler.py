"""Runs the scheduled jobs from `serve` with the `schedule` library (jobs declared as data)."""

from __future__ import annotations

import asyncio

import schedule

from mailgate import logs
from mailgate.clock import Clock
from mailgate.services.jobs import Jobs


class Scheduler:
    def __init__(self, jobs: Jobs, clock: Clock, every_minutes: int = 5) -> None:
        self.jobs = jobs
        self.clock = clock
        self.schedule = schedule.Scheduler()
        self.schedule.every(every_minutes).minutes.do(self._run_jobs)

    def _run_jobs(self) -> None:
        try:
            report = self.jobs.run_all(self.clock.now())
            logs.info("jobs.ran", auto_resolved=report.auto_resolved, closed=report.closed)
        except Exception:  # fault barrier: the next run catches up
            logs.error("jobs.crashed", exc_info=True)

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.to_thread(self._run_jobs)  # catch up at start-up, after any downtime
        while not stop.is_set():
            await asyncio.to_thread(self.schedule.run_pending)
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except TimeoutError:
                pass
