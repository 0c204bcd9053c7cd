"""What every benchmark needs of the server it measures: the app under uvicorn as `turbokit serve`
runs it (one worker, no access log), in a data directory of its own, with nothing from the
caller's shell or `.env` leaking in; and CPU readings from /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent() -> None:
    """In a server child: SIGTERM when the benchmark dies without cleaning up (Linux)."""
    os.setsid()
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds every core has spent not idle since boot."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Server:
    """`python -m uvicorn backend.app:configure --factory` on a free port of 127.0.0.1."""

    def __init__(self, data_dir: Path, env: dict[str, str | None] | None = None) -> None:
        self.data_dir = data_dir
        self.extra_env = env or {}
        """Settings (and other variables) for this benchmark, over the clean defaults; None
        removes a variable."""
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.command = [
            sys.executable,
            "-m",
            "uvicorn",
            "backend.app:configure",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            "--no-access-log",  # as `turbokit serve` runs it
        ]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        from config.settings import Settings

        env = dict(os.environ)
        for name in Settings.model_fields:  # nothing from the caller's shell or .env leaks in
            env.pop(name.upper(), None)
        env.update(
            DATA_DIR=str(self.data_dir),
            LOG_LEVEL="WARNING",
            ENVIRONMENT="development",
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        )
        for name, value in self.extra_env.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command,
                cwd=self.data_dir,  # no .env here
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,  # no threads are running yet
            )

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds until /healthz answers; the log's tail if the server dies or never does."""
        assert self.proc is not None
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready after {timeout:.0f} s:\n{self.log()}")

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
