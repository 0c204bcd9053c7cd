"""Benchmark the HTTP API as a user meets it: one uvicorn worker on the embedded SQLite default.

    python bench/api.py                  # full run over 100,000 projects, ~2 min on 2 cores
    python bench/api.py --quick          # smoke run over 10,000 projects, ~20 s
    python bench/api.py --requests 4000 --concurrency 32 --search-rows 100000   # the defaults

What it does, in order:

1. Makes a temporary DATA_DIR and seeds its SQLite file directly: the app's own migrations, then
   the users and projects tables (the models' tables) in one transaction; the FTS5 triggers that
   the migration installed fill the search index. Nothing is seeded through HTTP.
2. Starts `python -m uvicorn backend.app:configure --factory` (one worker, ENVIRONMENT=development)
   as a subprocess on a free port of 127.0.0.1 and waits for /healthz.
3. Signs development tokens with `backend.auth.issue_dev_token`.
4. Drives load from separate client processes (aiohttp keep-alive clients on uvloop, a fixed number
   of requests in flight), warming up first, repeating each measurement and reporting medians.
   Every request goes to 127.0.0.1; every run is bounded in request count and wall-clock time.
5. Prints one table, the search queries and what they match, and PASS/MISS per target; kills the
   server (also on Ctrl+C or an error) and removes the temporary directory.

Server CPU is read from /proc for the measured window, so "CPU ms/req" is the server's own cost
of a request whatever the client does. `--profile DIR` samples the server with py-spy during the
first measured run of each endpoint (pip install py-spy) and prints where its time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import multiprocessing
import os
import platform
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from _server import ROOT, Server, machine_busy_seconds

READS_TARGET_RPS = 1000.0
SEARCH_P50_TARGET_MS = 20.0

LIST_USER = "bench-alice"
SEARCH_USER = "bench-search"
LIST_USER_PROJECTS = 200
VOCABULARY_SIZE = 4000
ZIPF_EXPONENT = 1.0
SEED = 20240601


# --------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the TurboKit API on one uvicorn worker with embedded SQLite.",
    )
    parser.add_argument(
        "--requests", type=int, help="requests per measured run of each endpoint (default 4000)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=32, help="requests in flight (default 32)"
    )
    parser.add_argument(
        "--search-rows", type=int, help="projects in the search corpus (default 100000)"
    )
    parser.add_argument(
        "--repeats", type=int, help="measured runs per endpoint; medians reported (default 3)"
    )
    parser.add_argument(
        "--search-samples",
        type=int,
        help="one-at-a-time requests per search query (default 40; 10 with --quick)",
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=1,
        help="client processes sharing the concurrency (default 1: on 2 cores a second client "
        "process only takes CPU from the server)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        help="wall-clock cap of one measured run (default 6; 1.5 with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run (~20 s): 10k rows, short runs, no repeats"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample the server with py-spy during each endpoint's first measured run, write "
        "collapsed stacks to DIR and print the top frames",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to this long for other processes to leave the CPU before measuring",
    )
    parser.add_argument(
        "--keep-data", action="store_true", help="keep the temporary DATA_DIR (path is printed)"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "requests": 1000 if quick else 4000,
        "search_rows": 10_000 if quick else 100_000,
        "repeats": 1 if quick else 3,
        "search_samples": 10 if quick else 40,
        "max_seconds": 1.5 if quick else 6.0,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.requests < 1 or args.concurrency < 1 or args.repeats < 1 or args.clients < 1:
        parser.error("--requests, --concurrency, --repeats and --clients must be at least 1")
    if args.clients > args.concurrency:
        parser.error("--clients cannot exceed --concurrency")
    if args.search_rows < 1000:
        parser.error("--search-rows must be at least 1000")
    return args


# --------------------------------------------------------------------------------------------
# Synthetic but realistic text: a vocabulary of pronounceable words, used with Zipf frequencies
# (as words are in natural text), so a few words are very common and most are rare.

_ONSETS = (
    "b bl br c ch cl cr d dr f fl fr g gl gr h j k l m n p pl pr qu r s sc sh sk sl sm sn sp st "
    "str t th tr v w z"
).split()
_NUCLEI = "a e i o u a e i o u ai ea ee io oa ou".split()
_CODAS = ["", "", "", "n", "r", "l", "m", "nd", "rk", "st", "x", "lt", "nt", "v"]


def make_vocabulary(rng: random.Random, size: int) -> list[str]:
    """`size` distinct lowercase words of 2-4 syllables, in random (frequency rank) order."""
    seen: set[str] = set()
    words: list[str] = []
    while len(words) < size:
        syllables = rng.choice((2, 2, 2, 3, 3, 4))
        word = "".join(rng.choice(_ONSETS) + rng.choice(_NUCLEI) for _ in range(syllables))
        word += rng.choice(_CODAS)
        if 4 <= len(word) <= 12 and word not in seen:
            seen.add(word)
            words.append(word)
    return words


class TextGenerator:
    """Project names (2-5 words) and descriptions (none, or 8-40 words) drawn from the vocabulary
    with Zipf(s) frequencies: the word of rank r is used in proportion to 1/r**s."""

    def __init__(self, rng: random.Random, vocabulary: list[str], exponent: float) -> None:
        self.rng = rng
        self.vocabulary = vocabulary
        weights = [1.0 / (rank**exponent) for rank in range(1, len(vocabulary) + 1)]
        total = 0.0
        self._cumulative: list[float] = []
        for weight in weights:
            total += weight
            self._cumulative.append(total)
        self._total = total

    def words(self, count: int) -> list[str]:
        return self.rng.choices(self.vocabulary, cum_weights=self._cumulative, k=count)

    def word_share(self, rank: int) -> float:
        """The share of all word occurrences that the word of this (1-based) rank takes."""
        before = self._cumulative[rank - 2] if rank > 1 else 0.0
        return (self._cumulative[rank - 1] - before) / self._total

    def name(self) -> str:
        return " ".join(word.capitalize() for word in self.words(self.rng.randint(2, 5)))

    def description(self) -> str | None:
        if self.rng.random() < 0.15:
            return None
        text = " ".join(self.words(self.rng.randint(8, 40)))
        return text[0].upper() + text[1:] + "."


# --------------------------------------------------------------------------------------------
# Seeding: the app's migrations and tables, one transaction, no HTTP.


@dataclass
class SearchQuery:
    kind: str
    q: str
    matches: int = 0
    in_target: bool = True
    statements: list[tuple[str, Any]] = field(default_factory=list, repr=False)
    sql_ms: float = float("nan")  # the route's SQL run directly with sqlite3, median


@dataclass
class Corpus:
    rows: int
    list_user_rows: int
    vocabulary: int
    avg_words: float
    described: float
    db_megabytes: float
    seconds: float
    example_name: str
    example_description: str | None
    queries: list[SearchQuery] = field(default_factory=list)


def bench_settings(data_dir: Path) -> Any:
    from config.settings import Settings

    return Settings(
        _env_file=None,
        data_dir=data_dir,
        database_url=None,
        redis_url=None,
        clerk_jwt_issuer_domain=None,
        environment="development",
        log_level="WARNING",
        slow_query_ms=0,  # the seed's one big INSERT is slow on purpose
    )


def seed(data_dir: Path, search_rows: int) -> Corpus:
    return asyncio.run(_seed(data_dir, search_rows))


async def _seed(data_dir: Path, search_rows: int) -> Corpus:
    from sqlalchemy import Table, insert, text

    from backend import migrations
    from backend.projects.models import Project
    from backend.users.models import User
    from config.database import Database, utcnow
    from config.ids import new_id

    started = time.perf_counter()
    rng = random.Random(SEED)
    vocabulary = make_vocabulary(rng, VOCABULARY_SIZE)
    text_gen = TextGenerator(rng, vocabulary, ZIPF_EXPONENT)
    now = utcnow()

    users = {subject: new_id("usr") for subject in (LIST_USER, SEARCH_USER)}
    user_rows = [
        {
            "id": user_id,
            "clerk_id": subject,
            "email": f"{subject}@example.com",
            "name": subject,
            "image_url": None,
            "plan": "free",
            "credits": 0,
            "onboarding_completed": True,
            "role": "user",
            "created_at": now,
            "updated_at": now,
            "deleted_at": None,
        }
        for subject, user_id in users.items()
    ]

    statuses = ["active"] * 16 + ["archived"] * 3 + ["draft"]
    total_words = 0
    described = 0
    project_rows: list[dict[str, Any]] = []
    for index in range(LIST_USER_PROJECTS + search_rows):
        owner = LIST_USER if index < LIST_USER_PROJECTS else SEARCH_USER
        name = text_gen.name()
        description = text_gen.description()
        total_words += len(name.split()) + (len(description.split()) if description else 0)
        described += description is not None
        project_rows.append(
            {
                "id": new_id("prj"),
                "user_id": users[owner],
                "name": name,
                "description": description,
                "status": rng.choice(statuses),
                "settings": {"is_public": rng.random() < 0.2, "allow_comments": True},
                "created_at": now,
                "updated_at": now,
            }
        )

    db = Database(bench_settings(data_dir))
    database_file = data_dir / "turbokit.db"
    try:
        await migrations.upgrade(db)
        async with db.write() as session:  # one transaction (BEGIN IMMEDIATE ... COMMIT)
            await session.execute(insert(cast(Table, User.__table__)), user_rows)
            await session.execute(insert(cast(Table, Project.__table__)), project_rows)

        queries = _pick_queries(rng, text_gen, project_rows[LIST_USER_PROJECTS:])
        count_sql = text(
            "SELECT count(*) FROM projects WHERE user_id = :user_id AND rowid IN "
            "(SELECT rowid FROM projects_fts WHERE projects_fts MATCH :match)"
        )
        async with db.read() as session:
            for query in queries:
                params = {"match": fts_match(query.q), "user_id": users[SEARCH_USER]}
                query.matches = int((await session.execute(count_sql, params)).scalar_one())
        await _capture_search_sql(db, users[SEARCH_USER], queries)
    finally:
        await db.dispose()
    _time_search_sql(database_file, queries)

    example = project_rows[LIST_USER_PROJECTS]
    rows_total = len(project_rows)
    return Corpus(
        rows=search_rows,
        list_user_rows=LIST_USER_PROJECTS,
        vocabulary=len(vocabulary),
        avg_words=total_words / rows_total,
        described=described / rows_total,
        db_megabytes=database_file.stat().st_size / 1e6,
        seconds=time.perf_counter() - started,
        example_name=example["name"],
        example_description=example["description"],
        queries=queries,
    )


async def _capture_search_sql(db: Any, user_id: str, queries: list[SearchQuery]) -> None:
    """Run the app's own search service once per query and keep the SQL it sends to SQLite."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from backend.projects import service

    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            captured.append((statement, params))

    # On every engine: the search runs on the database's read connections, not its sessions.
    event.listen(Engine, "before_cursor_execute", capture)
    try:
        for query in queries:
            captured.clear()
            await db.run_scan(service.search, user_id, query.q, 20)
            query.statements = list(captured)
    finally:
        event.remove(Engine, "before_cursor_execute", capture)


