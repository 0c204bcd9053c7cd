"""The conversation store: threads, messages (AI SDK UIMessage parts), runs and numbered run events.

No web and no LLM code: a worker, a script or another framework can use it as it is. `user_id` is a
plain string; this package does not know the users table.
"""
