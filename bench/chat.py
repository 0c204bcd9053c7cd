"""Benchmark a chat turn through the service against the same call made straight with litellm.

    python bench/chat.py                 # 200 sequential turns, 200 concurrent chats, ~2 min
    python bench/chat.py --quick         # 60 turns, 50 concurrent chats, ~40 s
    python bench/chat.py --turns 500 --concurrency 200 --json out.json
    python bench/chat.py --wait-quiet 300  # on a shared machine: wait for others to leave the CPU
    python bench/chat.py --profile prof/ # also sample the server with py-spy (pip install py-spy)
    python bench/chat.py --statements 50 # also count the SQL of 50 turns on a second server
    python bench/chat.py --env THREAD_TITLES=false  # a setting for the server (repeatable)

The model is the scripted OpenAI-compatible provider of the test suite
(`tests/support/scripted_provider.py`), answering at once with its default reply (five words,
streamed a word at a time, then usage). It runs in its own process (`--provider process`, the
default) or in a thread of this process (`--provider thread`).

One server for everything: `python -m uvicorn backend.app:configure --factory` (one worker, the
embedded SQLite default in a fresh temporary DATA_DIR) pointed at the provider. Load comes from
this process (aiohttp, keep-alive, uvloop).

1. Added latency. N sequential turns both ways, interleaved: `POST /v1/chat` on a fresh thread id
   until `data: [DONE]` arrives, and `litellm.acompletion(..., stream=True)` to the provider with
   the very body the service sent (system prompt, user message, tools), consumed to the end. The
   added latency is p50(service) - p50(direct), and p99(service) - p99(direct).
2. Time to the first `text-delta` chunk through the service.
3. Concurrency. `--concurrency` new users (provisioned first), each starting one chat at the same
   moment: errors (non-200, no `[DONE]`, error chunks, wrong text), wall time, and the server's
   peak RSS (VmHWM, and VmRSS sampled every 20 ms during the burst).
4. With `--statements N`: SQL statements and transactions per turn, counted with SQLAlchemy's
   engine events over N more sequential turns on a second server (same command, started through
   a wrapper that installs the listeners; nothing from it is timed). They include what follows a
   turn's reply in its task, such as titling the new thread.

Every request goes to 127.0.0.1; request counts and each phase's time are bounded. The server and
the provider are stopped at the end, on errors and on Ctrl+C (and the server dies with this
process through PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import itertools
import json
import multiprocessing
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _server
from _server import ROOT, machine_busy_seconds, process_cpu_seconds

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before litellm is imported, anywhere

MODEL = "openai/gpt-4o-mini"
PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")
DIRECT_MODEL = "openrouter/" + MODEL  # what the service's adapter passes to litellm
ADDED_P50_TARGET_MS = 15.0
PROMPT = "Hello! What can you do for me?"
SEQUENTIAL_USERS = 10
"""Users the sequential turns take in turn. They are moved to the enterprise plan (600 chats a
minute, 200,000 credits a month), so that neither the per-user rate limit nor the credits stop a
benchmark; the per-turn work (limit check, reservation, settlement, release) is the same on every
plan."""
SEQUENTIAL_PLAN = "enterprise"
REQUEST_TIMEOUT = 60.0  # seconds, one chat
PHASE_TIMEOUT = 150.0  # seconds, the whole concurrent phase
SEQUENTIAL_CAP = 300.0  # seconds of measured sequential turns; fewer turns are reported after it


def _importable() -> None:
    """`tests.support` lives in the checkout, not in the installed package."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


