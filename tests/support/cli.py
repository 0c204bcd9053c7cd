"""Run the `turbokit` command line as a user would: a separate process, its own environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence


def turbokit(
    *args: str, unset: Sequence[str] = (), timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """`python -m backend.cli ARGS` with `env` over this process's environment (a development
    environment unless `env` says otherwise) and the variables named in `unset` removed."""
    environment = {**os.environ, "ENVIRONMENT": "development", **env}
    for name in unset:
        environment.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "backend.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
        check=False,
    )