def _time_search_sql(database_file: Path, queries: list[SearchQuery]) -> None:
    """Time those statements with plain sqlite3 in this process: what SQLite itself costs."""
    connection = sqlite3.connect(database_file)
    try:
        connection.execute("PRAGMA cache_size=-65536")
        for query in queries:
            timings = []
            for _ in range(1 + (3 if query.matches > 10_000 else 9)):  # first one warms up
                began = time.perf_counter()
                for statement, params in query.statements:
                    connection.execute(statement, params).fetchall()
                timings.append((time.perf_counter() - began) * 1000)
            query.sql_ms = statistics.median(timings[1:])
    finally:
        connection.close()


def fts_match(q: str) -> str:
    """The FTS5 expression the search route builds (every word a prefix, all must match)."""
    import re

    return " ".join(f'"{term}"*' for term in re.findall(r"\w+", q.lower())[:16])


def _pick_queries(
    rng: random.Random, text_gen: TextGenerator, rows: list[dict[str, Any]]
) -> list[SearchQuery]:
    """Queries whose words match roughly 0.1-2% of rows each, as real searches mostly do, plus one
    very common word reported apart (not part of the target)."""
    vocabulary = text_gen.vocabulary
    words_per_row = statistics.fmean(
        len(row["name"].split()) + len((row["description"] or "").split()) for row in rows[:2000]
    )

    def rank_for_share(share: float) -> int:
        # expected share of rows containing the word of rank r: 1 - (1 - p_r) ** words_per_row
        ranks = range(1, len(vocabulary) + 1)
        keys = [-(1 - (1 - text_gen.word_share(r)) ** words_per_row) for r in ranks]
        return min(len(vocabulary), bisect.bisect_left(keys, -share) + 1)

    def word_at(share: float) -> str:
        return vocabulary[rank_for_share(share) - 1]

    queries = [
        SearchQuery("one word ~2%", word_at(0.02).capitalize()),
        SearchQuery("one word ~0.7%", word_at(0.007)),
        SearchQuery("one word ~0.2%", word_at(0.002)),
    ]
    band = set(vocabulary[rank_for_share(0.03) - 1 : rank_for_share(0.001)])
    pairs: list[str] = []
    for row in rng.sample(rows, min(len(rows), 5000)):
        words = [w.lower() for w in row["name"].split() if w.lower() in band]
        unique = list(dict.fromkeys(words))
        if len(unique) >= 2:
            pairs.append(f"{unique[0]} {unique[1]}")
            if len(pairs) == 2:
                break
    queries += [SearchQuery("two words", pair) for pair in pairs]
    queries += [
        SearchQuery("prefix (3 letters)", word_at(0.004)[:3]),
        SearchQuery("prefix (4 letters)", word_at(0.01)[:4]),
    ]
    queries.append(SearchQuery("very common word", vocabulary[2], in_target=False))
    return queries