# --------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Chat turn latency through TurboKit versus litellm direct, and concurrency."
    )
    parser.add_argument("--turns", type=int, help="measured sequential turns (default 200)")
    parser.add_argument(
        "--warmup", type=int, help="sequential warm-up turns of each kind (default 30)"
    )
    parser.add_argument(
        "--concurrency", type=int, help="chats started at once (default 200; 50 with --quick)"
    )
    parser.add_argument(
        "--provider",
        choices=("process", "thread"),
        default="process",
        help="run the scripted provider in its own process (default) or in a thread of the "
        "benchmark process",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 60 turns, 10 warm-up, 50 concurrent chats"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write results as JSON")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="after measuring, sample the server with py-spy over extra sequential turns and "
        "print where its CPU goes (raw stacks are written to DIR)",
    )
    parser.add_argument(
        "--profile-turns", type=int, default=400, help="turns sampled with --profile (400)"
    )
    parser.add_argument(
        "--statements",
        type=int,
        default=0,
        metavar="N",
        help="afterwards, count the SQL statements and transactions of N sequential turns on a "
        "second server with engine listeners (not timed)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each measured phase, wait up to this long for other processes to leave the "
        "CPU (on a shared machine)",
    )
    parser.add_argument(
        "--keep-data", action="store_true", help="keep the temporary DATA_DIRs (paths printed)"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the server, e.g. THREAD_TITLES=false (repeatable; default: none, "
        "the service as configured out of the box)",
    )
    args = parser.parse_args(argv)
    if args.turns is None:
        args.turns = 60 if args.quick else 200
    if args.warmup is None:
        args.warmup = 10 if args.quick else 30
    if args.concurrency is None:
        args.concurrency = 50 if args.quick else 200
    if not (1 <= args.turns <= 5000 and 0 <= args.warmup <= 500):
        parser.error("--turns must be 1..5000 and --warmup 0..500")
    if not 1 <= args.concurrency <= 1000:
        parser.error("--concurrency must be 1..1000")
    if not 0 <= args.statements <= 5000:
        parser.error("--statements must be 0..5000")
    if any("=" not in item for item in args.env):
        parser.error("--env takes NAME=VALUE")
    args.server_env = dict(item.split("=", 1) for item in args.env)
    return args


# --------------------------------------------------------------------------------------------
# The scripted provider, in its own process or in a thread of this one


def _provider_process(conn: Any) -> None:
    """Child process: serve the scripted provider and answer the parent's questions."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl+C and ends us
    _importable()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    from tests.support.scripted_provider import ScriptedProvider, TextReply

    with ScriptedProvider(default=TextReply()) as provider:
        conn.send(provider.base_url)
        while True:
            try:
                command = conn.recv()
            except EOFError:  # the parent died
                break
            if command == "stop":
                break
            conn.send(_provider_answer(provider, command))


def _provider_answer(provider: Any, command: str) -> Any:
    if command == "count":
        return len(provider.requests)
    if command == "last":
        return provider.requests[-1].body if provider.requests else None
    if command == "reset":
        provider.requests.clear()
        return None
    raise ValueError(command)


class Provider:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.base_url = ""
        self.pid: int | None = None
        self._process: Any = None
        self._conn: Any = None
        self._inline: Any = None

    def start(self) -> str:
        if self.mode == "thread":
            _importable()
            from tests.support.scripted_provider import ScriptedProvider, TextReply

            self._inline = ScriptedProvider(default=TextReply())
            self.base_url = self._inline.__enter__().base_url
            return self.base_url
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_provider_process, args=(child,), name="scripted-provider", daemon=True
        )
        self._process.start()
        child.close()
        if not self._conn.poll(30):
            raise RuntimeError("scripted provider did not start within 30 s")
        try:
            self.base_url = self._conn.recv()
        except EOFError:
            raise RuntimeError("scripted provider exited while starting") from None
        self.pid = self._process.pid
        return self.base_url

    def ask(self, command: str) -> Any:
        if self._inline is not None:
            return _provider_answer(self._inline, command)
        self._conn.send(command)
        return self._conn.recv()

    def stop(self) -> None:
        if self._inline is not None:
            self._inline.__exit__(None, None, None)
            self._inline = None
        if self._process is not None:
            with contextlib.suppress(OSError, BrokenPipeError):
                self._conn.send("stop")
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(5)
            self._process = None


# --------------------------------------------------------------------------------------------
# The server


COUNTING_SERVER = r"""
import json, os, signal, sys
from collections import Counter
from sqlalchemy import event
from sqlalchemy.engine import Engine

counts = {"begin": 0, "commit": 0, "statements": Counter()}


@event.listens_for(Engine, "begin")
def _begin(_conn):
    counts["begin"] += 1


@event.listens_for(Engine, "commit")
def _commit(_conn):
    counts["commit"] += 1


@event.listens_for(Engine, "before_cursor_execute")
def _statement(_conn, _cursor, statement, *_rest):
    words = " ".join(statement.split())
    if not words.upper().startswith("BEGIN"):
        counts["statements"][words[:90]] += 1


def _dump(*_args):
    with open(os.environ["BENCH_SQL_OUT"], "w") as out:
        json.dump({**counts, "statements": dict(counts["statements"])}, out)
    counts.update(begin=0, commit=0, statements=Counter())


signal.signal(signal.SIGUSR1, _dump)
from uvicorn.main import main

sys.argv = ["uvicorn", *sys.argv[1:]]
main()
"""
"""The server's command with SQLAlchemy engine listeners installed first; SIGUSR1 writes what they
counted since the last signal to $BENCH_SQL_OUT and starts over."""


class Server(_server.Server):
    """The app with the scripted provider as its OpenRouter; `counting` installs the SQL
    counters of COUNTING_SERVER first."""

    def __init__(
        self,
        data_dir: Path,
        provider_url: str,
        *,
        counting: bool = False,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.sql_out = data_dir / "sql.json" if counting else None
        super().__init__(
            data_dir,
            {
                "OPENROUTER_API_KEY": "bench",
                "OPENROUTER_BASE_URL": provider_url,
                "OPENROUTER_MODEL": MODEL,
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "NO_PROXY": "127.0.0.1,localhost",
                "BENCH_SQL_OUT": str(self.sql_out or ""),
                **dict.fromkeys(PROXIES),  # the provider is on loopback
                **(settings or {}),  # `--env`, after the benchmark's own
            },
        )
        if counting:
            self.command[1:3] = ["-c", COUNTING_SERVER]

    def memory_kib(self, name: str) -> int:
        """VmRSS, VmHWM... of the server process, in KiB."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
        return 0


def tokens_for(data_dir: Path, subjects: list[str]) -> dict[str, str]:
    """Development tokens, signed before the server starts (it then loads the same key).

    `issue_dev_token` loads the key file on every call (~80 ms of key checks here), so the key is
    loaded once and handed to it for the whole batch."""
    from backend import auth
    from config.settings import Settings

    settings = Settings(_env_file=None, data_dir=data_dir, environment="development")
    key = auth.load_dev_key(settings)  # creates it on first use
    load = auth.load_dev_key
    auth.load_dev_key = lambda _settings: key  # type: ignore[assignment]
    try:
        return {subject: auth.issue_dev_token(settings, subject) for subject in subjects}
    finally:
        auth.load_dev_key = load


# --------------------------------------------------------------------------------------------
# One chat turn, through the service and directly


@dataclass
class Turn:
    total_ms: float = float("nan")
    first_text_ms: float = float("nan")
    error: str | None = None


def chat_payload(thread_id: str) -> bytes:
    _importable()
    from tests.support.ui_stream import chat_body

    return json.dumps(chat_body(thread_id, PROMPT)).encode()


async def service_turn(session: Any, token: str, expected_text: str) -> Turn:
    """POST /v1/chat on a fresh thread and read the UI message stream to `data: [DONE]`."""
    thread_id = f"bench-{uuid.uuid4().hex}"
    body = chat_payload(thread_id)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    turn = Turn()
    text: list[str] = []
    done = False
    started = time.perf_counter()
    try:
        async with session.post("/v1/chat", data=body, headers=headers) as response:
            if response.status != 200:
                turn.error = f"HTTP {response.status}"
                await response.read()
                return turn
            async for raw in response.content:
                if not raw.startswith(b"data: "):
                    continue
                data = raw[6:].strip()
                if data == b"[DONE]":
                    turn.total_ms = (time.perf_counter() - started) * 1000
                    done = True
                    continue  # read to the end, so the connection goes back to the pool
                if done:
                    turn.error = "data after [DONE]"
                    continue
                chunk = json.loads(data)
                kind = chunk.get("type")
                if kind == "text-delta":
                    if not text:
                        turn.first_text_ms = (time.perf_counter() - started) * 1000
                    text.append(chunk["delta"])
                elif kind == "error":
                    turn.error = "error chunk"
    except Exception as exc:  # aiohttp.ClientError, timeouts, a malformed chunk
        turn.error = type(exc).__name__
        return turn
    if turn.error is None and not done:
        turn.error = "no [DONE]"
    elif turn.error is None and "".join(text) != expected_text:
        turn.error = "wrong text"
    return turn


async def direct_turn(litellm: Any, base_url: str, request_body: dict[str, Any]) -> Turn:
    """The same model call without the service: litellm straight to the provider."""
    kwargs: dict[str, Any] = {"messages": request_body["messages"]}
    if request_body.get("tools"):
        kwargs["tools"] = request_body["tools"]
    turn = Turn()
    started = time.perf_counter()
    stream = await litellm.acompletion(
        model=DIRECT_MODEL,
        api_base=base_url,
        api_key="x",
        stream=True,
        stream_options={"include_usage": True},
        **kwargs,
    )
    async for chunk in stream:
        if turn.first_text_ms != turn.first_text_ms and chunk.choices:  # still NaN
            if chunk.choices[0].delta.content:
                turn.first_text_ms = (time.perf_counter() - started) * 1000
    turn.total_ms = (time.perf_counter() - started) * 1000
    return turn


def client_session(base_url: str, limit: int) -> Any:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT, sock_read=30)
    return aiohttp.ClientSession(base_url, connector=connector, timeout=timeout)


