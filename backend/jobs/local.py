"""The in-process runner: jobs run as asyncio tasks of the app, with zero setup.

Jobs live in memory: the ones still waiting when the process stops are lost (logged), which is
why job functions work from rows in the database (an outbox) that can be picked up again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from backend.jobs import context
from backend.jobs.base import JobArg, Jobs, RetryPolicy, resolve
from backend.jobs.context import JobContext

log = logging.getLogger("turbokit.jobs")

CONCURRENCY = 4
"""Jobs that run at once in one process."""


@dataclass(frozen=True)
class _Job:
    function: str
    args: tuple[JobArg, ...]
    attempt: int = 1


class LocalJobs(Jobs):
    def __init__(self, job_context: JobContext, policy: RetryPolicy) -> None:
        super().__init__(policy)
        self._context = job_context
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._retries: set[asyncio.Task[None]] = set()
        self._unfinished = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def enqueue(self, function: str, *args: JobArg) -> None:
        resolve(function)
        self._put(_Job(function, args))

    async def start(self) -> None:
        if not self._workers:
            self._workers = [asyncio.create_task(self._work()) for _ in range(CONCURRENCY)]

    async def stop(self) -> None:
        await self.settle()
        if self._unfinished:
            log.warning(
                "stopping with %d job(s) not run to the end; they are lost", self._unfinished
            )
        tasks = [*self._workers, *self._retries]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers = []

    async def wait_idle(self) -> None:
        """Wait until every queued job, retries included, has run to its end."""
        await self.settle()
        await self._idle.wait()

    def _put(self, job: _Job) -> None:
        self._unfinished += 1
        self._idle.clear()
        self._queue.put_nowait(job)

    def _done(self) -> None:
        self._unfinished -= 1
        if self._unfinished == 0:
            self._idle.set()

    async def _work(self) -> None:
        context.enter(self._context)
        while True:
            job = await self._queue.get()
            try:
                await self._run(job)
            finally:
                self._done()

    async def _run(self, job: _Job) -> None:
        try:
            await resolve(job.function)(*job.args)
        except Exception:
            if job.attempt > self.policy.retries:
                log.exception(
                    "job %s%r failed for good after %d attempt(s)",
                    job.function,
                    job.args,
                    job.attempt,
                )
                return
            delay = self.policy.delay(job.attempt)
            log.warning(
                "job %s%r failed (attempt %d); retrying in %.1f s",
                job.function,
                job.args,
                job.attempt,
                delay,
                exc_info=True,
            )
            self._retry_later(_Job(job.function, job.args, job.attempt + 1), delay)

    def _retry_later(self, job: _Job, delay: float) -> None:
        self._unfinished += 1  # counted from now, so waiting for idle covers the delay

        async def later() -> None:
            try:
                await asyncio.sleep(delay)
                self._put(job)
            finally:
                self._done()

        task = asyncio.create_task(later())
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)
