"""The FastAPI service and everything product-specific: auth, domains, webhooks, jobs, the CLI."""