async def open_connections(session: Any, count: int) -> None:
    """Open `count` keep-alive connections before the clock starts."""

    async def one() -> None:
        async with session.get("/healthz") as response:
            await response.read()

    await asyncio.gather(*(one() for _ in range(count)))


def import_litellm_in_background() -> None:
    """Start importing litellm (seconds) in a thread; `import litellm` later waits for it."""
    import aiohttp  # noqa: F401 - imported here first, so the two threads share no import

    with contextlib.suppress(ImportError):
        import uvloop  # noqa: F401

    threading.Thread(
        target=importlib.import_module, args=("litellm",), name="import-litellm", daemon=True
    ).start()


def run_async(main: Callable[[], Awaitable[Any]]) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.run(main())  # type: ignore[arg-type]
    return uvloop.run(main())  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# CPU accounting: the server's own CPU, and what other processes took meanwhile


def wait_for_quiet(patience: float, mine: list[int]) -> float:
    """Cores that other processes use now (sampled over 1 s); with `patience`, wait up to that
    many seconds for them to drop under 20% of a core. `mine` are this benchmark's processes."""
    deadline = time.monotonic() + patience
    while True:
        before = machine_busy_seconds(), sum(process_cpu_seconds(pid) for pid in mine)
        time.sleep(1.0)
        after = machine_busy_seconds(), sum(process_cpu_seconds(pid) for pid in mine)
        others = max(0.0, (after[0] - before[0]) - (after[1] - before[1]))
        if others < 0.2 or time.monotonic() >= deadline:
            if others >= 0.2:
                print(f"  (other processes use {100 * others:.0f}% of a core)", flush=True)
            return others
        print(f"  waiting for a quiet machine: others use {100 * others:.0f}% of a core")
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))


