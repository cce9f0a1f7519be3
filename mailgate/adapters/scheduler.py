"""Runs the scheduled jobs from `serve` with the `schedule` library (jobs declared as data).

With leases (several instances on one database), each job runs only in the instance holding
its lease "job:NAME", inside a transaction fenced by that lease; an instance that takes a job's
lease over (its holder died) runs that job at once rather than waiting for the next period.
"""

from __future__ import annotations

import asyncio

import schedule

from mailgate import logs
from mailgate.clock import Clock
from mailgate.metrics import Metrics
from mailgate.services.jobs import JOB_NAMES, Jobs
from mailgate.services.leases import LeaseLost, Leases


def job_lease(name: str) -> str:
    return f"job:{name}"


class Scheduler:
    def __init__(
        self,
        jobs: Jobs,
        clock: Clock,
        every_minutes: float = 5,
        leases: Leases | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.jobs = jobs
        self.clock = clock
        self.leases = leases
        self.metrics = metrics
        self.schedule = schedule.Scheduler()
        self.schedule.every(every_minutes).minutes.do(self._run_jobs)
        self._caught_up: set[str] = set()  # job names held and run since they were taken

    def lease_names(self) -> list[str]:
        return [job_lease(name) for name in JOB_NAMES]

    def _held(self, name: str) -> bool:
        return self.leases is None or self.leases.held(job_lease(name))

    def run_job(self, name: str) -> int | None:
        """One job now, if this instance holds it; None when it does not (or lost it)."""
        if not self._held(name):
            return None
        leases = self.leases
        fence = None
        if leases is not None:
            lease = job_lease(name)

            def fence(session: object) -> None:
                leases.fence(session, lease)  # type: ignore[arg-type]

        try:
            done = self.jobs.run(name, self.clock.now(), fence)
        except LeaseLost:
            logs.warning("jobs.lease_lost", job=name)
            return None
        except Exception:  # fault barrier: the next run catches up
            logs.error("jobs.crashed", job=name, exc_info=True)
            return None
        if self.metrics is not None:
            self.metrics.job_runs.labels(job=name).inc()
        return done

    def _run_jobs(self) -> None:
        done = {name: self.run_job(name) for name in JOB_NAMES}
        ran = {k: v for k, v in done.items() if v is not None}
        if ran:
            logs.info("jobs.ran", **{k: v for k, v in ran.items()})

    def _catch_up(self) -> None:
        """Jobs whose lease we took since the last look run now (their holder may have died
        before their period's run)."""
        if self.leases is None:
            return
        held = {name for name in JOB_NAMES if self._held(name)}
        for name in sorted(held - self._caught_up):
            done = self.run_job(name)
            logs.info("jobs.taken_over", job=name, done=done)
        self._caught_up = held

    async def run(self, stop: asyncio.Event) -> None:
        if self.leases is None:
            await asyncio.to_thread(self._run_jobs)  # catch up at start-up, after any downtime
        while not stop.is_set():
            await asyncio.to_thread(self._catch_up)
            await asyncio.to_thread(self.schedule.run_pending)
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except TimeoutError:
                pass
