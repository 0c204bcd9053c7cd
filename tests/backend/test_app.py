"""The app's lifespan: what startup leaves behind is kept out of the garbage collector's passes."""

from __future__ import annotations

import gc

from fastapi import FastAPI


async def test_startup_freezes_its_heap_out_of_the_collector(app: FastAPI) -> None:
    """A full collection would otherwise walk litellm's ~400,000 objects (~200 ms) again and
    again, stalling every stream of the worker."""
    assert gc.get_freeze_count() > 100_000