@dataclass
class CpuWindow:
    """CPU seconds of the server, of this benchmark (client + maybe provider thread), of the
    provider process, and of everything else on the machine, over one phase."""

    pids: dict[str, int]
    wall: float = 0.0
    used: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def measure(self) -> Iterator[CpuWindow]:
        before = {name: process_cpu_seconds(pid) for name, pid in self.pids.items()}
        machine = machine_busy_seconds()
        started = time.perf_counter()
        yield self
        self.wall = time.perf_counter() - started
        self.used = {
            name: process_cpu_seconds(pid) - before[name] for name, pid in self.pids.items()
        }
        self.used["others"] = max(0.0, machine_busy_seconds() - machine - sum(self.used.values()))

    def cores(self, name: str) -> float:
        return self.used.get(name, 0.0) / self.wall if self.wall else 0.0


# --------------------------------------------------------------------------------------------
# Phase 1 and 2: sequential turns


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    clean = sorted(v for v in values if v == v)
    if not clean:
        return float("nan")
    rank = max(1, min(len(clean), round(pct / 100 * len(clean) + 0.5)))
    return clean[rank - 1]


@dataclass
class Sequential:
    service: list[Turn]
    direct: list[Turn]
    cpu: dict[str, float]
    cpu_cores: dict[str, float]
    wall: float
    provider_requests: int
    request_body: dict[str, Any]

    def stat(self, kind: str, attr: str, pct: float) -> float:
        turns = self.service if kind == "service" else self.direct
        return percentile([getattr(t, attr) for t in turns if t.error is None], pct)

    @property
    def errors(self) -> Counter[str]:
        return Counter(t.error for t in self.service if t.error)


async def sequential_phase(
    server: Server, provider: Provider, tokens: dict[str, str], args: argparse.Namespace
) -> Sequential:
    import litellm

    from tests.support.scripted_provider import DEFAULT_TEXT

    litellm.suppress_debug_info = True
    async with client_session(server.base_url, 4) as session:
        await open_connections(session, 1)
        await provision(session, list(tokens.values()))
        set_plan(server.data_dir / "turbokit.db", list(tokens), SEQUENTIAL_PLAN)
        await check_plan(session, list(tokens.values()), SEQUENTIAL_PLAN)
        users = itertools.cycle(tokens.values())
        token = next(users)
        # One service turn first: its request to the provider is the body the direct call sends.
        first = await service_turn(session, token, DEFAULT_TEXT)
        if first.error:
            raise RuntimeError(f"first chat turn failed: {first.error}\n{server.log()}")
        body = provider.ask("last")
        for _ in range(args.warmup):
            await service_turn(session, next(users), DEFAULT_TEXT)
            await direct_turn(litellm, provider.base_url, body)
        provider.ask("reset")
        service: list[Turn] = []
        direct: list[Turn] = []
        pids = {"server": server.pid, "bench": os.getpid()}
        if provider.pid is not None:
            pids["provider"] = provider.pid
        window = CpuWindow(pids)
        deadline = time.perf_counter() + SEQUENTIAL_CAP
        with window.measure():
            for index in range(args.turns):
                if time.perf_counter() > deadline:
                    print(f"  stopped after {index} turns ({SEQUENTIAL_CAP:.0f} s cap)")
                    break
                # Alternate the order so that neither kind always follows the other.
                if index % 2 == 0:
                    service.append(await service_turn(session, next(users), DEFAULT_TEXT))
                    direct.append(await direct_turn(litellm, provider.base_url, body))
                else:
                    direct.append(await direct_turn(litellm, provider.base_url, body))
                    service.append(await service_turn(session, next(users), DEFAULT_TEXT))
    return Sequential(
        service=service,
        direct=direct,
        cpu=window.used,
        cpu_cores={name: window.cores(name) for name in window.used},
        wall=window.wall,
        provider_requests=provider.ask("count"),
        request_body=body,
    )


# --------------------------------------------------------------------------------------------
# Phase 3: concurrent chats on a fresh server


@dataclass
class Concurrent:
    chats: int
    turns: list[Turn]
    wall: float
    rss_before_mib: float
    rss_peak_sampled_mib: float
    hwm_mib: float
    server_cpu: float
    others_cpu_cores: float
    runs_by_status: dict[str, int]
    assistant_messages: int

    @property
    def errors(self) -> Counter[str]:
        return Counter(t.error for t in self.turns if t.error)


