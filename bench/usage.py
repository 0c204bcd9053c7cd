"""Benchmark the usage reports: one user's year of LLM calls in a table shared with many users.

    python bench/usage.py              # 1,000,000 of 5,000,000 events (~5 min on 2 cores)
    python bench/usage.py --quick      # 100,000 in 500,000, fewer requests (~1 min)
    python bench/usage.py --events 300000 --total 1500000 --requests 200

What it does:

1. Makes a temporary DATA_DIR, runs the app's migrations on its SQLite file, creates the users
   through the app's models, then fills `usage_events` and the `usage_daily` rollup with plain
   `sqlite3` `executemany` in one transaction, day by day over `--days` days (a child process
   generates the next day while this one writes), so the rollup is exactly the sum of the events
   (checked afterwards). The two tables' secondary indexes are dropped for the load and created
   again from their own SQL before the commit. The measured user (`bench-usage`) makes `--events`
   calls over 4 models and 3 agents; `--other-users` users share the rest of `--total`, each
   mostly with one model and agent.
2. Signs a development token for `bench-usage` and starts one uvicorn worker
   (`python -m uvicorn backend.app:configure --factory --port <free> --log-level warning
   --no-access-log`, DATA_DIR set, in a directory without `.env`), then waits for /healthz.
3. From a separate client process (keep-alive `http.client`, one request at a time), times each
   endpoint after a warm-up: p50/p99 latency, the server's CPU per request (from /proc) and the
   CPU other processes took meanwhile. Prints a table, PASS/MISS per target and the command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import http.client
import json
import math
import multiprocessing
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from _server import ROOT, Server, machine_busy_seconds, process_cpu_seconds

sys.path.insert(0, str(ROOT))

P50_TARGET_MS = 50.0
SUBJECT = "bench-usage"
MODELS = {  # USD per million prompt / completion tokens
    "openai/gpt-4o-mini": (0.15, 0.60),
    "anthropic/claude-3.5-haiku": (0.80, 4.00),
    "google/gemini-2.0-flash-001": (0.10, 0.40),
    "meta-llama/llama-3.3-70b-instruct": (0.13, 0.39),
}
AGENTS = ("assistant", "researcher", "coder")
COMBOS = [(model, agent) for model in MODELS for agent in AGENTS]
CREDITS_PER_USD = 1000
SEED = 20250401

EVENT_COLUMNS = (
    "id, llm_call_id, user_id, thread_id, run_id, agent, model, generation_id, prompt_tokens, "
    "completion_tokens, cached_tokens, reasoning_tokens, cost_usd, credits, priced_by, created_at"
)
DAILY_COLUMNS = (
    "user_id, day, model, agent, requests, prompt_tokens, completion_tokens, cost_usd, credits"
)


# --- command line -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, help="the measured user's events (1,000,000)")
    parser.add_argument("--total", type=int, help="events in the table, all users (5,000,000)")
    parser.add_argument("--other-users", type=int, default=1000, help="users besides (1000)")
    parser.add_argument("--days", type=int, default=365, help="days the events span (365)")
    parser.add_argument("--requests", type=int, help="measured requests per endpoint (200)")
    parser.add_argument("--quick", action="store_true", help="100k of 500k events, 100 requests")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write results as JSON")
    parser.add_argument("--keep-data", action="store_true", help="keep the temporary DATA_DIR")
    args = parser.parse_args(argv)
    defaults = {
        "events": 100_000 if args.quick else 1_000_000,
        "total": 500_000 if args.quick else 5_000_000,
        "requests": 100 if args.quick else 200,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if not 1 <= args.events <= args.total or args.days < 2 or args.other_users < 1:
        parser.error("need 1 <= --events <= --total, --days >= 2, --other-users >= 1")
    return args


# --- seeding ------------------------------------------------------------------------------------


@dataclass
class Seeded:
    user_id: str
    events: int
    total: int
    daily_rows: int
    seconds: float
    phases: dict[str, float]
    db_bytes: int
    first_day: date
    last_day: date


@dataclass(frozen=True)
class Plan:
    """What to generate; handed to the generator process."""

    user_ids: list[str]
    events: int
    total: int
    first_day: date
    days: int


def seed(data_dir: Path, args: argparse.Namespace) -> Seeded:
    """Users through the app, then events and their rollup: a child process generates each day
    while this one writes the previous day, all in one transaction."""
    started = time.perf_counter()
    user_ids = asyncio.run(_migrate_and_add_users(data_dir, args.other_users))
    last_day = datetime.now(UTC).date()
    plan = Plan(
        user_ids, args.events, args.total, last_day - timedelta(days=args.days - 1), args.days
    )
    context = multiprocessing.get_context("spawn")
    days: Any = context.Queue(maxsize=4)
    generator = context.Process(target=generate, args=(plan, days), daemon=True)
    generator.start()
    try:
        phases, daily_rows = _write(data_dir / "turbokit.db", days)
    finally:
        generator.join(timeout=10)
        if generator.is_alive():
            generator.terminate()
    return Seeded(
        user_id=user_ids[0],
        events=args.events,
        total=args.total,
        daily_rows=daily_rows,
        seconds=time.perf_counter() - started,
        phases=phases,
        db_bytes=(data_dir / "turbokit.db").stat().st_size,
        first_day=plan.first_day,
        last_day=last_day,
    )


def _write(path: Path, days: Any) -> tuple[dict[str, float], int]:
    conn = sqlite3.connect(path, isolation_level=None)
    # A throwaway file: no journal while seeding (pages are written once), WAL again afterwards
    # as the app runs it.
    for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-2000000"):
        conn.execute(f"PRAGMA {pragma}")
    conn.execute("BEGIN IMMEDIATE")
    phases: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[phase] = phases.get(phase, 0.0) + now - clock
        clock = now

    # Building an index once from sorted rows is cheaper than updating it row by row: drop the
    # migrations' secondary indexes of the two tables, load, then run their own CREATE INDEX
    # statements again, so the schema ends as the migrations left it.
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
        "AND tbl_name IN ('usage_events', 'usage_daily')"
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    daily_rows = 0
    while (day := days.get(timeout=300)) is not None:
        events, rollup = day
        lap("waiting for the generator")
        conn.executemany(
            f"INSERT INTO usage_events ({EVENT_COLUMNS}) VALUES ({_marks(16)})", events
        )
        lap("usage_events")
        conn.executemany(f"INSERT INTO usage_daily ({DAILY_COLUMNS}) VALUES ({_marks(9)})", rollup)
        daily_rows += len(rollup)
        lap("usage_daily")
    for _, sql in indexes:
        conn.execute(sql)
    lap(f"{len(indexes)} indexes")
    conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    lap("commit")
    return phases, daily_rows


def generate(plan: Plan, days: Any) -> None:
    """Runs in the generator process: each day's events in time order and its rollup rows, then
    None."""
    gc.disable()  # millions of short-lived tuples; nothing here is cyclic
    rng = random.Random(SEED)
    users = len(plan.user_ids)
    favourites = [rng.randrange(len(COMBOS)) for _ in range(users)]
    shapes = call_shapes(rng)
    per_user_events = [0] * users
    seq = 0
    for index in range(plan.days):
        day = plan.first_day + timedelta(days=index)
        mine = _share(plan.events, plan.days, index)
        others = _share(plan.total - plan.events, plan.days, index)
        callers = [0] * mine + rng.choices(range(1, users), k=others)
        events, rollup = _day_of_events(
            rng, day, callers, plan.user_ids, favourites, per_user_events, seq, shapes
        )
        seq += len(events)
        rows = [
            (plan.user_ids[u], day.isoformat(), model, agent, *sums)
            for (u, model, agent), sums in rollup.items()
        ]
        days.put((events, rows))
    days.put(None)


async def _migrate_and_add_users(data_dir: Path, others: int) -> list[str]:
    """The app's own migrations, then the users through its model (so defaults are the app's)."""
    from backend import migrations
    from backend.users.models import User
    from config.database import Database

    db = Database(bench_settings(data_dir))
    try:
        await migrations.upgrade(db)
        async with db.write() as session:
            users = [User(clerk_id=SUBJECT, email="usage@bench.invalid", name="Usage Bench")]
            users += [User(clerk_id=f"bench-other-{n:05d}") for n in range(others)]
            session.add_all(users)
            await session.flush()
            return [user.id for user in users]
    finally:
        await db.dispose()


def _share(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


def _marks(count: int) -> str:
    return ", ".join("?" * count)


_CLOCK = [f"{h:02d}:{m:02d}:{sec:02d}." for h in range(24) for m in range(60) for sec in range(60)]
_MILLIS = [f"{ms:03d}000" for ms in range(1000)]
_CALLS_PER_COMBO = 512


def call_shapes(rng: random.Random) -> list[list[tuple[str, str, int, int, float, int]]]:
    """Per (model, agent): calls of varied size, priced as `settle_call` prices them, that the
    seed draws from (drawing a shape is much cheaper than pricing each call)."""
    shapes = []
    for model, agent in COMBOS:
        price_in, price_out = MODELS[model]
        calls = []
        for _ in range(_CALLS_PER_COMBO):
            prompt = 200 + int(rng.random() * 3000)
            completion = 20 + int(rng.random() * 600)
            cost = round((prompt * price_in + completion * price_out) / 1_000_000, 10)
            calls.append(
                (model, agent, prompt, completion, cost, math.ceil(cost * CREDITS_PER_USD))
            )
        shapes.append(calls)
    return shapes


def _day_of_events(
    rng: random.Random,
    day: date,
    callers: list[int],
    user_ids: list[str],
    favourites: list[int],
    per_user_events: list[int],
    seq: int,
    shapes: list[list[tuple[str, str, int, int, float, int]]],
) -> tuple[list[tuple[Any, ...]], dict[tuple[int, str, str], list[Any]]]:
    """One day of calls in time order (ids sort as created_at does), and their rollup rows. The
    measured user (0) spreads calls over every model and agent; the others mostly use their
    favourite pair."""
    midnight_ms = int(datetime.combine(day, datetime.min.time(), UTC).timestamp() * 1000)
    day_text = day.isoformat() + " "
    draw = rng.random
    combos = len(COMBOS)
    offsets = [int(draw() * 86_400_000) for _ in callers]
    events: list[tuple[Any, ...]] = []
    rollup: dict[tuple[int, str, str], list[Any]] = {}
    for offset, user in sorted(zip(offsets, callers, strict=True)):
        seq += 1
        combo = int(draw() * combos) if user == 0 or draw() < 0.15 else favourites[user]
        model, agent, prompt, completion, cost, credits = shapes[combo][
            int(draw() * _CALLS_PER_COMBO)
        ]
        body = f"{midnight_ms + offset:015d}{seq:011d}"
        count = per_user_events[user]
        per_user_events[user] = count + 1
        thread_no = count // (25 if user == 0 else 10)
        events.append(
            (
                "evt_" + body,
                "llm_" + body,
                user_ids[user],
                f"thr_{user:05d}{thread_no:021d}",
                "run_" + body,
                agent,
                model,
                None,
                prompt,
                completion,
                0,
                0,
                cost,
                credits,
                "provider",
                day_text + _CLOCK[offset // 1000] + _MILLIS[offset % 1000],
            )
        )
        sums = rollup.get((user, model, agent))
        if sums is None:
            rollup[(user, model, agent)] = [1, prompt, completion, cost, credits]
        else:
            sums[0] += 1
            sums[1] += prompt
            sums[2] += completion
            sums[3] += cost
            sums[4] += credits
    return events, rollup


def check_seed(data_dir: Path, seeded: Seeded) -> None:
    """The rollup holds exactly the events: counts and credits agree, per user and overall."""
    conn = sqlite3.connect(data_dir / "turbokit.db")
    try:
        events = conn.execute(
            "SELECT count(*), sum(credits) FROM usage_events WHERE user_id = ?", (seeded.user_id,)
        ).fetchone()
        daily = conn.execute(
            "SELECT sum(requests), sum(credits) FROM usage_daily WHERE user_id = ?",
            (seeded.user_id,),
        ).fetchone()
        total = conn.execute("SELECT count(*) FROM usage_events").fetchone()[0]
        total_daily = conn.execute("SELECT sum(requests) FROM usage_daily").fetchone()[0]
    finally:
        conn.close()
    if events != daily or events[0] != seeded.events or not total == total_daily == seeded.total:
        raise RuntimeError(f"seed inconsistent: {events} {daily} {total} {total_daily}")


def bench_settings(data_dir: Path) -> Any:
    from config.settings import Settings

    return Settings(_env_file=None, data_dir=data_dir, environment="development")  # type: ignore[call-arg]


def query_plans(data_dir: Path, user_id: str, first: date, last: date) -> list[str]:
    """SQLite's plan for the day and thread reports' SQL (the index each one walks)."""
    conn = sqlite3.connect(data_dir / "turbokit.db")
    sums = "sum(requests), sum(prompt_tokens), sum(completion_tokens), sum(cost_usd), sum(credits)"
    day_sql = (
        f"SELECT day, {sums} FROM usage_daily WHERE day >= ? AND day <= ? AND user_id = ? "
        "GROUP BY day ORDER BY day"
    )
    thread_sql = (
        "SELECT thread_id, count(*), sum(credits) FROM usage_events WHERE user_id = ? "
        "AND created_at >= ? AND created_at < ? GROUP BY thread_id"
    )
    plans = []
    try:
        for name, sql, params in (
            ("by day", day_sql, (first.isoformat(), last.isoformat(), user_id)),
            ("by thread", thread_sql, (user_id, first.isoformat(), last.isoformat())),
        ):
            rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
            plans.append(f"{name}: " + "; ".join(row[-1] for row in rows))
    finally:
        conn.close()
    return plans


# --- server -------------------------------------------------------------------------------------


@contextlib.contextmanager
def server(data_dir: Path) -> Iterator[tuple[int, int]]:
    """The app over the seeded data directory: (its pid, its port)."""
    app = Server(data_dir)
    app.start()
    try:
        app.wait_ready()
        yield app.pid, app.port
    finally:
        app.stop()


# --- client -------------------------------------------------------------------------------------


@dataclass
class Endpoint:
    label: str
    path: str
    requests: int
    warmup: int
    target: bool = False


def measure(port: int, token: str, server_pid: int, endpoint: Endpoint) -> dict[str, Any]:
    """Runs in the client process: one request at a time on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    headers = {"Authorization": f"Bearer {token}"}
    sizes: list[int] = []

    def one() -> float:
        started = time.perf_counter()
        conn.request("GET", endpoint.path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"{endpoint.path}: {response.status} {body[:300]!r}")
        sizes.append(len(body))
        return elapsed * 1000

    for _ in range(endpoint.warmup):
        one()
    cpu0, busy0, own0 = process_cpu_seconds(server_pid), machine_busy_seconds(), time.process_time()
    wall0 = time.perf_counter()
    latencies = [one() for _ in range(endpoint.requests)]
    wall = time.perf_counter() - wall0
    server_cpu = process_cpu_seconds(server_pid) - cpu0
    others = machine_busy_seconds() - busy0 - server_cpu - (time.process_time() - own0)
    latencies.sort()
    return {
        "label": endpoint.label,
        "path": endpoint.path,
        "requests": len(latencies),
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, math.ceil(0.99 * len(latencies)) - 1)],
        "max_ms": latencies[-1],
        "server_cpu_ms": server_cpu * 1000 / len(latencies),
        "others_pct": max(0.0, others) / wall * 100,
        "bytes": statistics.median(sizes),
        "target": endpoint.target,
    }


