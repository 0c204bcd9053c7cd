"""Webhooks from providers: each delivery is verified on its raw body, then takes effect once."""
