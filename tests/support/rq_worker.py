"""rq on the shared test Redis: a queue of the test's own, and a worker run in a thread."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.timeouts import TimerDeathPenalty

from tests.support.databases import REDIS_URL, unavailable


@contextmanager
def own_queue() -> Iterator[str]:
    """A queue name of this test's own on the shared Redis; its keys are removed afterwards."""
    connection = Redis.from_url(REDIS_URL)
    try:
        connection.ping()
    except (OSError, RedisError) as exc:
        unavailable("Redis", exc)
    name = f"turbokit-test-{uuid.uuid4().hex}"
    try:
        yield name
    finally:
        Queue(name, connection=connection).delete(delete_jobs=True)
        connection.close()


class ThreadWorker(SimpleWorker):
    """rq's in-process worker, off the main thread: the test's event loop holds the main thread,
    and each async job needs a loop of its own (`asyncio.run`). Signals stay with pytest, and job
    timeouts use a timer rather than SIGALRM."""

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:
        pass


def work(queue_name: str) -> None:
    """Run what the queue holds, in this thread, as `turbokit worker --burst` would."""
    connection = Redis.from_url(REDIS_URL)
    try:
        queue = Queue(queue_name, connection=connection)
        ThreadWorker([queue], connection=connection).work(burst=True)
    finally:
        connection.close()