# --------------------------------------------------------------------------------------------
# The server


# --------------------------------------------------------------------------------------------
# The load generator: runs in client processes, never in the server's.

Request = tuple[str, str, bytes | None]  # method, path, JSON body


def _client_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl+C and ends us


def client_job(job: dict[str, Any]) -> dict[str, Any]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.run(_drive(job))
    return uvloop.run(_drive(job))


async def _drive(job: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    requests: list[Request] = job["requests"]
    total: int = job["count"]
    concurrency: int = job["concurrency"]
    expect: int = job["expect"]
    issued = 0
    samples: list[tuple[int, float]] = []
    errors: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        job["base_url"], connector=connector, headers=job["headers"], timeout=timeout
    ) as session:

        async def connect() -> None:  # open every keep-alive connection before the clock starts
            async with session.get("/healthz") as response:
                await response.read()

        await asyncio.gather(*(connect() for _ in range(concurrency)))
        await asyncio.sleep(max(0.0, job["start_at"] - time.time()))
        deadline = time.perf_counter() + job["max_seconds"]

        async def worker() -> None:
            nonlocal issued
            while issued < total and time.perf_counter() < deadline:
                index = (job["offset"] + issued) % len(requests)
                issued += 1
                method, path, body = requests[index]
                started = time.perf_counter()
                try:
                    async with session.request(method, path, data=body) as response:
                        await response.read()
                        status = response.status
                except (TimeoutError, aiohttp.ClientError) as exc:
                    errors[type(exc).__name__] += 1
                    continue
                elapsed_ms = (time.perf_counter() - started) * 1000
                if status == expect:
                    samples.append((index, elapsed_ms))
                else:
                    errors[f"HTTP {status}"] += 1

        cpu = time.process_time()
        began = time.time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        ended = time.time()
        cpu = time.process_time() - cpu
    return {
        "samples": samples,
        "errors": dict(errors),
        "began": began,
        "ended": ended,
        "cpu": cpu,
        "capped": issued < total,
    }


