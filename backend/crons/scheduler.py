"""The loop that claims due crons and hands them to the job runner, in every server process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from backend.crons import service
from backend.crons.registry import CRONS, Cron
from backend.jobs import Jobs
from config.database import Database, utcnow

log = logging.getLogger("turbokit.crons")

RUN_JOB = "backend.crons.jobs.run_cron"


class Scheduler:
    """Every `tick_seconds`, claims each due cron and enqueues its run. Failures are logged and
    the loop goes on: a broken cron or a database hiccup never stops the other crons."""

    def __init__(
        self,
        db: Database,
        jobs: Jobs,
        tick_seconds: float,
        crons: tuple[Cron, ...] = CRONS,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.jobs = jobs
        self.tick_seconds = tick_seconds
        self.crons = tuple(cron.check() for cron in crons)
        self.clock = clock
        self._registered = False
        self._task: asyncio.Task[None] | None = None

    async def tick(self) -> list[str]:
        """Claim and enqueue what is due now; the names this process claimed."""
        now = self.clock()
        if not self._registered:
            await service.register(self.db, self.crons, now)
            self._registered = True
        due = await service.due(self.db, now)  # a read: most ticks write nothing
        claimed = []
        for cron in self.crons:
            if cron.name in due and await service.claim(self.db, cron, now):
                claimed.append(cron.name)
                await self._enqueue(cron)
        return claimed

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="cron scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("cron scheduler tick failed; trying again in %g s", self.tick_seconds)
            await asyncio.sleep(self.tick_seconds)

    async def _enqueue(self, cron: Cron) -> None:
        try:
            await self.jobs.enqueue(RUN_JOB, cron.name, cron.job)
        except Exception as exc:
            log.exception("could not enqueue cron %s; it runs at its next tick", cron.name)
            await service.record(self.db, cron.name, None, "failed", None, f"not enqueued: {exc}")
