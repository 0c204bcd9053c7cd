"""Usage events reach Autumn from an outbox: each event waits in `usage_events` until Autumn
acknowledges it (its id is the idempotency key, so a resend is harmless). A background task
sends them; when Autumn is down it backs off and tries again later. A chat never waits on it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy import select

from backend.billing.models import UsageEvent
from config.database import Database, utcnow
from config.settings import Settings

log = logging.getLogger("turbokit.autumn")

BATCH = 100
MAX_BACKOFF_SECONDS = 300.0


class AutumnSync:
    """Sends unsynced usage events to Autumn, oldest first, until stopped."""

    def __init__(self, db: Database, settings: Settings, client: Any = None) -> None:
        self.db = db
        self.settings = settings
        self.client = client or _client(settings)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="autumn sync")

    def nudge(self) -> None:
        """New events are waiting: send them now rather than at the next interval."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        close = getattr(getattr(self.client, "http", None), "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()

    async def sync_once(self) -> int:
        """Send one batch; returns how many Autumn acknowledged. Raises when Autumn fails."""
        async with self.db.read() as session:
            events = list(
                await session.scalars(
                    select(UsageEvent)
                    .where(UsageEvent.autumn_synced_at.is_(None))
                    .order_by(UsageEvent.id)
                    .limit(BATCH)
                )
            )
        for event in events:
            await self.client.track(
                event.user_id,
                self.settings.autumn_feature_id,
                value=event.credits,
                idempotency_key=event.id,
                properties={"model": event.model, "agent": event.agent, "run_id": event.run_id},
            )
            async with self.db.write() as session:
                synced = await session.get(UsageEvent, event.id)
                if synced is not None:
                    synced.autumn_synced_at = utcnow()
        return len(events)

    async def _loop(self) -> None:
        delay = self.settings.autumn_sync_seconds
        while True:
            try:
                sent = await self.sync_once()
                delay = self.settings.autumn_sync_seconds
                if sent == BATCH:
                    continue
            except Exception as exc:
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)
                log.warning("Autumn unavailable (%s); retrying in %.0fs", exc, delay)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)


def _client(settings: Settings) -> Any:
    from autumn.aio import AsyncClient

    assert settings.autumn_secret_key
    return AsyncClient(settings.autumn_secret_key, base_url=settings.autumn_base_url, max_retries=0)
