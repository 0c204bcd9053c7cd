"""Billing: plans, the credits ledger, reservations settled per LLM call, usage events and their
daily rollup, payments from Stripe."""
