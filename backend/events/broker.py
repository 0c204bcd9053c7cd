"""Where live events travel: channels that streams subscribe to and write paths publish to.

Without `REDIS_URL` an in-process broker fans messages out to this process's streams. With it,
every message goes through Redis pub/sub, so a stream on any server process receives what any
other process publishes. Both keep a process's messages in the order they were published.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

log = logging.getLogger("turbokit.events")

SUBSCRIBER_BUFFER = 1000
"""Messages a slow local subscriber may fall behind by before it is cut off (it reconnects)."""
CHANNEL_PREFIX = "turbokit:events:"
"""Redis channel names start with this, apart from anything else sharing the Redis."""
_CLOSED = b""
"""Queued to a local subscriber to end it; real messages are never empty."""


class SubscriptionClosed(Exception):
    """The subscription ended: the broker closed, the subscriber fell behind, Redis went away."""


class Subscription(Protocol):
    async def next(self, within: float) -> bytes | None:
        """The next message, or None if none came within `within` seconds; raises
        `SubscriptionClosed` once the subscription can deliver no more."""
        ...


class Broker(Protocol):
    def publish(self, channel: str, message: bytes) -> None:
        """Send without waiting (it is called from commit callbacks); never raises."""
        ...

    def subscribe(self, channels: Sequence[str]) -> AbstractAsyncContextManager[Subscription]:
        """Entered once the subscription is live: anything published after that is received."""
        ...

    async def close(self) -> None: ...


class _LocalSubscription:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(SUBSCRIBER_BUFFER)

    async def next(self, within: float) -> bytes | None:
        try:
            message = await asyncio.wait_for(self.queue.get(), within)
        except TimeoutError:
            return None
        if message is _CLOSED:
            raise SubscriptionClosed
        return message

    def offer(self, message: bytes) -> bool:
        """Queue a message; False if the subscriber has fallen too far behind."""
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            return False
        return True

    def end(self) -> None:
        """Make `next` raise after what is queued; room is made for the marker if needed."""
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(_CLOSED)


class LocalBroker:
    """Fan-out to this process's subscribers only: the embedded default (one server process)."""

    def __init__(self) -> None:
        self._channels: dict[str, set[_LocalSubscription]] = {}

    def publish(self, channel: str, message: bytes) -> None:
        for subscription in list(self._channels.get(channel, ())):
            if not subscription.offer(message):
                log.warning("events: a subscriber of %s fell behind; ending its stream", channel)
                self._remove(subscription)
                subscription.end()

    @asynccontextmanager
    async def subscribe(self, channels: Sequence[str]) -> AsyncIterator[Subscription]:
        subscription = _LocalSubscription()
        for channel in channels:
            self._channels.setdefault(channel, set()).add(subscription)
        try:
            yield subscription
        finally:
            self._remove(subscription)

    def _remove(self, subscription: _LocalSubscription) -> None:
        for channel, subscribers in list(self._channels.items()):
            subscribers.discard(subscription)
            if not subscribers:
                del self._channels[channel]

    async def close(self) -> None:
        subscriptions = {s for subscribers in self._channels.values() for s in subscribers}
        self._channels.clear()
        for subscription in subscriptions:
            subscription.end()


class _RedisSubscription:
    def __init__(self, pubsub: PubSub) -> None:
        self.pubsub = pubsub

    async def confirm(self, count: int) -> None:
        """Wait for Redis to confirm each channel: from then on, every message reaches us."""
        while count:
            reply = await self.pubsub.get_message(timeout=5.0)
            if reply is None:
                raise SubscriptionClosed("Redis did not confirm the subscription")
            if reply["type"] == "subscribe":
                count -= 1

    async def next(self, within: float) -> bytes | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while (remaining := deadline - loop.time()) > 0:
            try:
                reply = await self.pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=remaining
                )
            except (RedisError, OSError) as exc:
                raise SubscriptionClosed(str(exc)) from exc
            if reply is not None and reply["type"] == "message":
                data: bytes = reply["data"]
                return data
        return None


class RedisBroker:
    """Redis pub/sub: one connection per open stream, and one task that publishes this
    process's messages in order."""

    def __init__(self, url: str) -> None:
        self._redis = Redis.from_url(url, socket_connect_timeout=5)
        self._outbox: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None

    def publish(self, channel: str, message: bytes) -> None:
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send())
        self._outbox.put_nowait((CHANNEL_PREFIX + channel, message))

    async def _send(self) -> None:
        while (item := await self._outbox.get()) is not None:
            channel, message = item
            try:
                await self._redis.publish(channel, message)
            except (RedisError, OSError):
                log.exception("events: publishing to %s failed; the event is lost", channel)

    @asynccontextmanager
    async def subscribe(self, channels: Sequence[str]) -> AsyncIterator[Subscription]:
        pubsub = self._redis.pubsub()
        try:
            names = sorted({CHANNEL_PREFIX + channel for channel in channels})
            await pubsub.subscribe(*names)
            subscription = _RedisSubscription(pubsub)
            await subscription.confirm(len(names))
            yield subscription
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        """Send what is queued (for a few seconds at most), then disconnect."""
        if self._sender is not None:
            self._outbox.put_nowait(None)
            try:
                await asyncio.wait_for(self._sender, 5.0)
            except TimeoutError:
                log.warning("events: %d events not sent at shutdown", self._outbox.qsize())
        await self._redis.aclose()


def make_broker(redis_url: str | None) -> Broker:
    return RedisBroker(redis_url) if redis_url else LocalBroker()
