"""The agent loop: context within the token budget, LLM calls through litellm, tool steps, typed
events and usage. Knows nothing of HTTP."""
