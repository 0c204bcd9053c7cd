"""Jobs on Redis through rq: any number of `turbokit worker` processes run them.

rq's own client is synchronous, so enqueueing runs in a worker thread and never blocks the loop.
Retries with backoff use rq's `Retry`; delayed retries need the worker's scheduler, which
`turbokit worker` starts.
"""

from __future__ import annotations

import asyncio

from redis import Redis
from rq import Queue, Retry

from backend.jobs.base import JobArg, Jobs, RetryPolicy, resolve

SOCKET_TIMEOUT_SECONDS = 5
"""Enqueueing gives up after this long when Redis does not answer."""


class RedisJobs(Jobs):
    def __init__(self, url: str, queue_name: str, policy: RetryPolicy) -> None:
        super().__init__(policy)
        self.connection = Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
        )
        self.queue = Queue(queue_name, connection=self.connection)

    async def enqueue(self, function: str, *args: JobArg) -> None:
        resolve(function)
        await asyncio.to_thread(self._enqueue, function, args)

    def _enqueue(self, function: str, args: tuple[JobArg, ...]) -> None:
        retry = (
            Retry(max=self.policy.retries, interval=self.policy.delays)
            if self.policy.retries
            else None
        )
        self.queue.enqueue(function, *args, retry=retry)

    async def stop(self) -> None:
        await super().stop()
        await asyncio.to_thread(self.connection.close)
