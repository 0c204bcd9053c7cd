"""The example plugin (tests/plugins/example), installed for real: pip builds its wheel and
installs it into a directory of its own, where `importlib.metadata` finds its entry point once the
directory is on `sys.path` (in this process) or on `PYTHONPATH` (in a `turbokit` subprocess).

It is kept off the test process's path except while an app that should see it starts, so the
other tests' apps keep the core agents only.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

EXAMPLE = Path(__file__).parents[1] / "plugins" / "example"


@functools.cache
def install_example_plugin(base: Path) -> Path:
    """pip-install the example plugin under `base` (once per test session); returns the directory
    to put on the path. Offline: no dependencies, and the build backend (hatchling, a dev
    dependency) comes from this environment."""
    target = base / "example-plugin"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"pip could not install {EXAMPLE}:\n{result.stderr}")
    return target


@contextlib.contextmanager
def on_sys_path(directory: Path) -> Iterator[None]:
    """Installed packages in `directory` are visible (entry points included) inside the block."""
    sys.path.insert(0, str(directory))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path.remove(str(directory))
        importlib.invalidate_caches()


def pythonpath(directory: Path) -> str:
    """PYTHONPATH for a subprocess that should see the packages installed in `directory`."""
    return os.pathsep.join(filter(None, [str(directory), os.environ.get("PYTHONPATH")]))
