"""Cron job functions for the tests: one that counts its runs, one that always fails."""

from __future__ import annotations

from collections import Counter

runs: Counter[str] = Counter()


async def count() -> str:
    runs["count"] += 1
    return f"run {runs['count']}"


async def fail() -> str:
    raise RuntimeError("the cron broke")
