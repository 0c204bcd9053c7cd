"""Durable workflows: an async function whose steps each run once, their results kept in the
database, so a workflow re-run after a crash or a failure goes on where it stopped."""
