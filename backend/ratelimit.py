"""Per-user rate limits by plan, through slowapi's limiter (memory storage by default, Redis when
REDIS_URL is set, so every server process shares one count)."""

from __future__ import annotations

import math
import time
from typing import Annotated

from fastapi import Depends, Request
from limits import RateLimitItemPerMinute
from slowapi import Limiter
from slowapi.util import get_remote_address

from backend.billing.plans import plan_for
from backend.deps import CurrentUser
from backend.errors import AppError
from config.settings import Settings


def make_limiter(settings: Settings) -> Limiter:
    return Limiter(
        key_func=get_remote_address,
        storage_uri=settings.redis_url or "memory://",
        strategy="moving-window",
        key_prefix="turbokit",
    )


async def chat_rate_limit(request: Request, user: CurrentUser) -> None:
    """The plan's chat requests per minute; the next one is a 429 with `Retry-After`."""
    limiter: Limiter = request.app.state.limiter
    item = RateLimitItemPerMinute(plan_for(user.plan).chat_requests_per_minute)
    if limiter.limiter.hit(item, "chat", user.id):
        return
    reset_at, _remaining = limiter.limiter.get_window_stats(item, "chat", user.id)
    retry_after = max(1, math.ceil(reset_at - time.time()))
    raise AppError(
        "RATE_LIMITED",
        f"Too many chat requests: {item.amount} a minute on the {user.plan} plan",
        429,
        {"retry_after": retry_after},
        headers={"Retry-After": str(retry_after)},
    )


ChatRateLimit = Annotated[None, Depends(chat_rate_limit)]