async def concurrent_phase(server: Server, tokens: dict[str, str], chats: int) -> Concurrent:
    """`chats` new users, each starting one chat at the same moment (after the sequential phase
    warmed the server up)."""
    from tests.support.scripted_provider import DEFAULT_TEXT

    async with client_session(server.base_url, chats) as session:
        await open_connections(session, 4)
        await provision(session, list(tokens.values()))
        await open_connections(session, chats)
        rss_before = server.memory_kib("VmRSS")
        peak = rss_before
        finished = asyncio.Event()

        async def sample_rss() -> None:
            nonlocal peak
            while not finished.is_set():
                peak = max(peak, server.memory_kib("VmRSS"))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(finished.wait(), 0.02)

        sampler = asyncio.create_task(sample_rss())
        cpu_before = server.cpu_seconds()
        machine_before = machine_busy_seconds()
        bench_before = process_cpu_seconds(os.getpid())
        started = time.perf_counter()
        try:
            turns = await asyncio.wait_for(
                asyncio.gather(
                    *(service_turn(session, token, DEFAULT_TEXT) for token in tokens.values())
                ),
                PHASE_TIMEOUT,
            )
        finally:
            wall = time.perf_counter() - started
            finished.set()
            await sampler
        server_cpu = server.cpu_seconds() - cpu_before
        bench_cpu = process_cpu_seconds(os.getpid()) - bench_before
        others = machine_busy_seconds() - machine_before - server_cpu - bench_cpu
    runs, messages = _database_outcome(server.data_dir / "turbokit.db")
    return Concurrent(
        chats=chats,
        turns=list(turns),
        wall=wall,
        rss_before_mib=rss_before / 1024,
        rss_peak_sampled_mib=peak / 1024,
        hwm_mib=server.memory_kib("VmHWM") / 1024,
        server_cpu=server_cpu,
        others_cpu_cores=max(0.0, others) / wall if wall else 0.0,
        runs_by_status=runs,
        assistant_messages=messages,
    )


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def provision(session: Any, tokens: list[str]) -> None:
    """Create the users (their first authenticated request does), at most 4 at a time: a GET that
    provisions holds a read connection while it opens a write one, so pool_size (10) such
    requests at once wait on each other until the pool times out (30 s, then 500s)."""
    gate = asyncio.Semaphore(4)

    async def one(token: str) -> None:
        async with gate, session.get("/v1/agents", headers=_auth(token)) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"provisioning a user: HTTP {response.status}")

    await asyncio.gather(*(one(token) for token in tokens))


def set_plan(database: Path, subjects: list[str], plan: str) -> None:
    """Move users to `plan` in the server's database (the server reads the row each request)."""
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as conn, conn:
        marks = ",".join("?" * len(subjects))
        conn.execute(f"UPDATE users SET plan = ? WHERE clerk_id IN ({marks})", [plan, *subjects])


async def check_plan(session: Any, tokens: list[str], plan: str) -> None:
    for token in tokens:
        async with session.get("/v1/billing", headers=_auth(token)) as response:
            body = await response.json()
            if response.status != 200 or body.get("plan") != plan:
                raise RuntimeError(f"bench user not on the {plan} plan: {response.status} {body}")


