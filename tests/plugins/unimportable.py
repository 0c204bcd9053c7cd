"""A plugin whose dependency is not installed."""

import turbokit_missing_dependency  # noqa: F401
