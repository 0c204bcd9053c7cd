"""Live updates: write paths publish after they commit; `GET /v1/events` streams them as SSE."""