def _client(port: int, token: str, pid: int, endpoints: list[Endpoint], out: Any) -> None:
    out.send([measure(port, token, pid, endpoint) for endpoint in endpoints])
    out.close()


def run_client(port: int, token: str, pid: int, endpoints: list[Endpoint]) -> list[dict[str, Any]]:
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_client, args=(port, token, pid, endpoints, sender))
    process.start()
    sender.close()
    try:
        results: list[dict[str, Any]] = receiver.recv()
    except EOFError:
        raise RuntimeError("the client process failed (see its traceback above)") from None
    finally:
        process.join(timeout=30)
    return results


def endpoints_for(args: argparse.Namespace, seeded: Seeded, cursor: str) -> list[Endpoint]:
    year = {"from": seeded.first_day.isoformat(), "to": seeded.last_day.isoformat()}
    last_30 = {
        "from": (seeded.last_day - timedelta(days=29)).isoformat(),
        "to": seeded.last_day.isoformat(),
    }
    n, warm = args.requests, max(5, args.requests // 10)
    few = max(3, args.requests // 100)

    def usage(params: dict[str, str], **extra: str) -> str:
        return "/v1/usage?" + urllib.parse.urlencode({**extra, **params})

    return [
        Endpoint(f"by day, {args.days} days", usage(year, group_by="day"), n, warm, True),
        Endpoint(f"by model, {args.days} days", usage(year, group_by="model"), n, warm, True),
        Endpoint("events, first page of 20", "/v1/usage/events", n, warm, True),
        Endpoint("events, a page deep in the list", f"/v1/usage/events?cursor={cursor}", n, warm),
        Endpoint(f"by agent, {args.days} days", usage(year, group_by="agent"), n, warm),
        Endpoint("by day, default 30 days", "/v1/usage", n, warm),
        Endpoint("by thread, 30 days", usage(last_30, group_by="thread"), few, 1),
        Endpoint(f"by thread, {args.days} days", usage(year, group_by="thread"), few, 1),
        Endpoint(
            "export.csv, 30 days", "/v1/usage/export.csv?" + urllib.parse.urlencode(last_30), few, 1
        ),
    ]


def middle_cursor(data_dir: Path, user_id: str, events: int) -> str:
    conn = sqlite3.connect(data_dir / "turbokit.db")
    try:
        row = conn.execute(
            "SELECT id FROM usage_events WHERE user_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?",
            (user_id, events // 2),
        ).fetchone()
    finally:
        conn.close()
    return str(row[0])


# --- report -------------------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {memory:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )


def report(results: list[dict[str, Any]], command: str) -> bool:
    print()
    print("| endpoint | requests | p50 ms | p99 ms | max ms | server CPU ms/req | others | KB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r['label']} | {r['requests']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['max_ms']:.1f} | {r['server_cpu_ms']:.1f} | {r['others_pct']:.0f}% | "
            f"{r['bytes'] / 1024:.1f} |"
        )
    print()
    passed = True
    for r in results:
        if r["target"]:
            ok = r["p50_ms"] < P50_TARGET_MS
            passed &= ok
            verdict = "PASS" if ok else "MISS"
            target = f"target < {P50_TARGET_MS:.0f} ms"
            print(f"{verdict}  {r['label']}: p50 {r['p50_ms']:.1f} ms ({target})")
    print(f"\nmachine: {machine()}")
    print(f"command: {command}")
    return passed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python bench/usage.py " + " ".join(argv if argv is not None else sys.argv[1:])
    data_dir = Path(tempfile.mkdtemp(prefix="turbokit-usage-bench-"))
    try:
        print(
            f"seeding {args.total:,} events ({args.events:,} for {SUBJECT}) over {args.days} days"
        )
        seeded = seed(data_dir, args)
        check_seed(data_dir, seeded)
        print(
            f"seeded in {seeded.seconds:.1f} s: {seeded.daily_rows:,} usage_daily rows, "
            f"{seeded.db_bytes / 2**20:.0f} MiB ("
            + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in seeded.phases.items())
            + ")"
        )
        for plan in query_plans(data_dir, seeded.user_id, seeded.first_day, seeded.last_day):
            print(f"  plan {plan}")
        from backend.auth import issue_dev_token

        token = issue_dev_token(bench_settings(data_dir), SUBJECT)
        cursor = middle_cursor(data_dir, seeded.user_id, seeded.events)
        started = time.perf_counter()
        with server(data_dir) as (pid, port):
            results = run_client(port, token, pid, endpoints_for(args, seeded, cursor))
        print(f"measured in {time.perf_counter() - started:.1f} s")
        passed = report(results, command)
        if args.json:
            payload = {"seed": seeded.__dict__, "results": results, "machine": machine()}
            args.json.write_text(json.dumps(payload, indent=2, default=str))
        return 0 if passed else 1
    finally:
        if args.keep_data:
            print(f"data kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
