"""Email: an outbox table, delivered by a job through Resend, or kept in the outbox and logged
when no `RESEND_API_KEY` is set (nothing leaves the machine)."""