def _database_outcome(path: Path) -> tuple[dict[str, int], int]:
    """What the server saved: runs by status, and assistant messages (read-only)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        runs = dict(conn.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())
        (messages,) = conn.execute(
            "SELECT count(*) FROM messages WHERE role = 'assistant'"
        ).fetchone()
    return {str(k): int(v) for k, v in runs.items()}, int(messages)


# --------------------------------------------------------------------------------------------
# Optional: where the server's CPU goes (py-spy)

_LAYERS = [
    ("SQLAlchemy", ("(sqlalchemy/", "(<sqlalchemy")),
    ("aiosqlite", ("(aiosqlite/",)),
    ("litellm", ("(litellm/", "(streaming_handler.py", "(litellm_logging.py")),
    ("openai SDK", ("(openai/",)),
    ("httpx / httpcore / aiohttp (outbound)", ("(httpx/", "(httpcore/", "(aiohttp/")),
    ("pydantic", ("(pydantic/", "(pydantic_core/")),
    ("FastAPI / Starlette", ("(fastapi/", "(starlette/")),
    ("uvicorn / asyncio / anyio / threads", ("(uvicorn/", "(asyncio/", "(anyio/", "(threading.py",
     "(concurrent/", "(queue.py")),
    ("JWT / cryptography", ("(jwt/", "(cryptography/")),
    ("tiktoken", ("(tiktoken",)),
    ("logging", ("(logging/",)),
    ("json", ("(json/",)),
    ("TurboKit", ("(backend/", "(agent_core/", "(threads/", "(tools/", "(config/")),
]  # fmt: skip
_REPO = ("(backend/", "(agent_core/", "(threads/", "(tools/", "(config/")


def _layer(frame: str) -> str | None:
    for name, needles in _LAYERS:
        if any(needle in frame for needle in needles):
            return name
    return None


def _function(frame: str) -> str:
    """`name (path:line)` without the line: one entry per function."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def summarise_profile(path: Path, turns: int, rate: int) -> list[str]:
    """Where the GIL-holding thread was, per layer (innermost frame of a known layer) and per
    TurboKit function (inclusive), in ms per turn."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[next((lay for f in reversed(frames) if (lay := _layer(f))), "other")] += count
        for function in {_function(f) for f in frames if f.endswith(")") and _layer(f)}:
            if any(repo in function for repo in _REPO) or "(litellm/main.py)" in function:
                inclusive[function] += count
    if not total:
        return ["(no samples)"]
    per_turn = 1000 / rate / turns
    lines = [f"{total} samples at {rate}/s over {turns} turns = {total * per_turn:.1f} ms/turn"]
    lines.append("by layer (innermost frame of a known layer):")
    for name, count in own.most_common():
        lines.append(f"  {100 * count / total:5.1f}%  {count * per_turn:6.2f} ms/turn  {name}")
    lines.append("largest inclusive (TurboKit functions, litellm entry points):")
    for name, count in inclusive.most_common(25):
        lines.append(f"  {100 * count / total:5.1f}%  {count * per_turn:6.2f} ms/turn  {name}")
    return lines


async def profiled_turns(server: Server, tokens: list[str], turns: int) -> None:
    from tests.support.scripted_provider import DEFAULT_TEXT

    users = itertools.cycle(tokens)
    async with client_session(server.base_url, 2) as session:
        for _ in range(turns):
            turn = await service_turn(session, next(users), DEFAULT_TEXT)
            if turn.error:
                raise RuntimeError(f"profiled turn failed: {turn.error}")


def profile_server(server: Server, tokens: list[str], turns: int, out_dir: Path) -> list[str]:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        return ["py-spy not found: pip install py-spy"]
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / "chat-server.collapsed"
    rate = 500
    spy = subprocess.Popen(
        [
            *(py_spy, "record", "--pid", str(server.pid), "--rate", str(rate), "--gil"),
            *("--format", "raw", "--output", str(raw), "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(1.0)  # let py-spy attach
        run_async(lambda: profiled_turns(server, tokens, turns))
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            _, err = spy.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate()
    if not raw.exists():
        return [f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}"]
    return summarise_profile(raw, turns, rate)


# --------------------------------------------------------------------------------------------
# Optional: SQL statements per turn (a second server, with engine listeners)


async def counted_turns(server: Server, tokens: dict[str, str], turns: int) -> None:
    """`turns` sequential turns (after 5 more whose counts are dropped) on the counting server."""
    from tests.support.scripted_provider import DEFAULT_TEXT

    async with client_session(server.base_url, 2) as session:
        await provision(session, list(tokens.values()))
        set_plan(server.data_dir / "turbokit.db", list(tokens), SEQUENTIAL_PLAN)
        users = itertools.cycle(tokens.values())
        for index in range(5 + turns):
            if index == 5:
                await asyncio.sleep(0.5)  # the warm-up's background work ends
                os.kill(server.pid, signal.SIGUSR1)  # and its counts are dropped
                await asyncio.sleep(0.2)
            turn = await service_turn(session, next(users), DEFAULT_TEXT)
            if turn.error:
                raise RuntimeError(f"counted turn failed: {turn.error}")
        await asyncio.sleep(1.0)  # what follows the last reply (its thread's title) ends too


def read_counts(server: Server) -> dict[str, Any]:
    """Ask the counting server for what it counted since the last signal."""
    assert server.sql_out is not None
    server.sql_out.unlink(missing_ok=True)
    os.kill(server.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not server.sql_out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)  # written whole by then: one small json.dump
    counted: dict[str, Any] = json.loads(server.sql_out.read_text())
    return counted


def summarise_statements(counted: dict[str, Any], turns: int) -> list[str]:
    statements: dict[str, int] = counted["statements"]
    total = sum(statements.values())
    lines = [
        f"{total / turns:.1f} statements, {counted['begin'] / turns:.1f} transactions "
        f"({counted['commit'] / turns:.1f} committed) per turn, over {turns} turns",
    ]
    for text, count in sorted(statements.items(), key=lambda item: -item[1])[:30]:
        lines.append(f"  {count / turns:5.2f}  {text}")
    return lines


def count_statements(
    base_url: str, subjects: list[str], turns: int, data: Path, settings: dict[str, str]
) -> list[str]:
    tokens = tokens_for(data, subjects)  # this server's DATA_DIR has a key of its own
    server = Server(data, base_url, counting=True, settings=settings)
    try:
        server.start()
        server.wait_ready()
        run_async(lambda: counted_turns(server, tokens, turns))
        counted = read_counts(server)
    finally:
        server.stop()
    return summarise_statements(counted, turns)


# --------------------------------------------------------------------------------------------
# Main


def machine_line() -> str:
    versions = []
    for module in ("uvicorn", "uvloop", "fastapi", "sqlalchemy", "aiosqlite", "litellm", "aiohttp"):
        try:
            from importlib.metadata import version

            versions.append(f"{module} {version(module)}")
        except Exception:
            versions.append(f"{module} -")
    cpu = platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"nproc {os.cpu_count()} ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}; "
        + ", ".join(versions)
    )


def code_line() -> str:
    """The commit measured, and whether tracked files differ from it."""

    def git(*words: str) -> str:
        try:
            done = subprocess.run(
                ["git", "-C", str(ROOT), *words], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("diff", "--name-only", "HEAD").split()
    return f"{head}" + (f" + uncommitted changes to {', '.join(changed)}" if changed else "")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    _importable()
    command = "python bench/chat.py " + " ".join(sys.argv[1:] if argv is None else argv)
    began = time.perf_counter()
    print(f"command: {command.strip()}")
    print(f"machine: {machine_line()}")
    print(f"code: {code_line()}", flush=True)
    provider = Provider(args.provider)
    temp_dirs: list[Path] = []
    servers: list[Server] = []

    def progress(text: str) -> None:
        print(f"[{time.perf_counter() - began:5.1f} s] {text}")

    def new_dir(label: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"turbokit-chat-bench-{label}-"))
        temp_dirs.append(path)
        return path

    previous_sigterm = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        base_url = provider.start()
        where = f"own process, pid {provider.pid}" if provider.pid else "thread of the benchmark"
        progress(f"scripted provider: {base_url} ({where})")

        # One server, one fresh DATA_DIR, for every phase.
        data_dir = new_dir("data")
        sequential_users = [f"bench-seq-{i:02d}" for i in range(SEQUENTIAL_USERS)]
        concurrent_users = [f"bench-user-{i:04d}" for i in range(args.concurrency)]
        tokens = tokens_for(data_dir, sequential_users + concurrent_users)
        server = Server(data_dir, base_url, settings=args.server_env)
        servers.append(server)
        server.start()
        import_litellm_in_background()  # ~7 s here: overlaps the server's start-up
        ready = server.wait_ready()
        progress(f"server ready in {ready:.1f} s (pid {server.pid}, DATA_DIR {data_dir})")
        mine = [os.getpid(), server.pid] + ([provider.pid] if provider.pid else [])
        wait_for_quiet(args.wait_quiet, mine)

        # Phases 1 and 2.
        progress(f"sequential: {args.warmup} warm-up + {args.turns} measured turns of each kind")
        seq_tokens = {subject: tokens[subject] for subject in sequential_users}
        seq: Sequential = run_async(lambda: sequential_phase(server, provider, seq_tokens, args))
        profile_lines: list[str] = []
        if args.profile:
            progress(f"profiling {args.profile_turns} more service turns with py-spy")
            profile_lines = profile_server(
                server, list(seq_tokens.values()), args.profile_turns, args.profile
            )

        # Phase 3.
        wait_for_quiet(args.wait_quiet, mine)
        progress(f"concurrent: provisioning {args.concurrency} users, then their chats at once")
        conc_tokens = {subject: tokens[subject] for subject in concurrent_users}
        conc: Concurrent = run_async(
            lambda: concurrent_phase(server, conc_tokens, args.concurrency)
        )
        progress("stopping the server")
        server.stop()
        if args.statements:
            progress(f"counting the SQL of {args.statements} turns on a second server")
            profile_lines += ["", f"SQL ({args.statements} sequential service turns):"]
            sql_dir = new_dir("sql")
            profile_lines += count_statements(
                base_url, sequential_users, args.statements, sql_dir, args.server_env
            )
        report(args, command, seq, conc, profile_lines, time.perf_counter() - began)
        if args.json:
            args.json.write_text(json.dumps(results_json(args, command, seq, conc), indent=2))
        failed = seq.errors or conc.errors
        return 1 if failed else 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        for server in servers:
            server.stop()
        provider.stop()
        for path in temp_dirs:
            if args.keep_data:
                print(f"kept {path}")
            else:
                shutil.rmtree(path, ignore_errors=True)


def report(
    args: argparse.Namespace,
    command: str,
    seq: Sequential,
    conc: Concurrent,
    profile_lines: list[str],
    elapsed: float,
) -> None:
    n = len(seq.service)
    s50, s99 = seq.stat("service", "total_ms", 50), seq.stat("service", "total_ms", 99)
    d50, d99 = seq.stat("direct", "total_ms", 50), seq.stat("direct", "total_ms", 99)
    t50, t99 = seq.stat("service", "first_text_ms", 50), seq.stat("service", "first_text_ms", 99)
    dt50, dt99 = seq.stat("direct", "first_text_ms", 50), seq.stat("direct", "first_text_ms", 99)
    added50, added99 = s50 - d50, s99 - d99
    server_ms = 1000 * seq.cpu.get("server", 0.0) / n
    width = 100
    print("=" * width)
    print(f"chat benchmark: 1 uvicorn worker, embedded SQLite, scripted provider ({args.provider})")
    if args.server_env:
        print(f"server settings beyond the defaults: {' '.join(args.env)}")
    print(
        f"sequential turns: {n} of each kind after {args.warmup} warm-up, interleaved; service "
        f"turns from {SEQUENTIAL_USERS} {SEQUENTIAL_PLAN}-plan users in turn, each on a new thread"
    )
    print(f"  {'':<58}{'p50 ms':>10}{'p99 ms':>10}")
    rows = [
        ("service: POST /v1/chat -> data: [DONE]", s50, s99),
        ("direct: litellm.acompletion(stream=True) -> end of stream", d50, d99),
        ("added latency: p50(service)-p50(direct), p99 likewise", added50, added99),
        ("service: time to first text-delta", t50, t99),
        ("direct: time to first content chunk", dt50, dt99),
    ]
    for label, p50, p99 in rows:
        print(f"  {label:<58}{p50:>10.2f}{p99:>10.2f}")
    cores = ", ".join(f"{name} {100 * c:.0f}%" for name, c in seq.cpu_cores.items())
    print(
        f"  server CPU per service turn: {server_ms:.2f} ms; CPU over the phase ({seq.wall:.1f} s):"
        f" {cores}"
    )
    print(
        f"  provider requests during the measured turns: {seq.provider_requests} (2 per pair, "
        "3 when the service titles the new thread)"
    )
    print(f"  errors: {sum(seq.errors.values())} {dict(seq.errors) or ''}")
    print()
    ok = [t for t in conc.turns if t.error is None]
    print(f"concurrent: {conc.chats} chats started at once (one user each, fresh threads)")
    print(
        f"  wall {conc.wall:.2f} s ({len(ok) / conc.wall:.0f} chats/s); per chat p50 "
        f"{percentile([t.total_ms for t in ok], 50):.0f} ms, p99 "
        f"{percentile([t.total_ms for t in ok], 99):.0f} ms, first text p50 "
        f"{percentile([t.first_text_ms for t in ok], 50):.0f} ms, p99 "
        f"{percentile([t.first_text_ms for t in ok], 99):.0f} ms"
    )
    print(
        f"  errors: {sum(conc.errors.values())} {dict(conc.errors) or ''} (non-200, no [DONE], "
        f"error chunks, wrong text, timeouts); saved runs {conc.runs_by_status}, "
        f"assistant messages {conc.assistant_messages}"
    )
    print(
        f"  server RSS: {conc.rss_before_mib:.0f} MiB before, sampled peak "
        f"{conc.rss_peak_sampled_mib:.0f} MiB, VmHWM {conc.hwm_mib:.0f} MiB; server CPU "
        f"{conc.server_cpu:.2f} s ({1000 * conc.server_cpu / conc.chats:.1f} ms/chat); "
        f"other processes {100 * conc.others_cpu_cores:.0f}% of a core"
    )
    if profile_lines:
        print()
        if args.profile:
            print(f"server profile (py-spy, {args.profile_turns} sequential service turns):")
        for line in profile_lines:
            print(f"  {line}" if line else "")
    print()
    print("targets:")
    errors = sum(seq.errors.values()) + sum(conc.errors.values())
    verdicts = [
        (
            added50 < ADDED_P50_TARGET_MS,
            f"added p50 < {ADDED_P50_TARGET_MS:.0f} ms: {added50:.2f} ms "
            f"(p50 service {s50:.2f} - p50 direct {d50:.2f})",
        ),
        (errors == 0, f"zero errors (sequential and {conc.chats} concurrent): {errors}"),
    ]
    for passed, text in verdicts:
        print(f"  {'PASS' if passed else 'MISS'}  {text}")
    if seq.cpu_cores.get("others", 0.0) > 0.2 or conc.others_cpu_cores > 0.2:
        print("  (other processes used CPU meanwhile: figures are pessimistic on a busy machine)")
    print("=" * width)
    print(f"command: {command}")
    print(f"total time {elapsed:.0f} s")


def results_json(
    args: argparse.Namespace, command: str, seq: Sequential, conc: Concurrent
) -> dict[str, Any]:
    def stats(turns: list[Turn]) -> dict[str, float]:
        good = [t for t in turns if t.error is None]
        out: dict[str, float] = {}
        for attr in ("total_ms", "first_text_ms"):
            for pct in (50, 90, 99):
                out[f"{attr}_p{pct}"] = percentile([getattr(t, attr) for t in good], pct)
        return out

    errors: dict[str, dict[str, int]] = defaultdict(dict)
    errors["sequential"] = dict(seq.errors)
    errors["concurrent"] = dict(conc.errors)
    return {
        "command": command,
        "machine": machine_line(),
        "code": code_line(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "sequential": {
            "service": stats(seq.service),
            "direct": stats(seq.direct),
            "added_p50_ms": seq.stat("service", "total_ms", 50)
            - seq.stat("direct", "total_ms", 50),
            "added_p99_ms": seq.stat("service", "total_ms", 99)
            - seq.stat("direct", "total_ms", 99),
            "cpu_seconds": seq.cpu,
            "wall_seconds": seq.wall,
        },
        "concurrent": {
            "chats": conc.chats,
            "wall_seconds": conc.wall,
            "stats": stats(conc.turns),
            "rss_before_mib": conc.rss_before_mib,
            "rss_peak_sampled_mib": conc.rss_peak_sampled_mib,
            "vmhwm_mib": conc.hwm_mib,
            "server_cpu_seconds": conc.server_cpu,
            "runs_by_status": conc.runs_by_status,
        },
        "errors": errors,
    }


if __name__ == "__main__":
    sys.exit(main())
