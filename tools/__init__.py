"""The tool framework: typed async functions become tools with a JSON Schema, a registry, and
validated, time-limited, concurrent execution whose failures become text for the model."""