@dataclass
class Run:
    ok: int
    errors: dict[str, int]
    wall: float
    latencies: list[float]
    by_request: dict[int, list[float]]
    server_cpu: float
    client_cpu: float
    other_cpu: float  # CPU used by every other process on the machine meanwhile
    capped: bool

    @property
    def rps(self) -> float:
        return self.ok / self.wall if self.wall > 0 else 0.0


def _process_cpu_ticks() -> dict[int, tuple[int, int, str]]:
    """pid -> (user + system ticks, parent pid, name) for every process."""
    ticks: dict[int, tuple[int, int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                text = stat.read()
        except OSError:
            continue
        name = text[text.find("(") + 1 : text.rfind(")")]
        fields = text.rsplit(")", 1)[1].split()
        ticks[int(entry)] = (int(fields[11]) + int(fields[12]), int(fields[1]), name)
    return ticks


def busy_elsewhere(seconds: float = 1.0) -> tuple[float, list[str]]:
    """CPU (in cores) that processes other than this benchmark and its children use right now,
    and the busiest of them."""
    before = _process_cpu_ticks()
    time.sleep(seconds)
    after = _process_cpu_ticks()
    hz = os.sysconf("SC_CLK_TCK")
    mine = {os.getpid()}
    for _ in range(3):  # children and grandchildren (server, client pool, py-spy)
        mine |= {pid for pid, (_, parent, _) in after.items() if parent in mine}
    usage = []
    for pid, (ticks, _, name) in after.items():
        if pid in mine or pid not in before:
            continue
        cores = (ticks - before[pid][0]) / hz / seconds
        if cores > 0.02:
            usage.append((cores, f"{100 * cores:.0f}% {name} (pid {pid})"))
    usage.sort(reverse=True)
    return sum(c for c, _ in usage), [text for _, text in usage[:3]]


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


class LoadDriver:
    def __init__(self, server: Server, clients: int, max_seconds: float) -> None:
        self.server = server
        self.clients = clients
        self.max_seconds = max_seconds
        context = multiprocessing.get_context("spawn")
        self.pool = context.Pool(clients, initializer=_client_init)

    def run(
        self,
        requests: list[Request],
        *,
        count: int,
        concurrency: int,
        headers: dict[str, str],
        expect: int,
        max_seconds: float | None = None,
    ) -> Run:
        clients = min(self.clients, concurrency)
        start_at = time.time() + 0.15 + 0.1 * clients
        jobs = []
        for client in range(clients):
            share = count // clients + (client < count % clients)
            jobs.append(
                {
                    "base_url": self.server.base_url,
                    "headers": headers,
                    "requests": requests,
                    "offset": client * 7919,
                    "count": share,
                    "concurrency": concurrency // clients + (client < concurrency % clients),
                    "expect": expect,
                    "start_at": start_at,
                    "max_seconds": max_seconds or self.max_seconds,
                }
            )
        pending = self.pool.map_async(client_job, jobs)
        while time.time() < start_at:  # read the server's CPU as the clients start
            time.sleep(0.001)
        cpu_before = self.server.cpu_seconds()
        busy_before = machine_busy_seconds()
        own_before = time.process_time()
        results = pending.get(timeout=(max_seconds or self.max_seconds) + 60)
        cpu_after = self.server.cpu_seconds()
        busy_after = machine_busy_seconds()
        own = time.process_time() - own_before
        latencies: list[float] = []
        by_request: dict[int, list[float]] = defaultdict(list)
        errors: Counter[str] = Counter()
        for result in results:
            for index, ms in result["samples"]:
                latencies.append(ms)
                by_request[index].append(ms)
            errors.update(result["errors"])
        began = min(r["began"] for r in results)
        ended = max(r["ended"] for r in results)
        return Run(
            ok=len(latencies),
            errors=dict(errors),
            wall=ended - began,
            latencies=latencies,
            by_request=dict(by_request),
            server_cpu=cpu_after - cpu_before,
            client_cpu=sum(r["cpu"] for r in results),
            other_cpu=max(
                0.0,
                busy_after
                - busy_before
                - (cpu_after - cpu_before)
                - sum(r["cpu"] for r in results)
                - own,
            ),
            capped=any(r["capped"] for r in results),
        )

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


# --------------------------------------------------------------------------------------------
# Profiling (optional): py-spy attached to the server during a measured run. `--gil` samples
# only the thread holding the GIL, i.e. the Python work that one worker can do one at a time;
# SQLite's own C work (in aiosqlite's threads, GIL released) is not in these samples.


class Profiler:
    def __init__(self, directory: Path | None, server: Server) -> None:
        self.directory = directory
        self.server = server
        self.proc: subprocess.Popen[bytes] | None = None
        self.reports: dict[str, list[str]] = {}
        self.exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if directory is not None:
            if not Path(self.exe).exists():
                raise SystemExit("--profile needs py-spy: pip install py-spy")
            directory.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def sample(self, label: str) -> Any:
        if self.directory is None or self.server.proc is None:
            yield
            return
        slug = "-".join("".join(c if c.isalnum() else " " for c in label).split())
        output = self.directory / f"{slug}.txt"
        command = [self.exe, "record", "--pid", str(self.server.proc.pid), "--rate", "200"]
        command += ["--gil", "--nonblocking", "--format", "raw", "--output", str(output)]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # let py-spy attach
        try:
            yield
        finally:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            if output.exists():
                self.reports[label] = summarise_stacks(output)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# Which part of the request a sample is in: the innermost of these frames on its stack.
_STAGES = [
    ("route: database query + rows", ("backend/projects/service.py",)),
    ("route: response models (model_validate)", ("backend/projects/routes.py", "responses.py")),
    ("auth: user lookup", ("get_current_user", "get_caller", "backend/users/service.py")),
    ("auth: token verification (get_identity)", ("get_identity", "backend/auth.py")),
    ("session open/close (get_session)", ("get_session",)),
    ("FastAPI response serialisation", ("serialize_response",)),
    ("aiosqlite worker threads (Python part)", ("_connection_worker_thread",)),
]
# What kind of code a sample is executing: the innermost frame that belongs to one of these.
_LAYERS = [
    ("RSA/JWT (PyJWT, cryptography)", ("jwt/", "cryptography/")),
    ("aiosqlite thread hand-off", ("aiosqlite/", "threading.py", "queue.py")),
    ("SQLAlchemy (+ greenlet)", ("sqlalchemy/", "greenlet")),
    ("pydantic", ("pydantic/", "pydantic_core/")),
    ("JSON", ("json/",)),
    ("config/database.py (read units, UTC column type)", ("config/database.py",)),
    ("FastAPI", ("fastapi/",)),
    ("Starlette", ("starlette/",)),
    ("uvicorn / HTTP parsing", ("uvicorn/", "httptools/")),
    ("logging", ("logging/",)),
    ("asyncio / uvloop", ("asyncio/", "uvloop/")),
    ("TurboKit code", ("backend/", "config/")),
]


def summarise_stacks(path: Path, top: int = 10) -> list[str]:
    """py-spy's collapsed stacks → shares by request stage, by layer, and the hottest functions."""
    stages: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaves[frames[-1]] += count
        stage = _innermost(frames, _STAGES, "")
        if not stage:  # SQLAlchemy's greenlets and the event loop have no route frame above them
            stage = "no route frame: " + _innermost(frames, _LAYERS, "other")
        stages[stage] += count
        layers[_innermost(frames, _LAYERS, "other")] += count
    if not total:
        return ["(no samples)"]
    lines = [f"{total} samples of the GIL-holding thread; by stage of the request:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in stages.most_common()]
    lines.append("by kind of code (innermost frame):")
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in layers.most_common()]
    lines.append("hottest functions (own time):")
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in leaves.most_common(top)]
    return lines


def _innermost(frames: list[str], groups: list[tuple[str, tuple[str, ...]]], default: str) -> str:
    for frame in reversed(frames):
        for name, keys in groups:
            if any(key in frame for key in keys):
                return name
    return default


# --------------------------------------------------------------------------------------------
# The benchmark


@dataclass
class Measured:
    key: str
    label: str
    concurrency: int
    runs: list[Run]

    def median(self, metric: str) -> float:
        return float(statistics.median(getattr(self, f"_{metric}")(run) for run in self.runs))

    @staticmethod
    def _rps(run: Run) -> float:
        return run.rps

    @staticmethod
    def _p50(run: Run) -> float:
        return percentile(run.latencies, 50)

    @staticmethod
    def _p99(run: Run) -> float:
        return percentile(run.latencies, 99)

    @staticmethod
    def _cpu_pct(run: Run) -> float:
        return 100 * run.server_cpu / run.wall if run.wall else 0.0

    @staticmethod
    def _cpu_ms(run: Run) -> float:
        return 1000 * run.server_cpu / run.ok if run.ok else float("nan")

    @staticmethod
    def _client_pct(run: Run) -> float:
        return 100 * run.client_cpu / run.wall if run.wall else 0.0

    @staticmethod
    def _other_pct(run: Run) -> float:
        return 100 * run.other_cpu / run.wall if run.wall else 0.0

    @property
    def errors(self) -> int:
        return sum(sum(run.errors.values()) for run in self.runs)

    @property
    def error_kinds(self) -> dict[str, int]:
        kinds: Counter[str] = Counter()
        for run in self.runs:
            kinds.update(run.errors)
        return dict(kinds)

    @property
    def requests(self) -> int:
        return sum(run.ok for run in self.runs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "concurrency": self.concurrency,
            "runs": len(self.runs),
            "ok_requests": self.requests,
            "errors": self.error_kinds,
            "rps_median": self.median("rps"),
            "rps_each": [round(run.rps, 1) for run in self.runs],
            "p50_ms_median": self.median("p50"),
            "p99_ms_median": self.median("p99"),
            "server_cpu_pct_median": self.median("cpu_pct"),
            "server_cpu_ms_per_request_median": self.median("cpu_ms"),
            "client_cpu_pct_median": self.median("client_pct"),
            "other_processes_cpu_pct_median": self.median("other_pct"),
            "capped_by_time": any(run.capped for run in self.runs),
        }


def project_bodies(rng: random.Random, count: int = 200) -> list[Request]:
    """POST bodies as the web app sends them: a name, usually a description, sometimes settings."""
    vocabulary = make_vocabulary(rng, 500)
    requests: list[Request] = []
    for _ in range(count):
        name = " ".join(w.capitalize() for w in rng.sample(vocabulary, rng.randint(2, 4)))
        body: dict[str, Any] = {"name": name}
        if rng.random() < 0.8:
            body["description"] = " ".join(rng.choices(vocabulary, k=rng.randint(8, 30))) + "."
        if rng.random() < 0.2:
            body["settings"] = {"is_public": True}
        requests.append(("POST", "/v1/projects", json.dumps(body).encode()))
    return requests


def search_request(q: str) -> Request:
    return ("GET", "/v1/projects/search?" + urllib.parse.urlencode({"q": q}), None)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        print(
            "bench/api.py needs aiohttp for its load clients (pip install aiohttp)", file=sys.stderr
        )
        return 2
    if not Path("/proc/self/stat").exists():
        print("bench/api.py reads CPU times from /proc: run it on Linux", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import

    data_dir = Path(tempfile.mkdtemp(prefix="turbokit-bench-"))
    server = Server(data_dir)
    driver: LoadDriver | None = None
    profiler: Profiler | None = None
    started = time.perf_counter()
    try:
        print(machine_line(), flush=True)
        print(f"seeding {args.search_rows:,} projects into {data_dir} ...", flush=True)
        corpus = seed(data_dir, args.search_rows)
        print(f"  {corpus.seconds:.1f} s, {corpus.db_megabytes:.0f} MB on disk", flush=True)

        from backend.auth import issue_dev_token

        settings = bench_settings(data_dir)
        tokens = {user: issue_dev_token(settings, user) for user in (LIST_USER, SEARCH_USER)}

        server.start()
        ready = server.wait_ready()
        print(f"server up in {ready:.1f} s: {' '.join(server.command[1:])}", flush=True)
        driver = LoadDriver(server, args.clients, args.max_seconds)
        profiler = Profiler(args.profile, server)
        wait_for_quiet(args.wait_quiet)
        results = run_benchmark(args, driver, profiler, corpus, tokens)
        report(args, corpus, results, profiler, time.perf_counter() - started)
        if args.json:
            args.json.write_text(json.dumps(results_json(args, corpus, results), indent=2) + "\n")
            print(f"results written to {args.json}")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        if profiler is not None:
            profiler.stop()
        if driver is not None:
            driver.close()
        server.stop()
        if args.keep_data:
            print(f"data kept in {data_dir} (server log: {server.log_path})")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def wait_for_quiet(patience: float) -> None:
    """Say whether other processes are using the CPU; with --wait-quiet, wait for them."""
    deadline = time.monotonic() + patience
    while True:
        cores, top = busy_elsewhere(1.0)
        if cores < 0.2:
            return
        if time.monotonic() >= deadline:
            print(
                f"WARNING: other processes are using {100 * cores:.0f}% of a core "
                f"({'; '.join(top)}); on a shared machine the figures are less reliable",
                flush=True,
            )
            return
        print(f"waiting for a quiet machine: others use {100 * cores:.0f}% of a core", flush=True)
        time.sleep(min(10.0, max(0.0, deadline - time.monotonic())))


def run_benchmark(
    args: argparse.Namespace,
    driver: LoadDriver,
    profiler: Profiler,
    corpus: Corpus,
    tokens: dict[str, str],
) -> dict[str, Any]:
    list_headers = {"Authorization": f"Bearer {tokens[LIST_USER]}"}
    search_headers = {"Authorization": f"Bearer {tokens[SEARCH_USER]}"}
    post_headers = {**list_headers, "Content-Type": "application/json"}
    conc = args.concurrency
    warmup_seconds = min(1.5, args.max_seconds / 3)
    rng = random.Random(SEED + 1)
    results: dict[str, Any] = {}

    def measure(
        key: str,
        label: str,
        requests: list[Request],
        headers: dict[str, str],
        expect: int,
        *,
        concurrency: int,
        count: int,
        repeats: int,
        profile: bool = True,
    ) -> None:
        print(f"  {label:<44} c={concurrency:<3} warm-up", end="", flush=True)
        driver.run(
            requests,
            count=max(50, count // 4),
            concurrency=concurrency,
            headers=headers,
            expect=expect,
            max_seconds=warmup_seconds,
        )
        runs = []
        for repeat in range(repeats):
            sampling = profile and repeat == 0
            with profiler.sample(label) if sampling else contextlib.nullcontext():
                run = driver.run(
                    requests, count=count, concurrency=concurrency, headers=headers, expect=expect
                )
            runs.append(run)
            print(f", {run.rps:,.0f}/s", end="", flush=True)
        print(flush=True)
        results[key] = Measured(key, label, concurrency, runs)

    print("measuring (req/s of each run):", flush=True)
    get_health: list[Request] = [("GET", "/healthz", None)]
    get_list: list[Request] = [("GET", "/v1/projects", None)]
    search_mix = [search_request(q.q) for q in corpus.queries if q.in_target]
    common = [search_request(q.q) for q in corpus.queries if not q.in_target]
    many = args.requests
    plan: list[tuple[str, str, list[Request], dict[str, str], int, int, int, int, bool]] = [
        # key, label, requests, headers, expected status, concurrency, count, repeats, profile
        ("healthz", "GET /healthz (no auth, no DB: the floor)", get_health, {}, 200,
         conc, many, args.repeats, False),
        ("list_1", "GET /v1/projects (page of 20)", get_list, list_headers, 200,
         1, max(50, many // 10), 1, False),
        ("list", "GET /v1/projects (page of 20)", get_list, list_headers, 200,
         conc, many, args.repeats, True),
        ("create", "POST /v1/projects", project_bodies(rng), post_headers, 201,
         conc, many, args.repeats, True),
        ("search_1", "GET /v1/projects/search (query mix)", search_mix, search_headers, 200,
         1, args.search_samples * len(search_mix), 1, True),
        ("search", "GET /v1/projects/search (query mix)", search_mix, search_headers, 200,
         conc, many, 1, False),
        ("search_common", "GET /v1/projects/search (common word)", common, search_headers, 200,
         1, max(5, args.search_samples // 2), 1, False),
    ]  # fmt: skip
    for key, label, requests, headers, expect, concurrency, count, repeats, profile in plan:
        measure(
            key,
            label,
            requests,
            headers,
            expect,
            concurrency=concurrency,
            count=count,
            repeats=repeats,
            profile=profile,
        )
    return results


def machine_line() -> str:
    versions = []
    for module in ("uvicorn", "uvloop", "httptools", "fastapi", "sqlalchemy", "aiosqlite"):
        try:
            versions.append(f"{module} {__import__(module).__version__}")
        except (ImportError, AttributeError):
            versions.append(f"{module} -")
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"machine: nproc {os.cpu_count()} ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}\n"
        f"         {', '.join(versions)}"
    )


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:,.{digits}f}"  # NaN → "-"


def report(
    args: argparse.Namespace,
    corpus: Corpus,
    results: dict[str, Any],
    profiler: Profiler,
    elapsed: float,
) -> None:
    conc = args.concurrency
    rows_total = corpus.rows + corpus.list_user_rows
    example = (corpus.example_description or "")[:50]
    print()
    print("=" * 104)
    print(
        "TurboKit API benchmark: one uvicorn worker, embedded SQLite (WAL), dev RS256 bearer tokens"
    )
    print(machine_line())
    print(
        f"load:    {args.clients} client process (aiohttp keep-alive on uvloop), up to "
        f"{args.requests:,} requests or {args.max_seconds:.0f} s per run, {args.repeats} run(s) "
        "per endpoint after a warm-up, medians; 127.0.0.1 only"
    )
    print(
        f"data:    {rows_total:,} projects. '{SEARCH_USER}' owns {corpus.rows:,} (the search "
        f"corpus); '{LIST_USER}' owns {corpus.list_user_rows} (+ those POSTed) and is the one "
        "listed and POSTed as"
    )
    print(
        f"         names of 2-5 words; {100 * corpus.described:.0f}% have a description of 8-40 "
        f"words; {corpus.avg_words:.1f} words per project on average, drawn from a vocabulary"
    )
    print(
        f"         of {corpus.vocabulary:,} made-up words with Zipf (s={ZIPF_EXPONENT}) frequencies"
        f" as in natural text. e.g. '{corpus.example_name}': '{example}...'"
    )
    print()
    header = (
        f"{'endpoint':<42}{'conc':>5}{'requests':>9}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'errors':>7}{'srv CPU':>8}{'CPU ms/req':>11}{'others':>7}"
    )
    print(header)
    print("-" * len(header))
    order = ["healthz", "list_1", "list", "create", "search_1", "search", "search_common"]
    for key in order:
        m: Measured = results[key]
        print(
            f"{m.label[:41]:<42}{m.concurrency:>5}{m.requests:>9,}{_fmt(m.median('rps'), 0):>8}"
            f"{_fmt(m.median('p50')):>8}{_fmt(m.median('p99')):>8}{m.errors:>7}"
            f"{_fmt(m.median('cpu_pct'), 0) + '%':>8}{_fmt(m.median('cpu_ms'), 2):>11}"
            f"{_fmt(m.median('other_pct'), 0) + '%':>7}"
        )
    print(
        "requests: successful requests measured over all runs. srv CPU: the server process's CPU"
        " (all threads)\nas % of one core during a run; CPU ms/req: that CPU divided by requests;"
        " others: CPU of every\nprocess other than the server and the load generator meanwhile"
        " (should be ~0%)."
    )
    client = max(results[k].median("client_pct") for k in order)
    other = max(results[k].median("other_pct") for k in order)
    print(f"The load generator used at most {client:.0f}% of a core (its own process).")
    if other > 15:
        print(
            f"WARNING: other processes on this machine used up to {other:.0f}% of a core during "
            "the runs; on 2 cores that competes with the server: these figures are less reliable."
        )
    capped = sorted({results[k].label for k in order if any(r.capped for r in results[k].runs)})
    if capped:
        cap = f"{args.max_seconds:.0f} s"
        print(f"Runs ended by the {cap} cap before all their requests: {'; '.join(capped)}")
    for key in order:
        if results[key].errors:
            print(f"errors in {results[key].label}: {results[key].error_kinds}")

    search_1: Measured = results["search_1"]
    by_request = search_1.runs[0].by_request
    print()
    print(
        f"search queries over {corpus.rows:,} projects of one user, one request at a time "
        f"({args.search_samples} each), 20 best matches returned:"
    )
    print(
        f"  {'kind':<20}{'q':<24}{'matches':>9}{'of rows':>9}{'p50 ms':>9}{'max ms':>9}"
        f"{'SQL ms':>8}"
    )
    in_target = [q for q in corpus.queries if q.in_target]
    for index, query in enumerate(in_target):
        samples = by_request.get(index, [])
        print(
            f"  {query.kind:<20}{query.q:<24}{query.matches:>9,}"
            f"{100 * query.matches / corpus.rows:>8.2f}%"
            f"{_fmt(percentile(samples, 50)):>9}{_fmt(max(samples, default=float('nan'))):>9}"
            f"{_fmt(query.sql_ms):>8}"
        )
    common = results["search_common"]
    for query in (q for q in corpus.queries if not q.in_target):
        samples = common.runs[0].latencies
        print(
            f"  {query.kind:<20}{query.q:<24}{query.matches:>9,}"
            f"{100 * query.matches / corpus.rows:>8.2f}%"
            f"{_fmt(percentile(samples, 50)):>9}{_fmt(max(samples, default=float('nan'))):>9}"
            f"{_fmt(query.sql_ms):>8}  (outside the target)"
        )
    sql_mix = statistics.median(q.sql_ms for q in in_target)
    print(
        "  SQL ms: the route's own SELECTs (FTS5 match + bm25 order, then the rows by id), "
        "captured from\n  the app and replayed with plain sqlite3, median: what SQLite costs; "
        f"the rest of p50 is the app stack.\n  Median over the mix: {sql_mix:.1f} ms of SQL "
        f"against a {search_1.median('p50'):.1f} ms p50."
    )

    print()
    print("targets:")
    verdicts = [
        (
            results["list"].median("rps") >= READS_TARGET_RPS,
            f">= {READS_TARGET_RPS:,.0f} reads/s: GET /v1/projects at c={conc}: "
            f"{results['list'].median('rps'):,.0f} req/s",
        ),
        (
            search_1.median("p50") < SEARCH_P50_TARGET_MS,
            f"search p50 < {SEARCH_P50_TARGET_MS:.0f} ms (one request at a time, query mix): "
            f"{search_1.median('p50'):.1f} ms",
        ),
        (
            results["search"].median("p50") < SEARCH_P50_TARGET_MS,
            f"search p50 < {SEARCH_P50_TARGET_MS:.0f} ms under c={conc} (queueing included): "
            f"{results['search'].median('p50'):.1f} ms",
        ),
    ]
    for ok, text in verdicts:
        print(f"  {'PASS' if ok else 'MISS'}  {text}")
    if corpus.rows != 100_000:
        print(f"  (search ran over {corpus.rows:,} projects, not the 100,000 of the target)")

    for label, lines in profiler.reports.items():
        print()
        print(f"server profile, {label} (py-spy --gil, first run; stacks in {args.profile}):")
        for line in lines:
            print(f"  {line}")
    print("=" * 104)
    print(f"total time {elapsed:.0f} s")


def results_json(
    args: argparse.Namespace, corpus: Corpus, results: dict[str, Any]
) -> dict[str, Any]:
    corpus_info = {k: v for k, v in corpus.__dict__.items() if k != "queries"}
    corpus_info["queries"] = [
        {k: v for k, v in q.__dict__.items() if k != "statements"} for q in corpus.queries
    ]
    return {
        "machine": machine_line(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "corpus": corpus_info,
        "results": {k: v.as_dict() for k, v in results.items() if isinstance(v, Measured)},
        "search_queries_one_at_a_time": [
            {
                "q": q.q,
                "kind": q.kind,
                "matches": q.matches,
                "p50_ms": percentile(results["search_1"].runs[0].by_request.get(i, []), 50),
                "sql_ms": q.sql_ms,
            }
            for i, q in enumerate(q for q in corpus.queries if q.in_target)
        ],
    }


if __name__ == "__main__":
    sys.exit(main())
