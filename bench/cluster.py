"""python -m bench cluster [--workers 1 2] [--jobs 8] [--seconds 20] [--repeats 3]

Past one process: one gateway process and W worker processes (``python -m bot run --role …``)
on a throw-away PostgreSQL, against the Discord double (in this process) and the relay double
(its own process) serving 4K answers. N members keep 4K ``/imagine`` jobs queued so that N run
at once (the caps set to N, shared by all workers through the database); one more member sends
a probe ``/imagine`` every 250 ms to the gateway. Per W: pictures delivered per second (result
uploads the double received in the window) and the gateway's ack latency (INTERACTION_CREATE
written -> its callback POST received) while the workers are busy. Each cell runs ``--repeats``
times; the table quotes the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests import pg
from tests.cluster import Cluster, cluster_env

from . import __main__ as relay_bench
from .bot import API_KEY, TimedDouble, ack_latencies, fmt, pct
from .payloads import payload


async def _ready(dd: TimedDouble, cluster: Cluster, logins: int) -> None:
    deadline = time.monotonic() + 120
    while len(dd.find("GET", r"^/users/@me$")) < logins or not dd.synced_commands():
        cluster.check_alive()
        if time.monotonic() > deadline:
            raise SystemExit(f"the processes did not start:\n{cluster.logs()}")
        await asyncio.sleep(0.05)


async def cell(server: pg.PgServer, relay_url: str, workers: int, jobs: int, seconds: float, warmup: float) -> dict[str, Any]:
    url = await server.fresh_database()
    caps = {"NB_MAX_JOBS": str(jobs), "NB_MAX_JOBS_PER_GUILD": str(jobs), "NB_MAX_JOBS_PER_USER": "1"}
    async with TimedDouble() as dd:
        guild = dd.add_guild("Bench Guild")
        channel = dd.text_channels(guild)[0]
        loaders = [dd.add_member(guild, username=f"load-{i}") for i in range(jobs)]
        probers = [dd.add_member(guild, username=f"probe-{i}") for i in range(int(seconds / 0.25) + 4)]
        env = cluster_env(database_url=url, api_base=dd.api_base, relay_url=relay_url, api_key=API_KEY, NB_ALLOW_PRIVATE_RELAYS="1")
        cluster = Cluster(Path(tempfile.mkdtemp(prefix="nb-bench-cluster-")), {**env, "NB_LOG_LEVEL": "WARNING", **caps})
        try:
            cluster.spawn("gateway")
            for _ in range(workers):
                cluster.spawn("worker")
            await _ready(dd, cluster, 1 + workers)

            async def imagine(member: dict[str, Any], prompt: str) -> dict[str, Any]:
                options = {"prompt": prompt, "size": "4K"}
                return await dd.interact(dd.slash_interaction("imagine", channel=channel, user=member, options=options))

            stop, submitted = asyncio.Event(), 0

            async def load() -> None:
                nonlocal submitted
                while not stop.is_set():  # about 2N outstanding, so N always run
                    if submitted - len(dd.delivered) < 2 * jobs:
                        await imagine(loaders[submitted % jobs], f"load {submitted}")
                        submitted += 1
                    else:
                        await asyncio.sleep(0.02)

            loader = asyncio.create_task(load())
            await asyncio.sleep(warmup)
            t0 = time.monotonic()
            probes = []
            for i in range(int(seconds / 0.25)):
                began = time.monotonic()
                probes.append(await imagine(probers[i], f"probe {i}"))
                await asyncio.sleep(max(0.0, 0.25 - (time.monotonic() - began)))
            t1 = time.monotonic()
            stop.set()
            await loader
            await asyncio.sleep(1.0)  # the last probes' acks
            acks = ack_latencies(dd, probes)
            delivered = sum(1 for t in dd.delivered if t0 <= t <= t1)
            return {
                "workers": workers,
                "jobs": jobs,
                "pictures_per_s": delivered / (t1 - t0),
                "ack_p50_ms": statistics.median(acks) if acks else float("nan"),
                "ack_p99_ms": pct(acks, 0.99),
                "acked": f"{len(acks)}/{len(probes)}",
            }
        finally:
            await cluster.close()


def print_table(results: list[dict[str, Any]], jobs: int, repeats: int) -> None:
    print(f"One gateway + W workers on PostgreSQL, {jobs} 4K jobs at once, medians of {repeats} runs.")
    print()
    print("| workers | pictures/s | gateway ack p50 | gateway ack p99 | runs (pictures/s) |")
    print("|---:|---:|---:|---:|---|")
    for w in sorted({r["workers"] for r in results}):
        mine = [r for r in results if r["workers"] == w]
        pps = statistics.median(r["pictures_per_s"] for r in mine)
        p50 = statistics.median(r["ack_p50_ms"] for r in mine)
        p99 = statistics.median(r["ack_p99_ms"] for r in mine)
        runs = ", ".join(f"{r['pictures_per_s']:.2f}" for r in mine)
        print(f"| {w} | {pps:.2f} | {fmt(p50)} | {fmt(p99)} | {runs} |")


async def run(args: argparse.Namespace) -> None:
    bindir = pg.pg_bin()
    if bindir is None:
        raise SystemExit("PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    p = payload("4K")
    proc, relay_url = relay_bench.start_double([p])
    results = []
    try:
        relay_bench.set_default(relay_url, p)
        with pg.running_cluster(bindir) as server:
            for _ in range(args.repeats):
                for w in args.workers:
                    r = await cell(server, relay_url, w, args.jobs, args.seconds, args.warmup)
                    print(f"  {json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()})}", file=sys.stderr)
                    results.append(r)
    finally:
        relay_bench.stop_double(proc)
    print_table(results, args.jobs, args.repeats)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench cluster", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", nargs="*", type=int, default=[1, 2], help="worker processes per cell (default 1 2)")
    parser.add_argument("--jobs", type=int, default=8, help="4K jobs at once, whole cluster (default 8)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per cell (default 20)")
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds of load before measuring (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell; the table quotes medians (default 3)")
    parser.add_argument("--json", type=Path)
    asyncio.run(run(parser.parse_args(argv)))
    return 0
