"""`tools` is reusable on its own: importing it must not pull in the web, LLM or upper layers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("fastapi", "litellm", "threads", "agent_core", "backend")
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_importing_tools_loads_no_upper_layer() -> None:
    script = (
        "import sys, tools\n"
        f"loaded = sorted(m for m in {FORBIDDEN!r} if m in sys.modules)\n"
        "print(','.join(loaded))\n"
    )

    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )

    assert completed.stdout.strip() == ""
