"""Job entry point of the workflow engine: thin, importable, taking the run's id."""

from __future__ import annotations

from backend.jobs import job_context
from backend.workflows import service


async def execute_workflow(run_id: str) -> None:
    """Execute one workflow run (see `service.execute`); safe to run more than once, and at
    the same time as another job of the same run (only one of them gets it)."""
    async with job_context() as ctx:
        await service.execute(ctx.db, ctx.settings, run_id)
