"""The OpenAI-compatible door: `/v1/models` and `/v1/chat/completions` over the same run engine as
`/v1/chat`, so any OpenAI client can talk to an agent (its tools run server-side)."""
