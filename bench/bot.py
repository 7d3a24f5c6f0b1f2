"""python -m bench bot [--jobs 1 4 8 16] [--seconds 20] [--guilds 10 1000 10000] [--quick]

The whole bot under load, driven as Discord drives it: the real bot process
(``python -m bench.botproc``, which is ``python -m bot run`` plus a loop-lag probe) against the
Discord double (in this process) and the relay double (its own process) serving 4K answers.

For each N: N members keep 4K ``/imagine`` jobs queued so that N run at once (the bot's caps set
to N), and one more member sends a probe ``/imagine`` every 250 ms. Printed per N: interaction ack
latency (INTERACTION_CREATE written by the double -> the bot's callback POST received), the bot's
worst event-loop stall, pictures delivered per second, CPU per picture (the bot process's
user+system over the window / pictures; and split by thread: the event loop's, the Pillow
fitting threads', the rest), the bot process's peak RSS (VmHWM) and its RSS sampled every
250 ms (median over the window; ``rss_samples_mb`` in the JSON). ``NB_BENCH_*`` variables
reach the bot process (bench/botproc.py: ``NB_BENCH_ANSWER_SLOTS``).
Then start -> ready: process start and last GUILD_CREATE -> discord.py's ``ready`` dispatch, for
10 / 1,000 / 10,000 guilds.

Acks are timed by the double in this process, so they include this process's own delay in
reading the callback; the figures are an upper bound on what Discord would see.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.doubles.discord_double import Call, DiscordDouble

from . import __main__ as relay_bench
from .payloads import payload

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-key"

GOAL_ACK_P99_MS = 50.0
GOAL_ACK_MAX_MS = 150.0
GOAL_JOBS_PER_S = 5.0
GOAL_CPU_PER_JOB_S = 0.3
GOAL_RSS_MB = 450.0
GOAL_READY_S = 1.0


class TimedDouble(DiscordDouble):
    """The Discord double, stamping when each REST call arrived (for ack latency)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arrived: dict[int, float] = {}
        self.delivered: list[float] = []  # arrival times of result uploads

    def _notify_call(self, call: Call) -> None:
        now = time.monotonic()
        self.arrived[call.index] = now
        if call.method == "POST" and call.files and call.path.endswith("/messages"):
            self.delivered.append(now)
        super()._notify_call(call)


def proc_stat(pid: int) -> tuple[float, float]:
    """(CPU seconds user+system, VmHWM in MB) of a live process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    hwm = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return cpu, hwm


def read_probe(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class BotProcess:
    proc: asyncio.subprocess.Process
    probe_file: Path
    stderr: list[bytes] = field(default_factory=list)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def start_bot(dd: DiscordDouble, relay_url: str, data_dir: Path, **extra: str) -> BotProcess:
    # (NB_BENCH_* pass through: the instruments' own knobs, see bench/botproc.py)
    env = {k: v for k, v in os.environ.items() if k.startswith("NB_BENCH_") or not k.startswith(("NB_", "DISCORD_"))}
    probe = data_dir / "probe.jsonl"
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "NB_ENV_FILE": str(data_dir / "absent.env"),
            "NB_DATA_DIR": str(data_dir),
            "NB_BENCH_PROBE_FILE": str(probe),
            "DISCORD_TOKEN": dd.token,
            "DISCORD_API_BASE": dd.api_base,
            "NB_RELAY_URL": relay_url,
            "NB_RELAY_FORMAT": "gemini",
            "NB_RELAY_AUTH": "x-goog-api-key",
            "NB_API_KEY": API_KEY,
            "NB_ALLOW_PRIVATE_RELAYS": "1",
            "NB_LOG_LEVEL": "WARNING",
            **extra,
        }
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.botproc", cwd=str(ROOT), env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    bot = BotProcess(proc, probe)

    async def drain() -> None:
        assert proc.stderr is not None
        async for line in proc.stderr:
            bot.stderr.append(line)

    asyncio.get_running_loop().create_task(drain())
    return bot


async def wait_ready(bot: BotProcess, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in read_probe(bot.probe_file):
            if record["kind"] == "ready":
                return record
        if bot.proc.returncode is not None:
            break
        await asyncio.sleep(0.02)
    tail = b"".join(bot.stderr[-5:]).decode(errors="replace")
    raise SystemExit(f"the bot did not become ready: {tail}")


def ack_latencies(dd: TimedDouble, probes: list[dict[str, Any]]) -> list[float]:
    """Per answered probe: INTERACTION_CREATE written -> its callback POST received, in ms."""
    acks = []
    for interaction in probes:
        rec = dd._rec(interaction)
        path = f"/interactions/{interaction['id']}/{interaction['token']}/callback"
        callbacks = [c for c in dd.calls if c.method == "POST" and c.path == path]
        if rec.dispatched_at is not None and callbacks:
            acks.append((dd.arrived[callbacks[0].index] - rec.dispatched_at) * 1000)
    return acks


def rest_calls(dd: TimedDouble, t0: float, t1: float, delivered: int) -> dict[str, float]:
    """The bot's REST calls that arrived in the window, per picture, by method and route."""
    counts: dict[str, int] = {}
    for call in dd.calls:
        if t0 <= dd.arrived.get(call.index, -1.0) <= t1:
            route = re.sub(r"/\d+", "/{id}", re.sub(r"/interactions/(\d+)/[^/]+", "/interactions/{id}/{token}", call.path))
            route = re.sub(r"/webhooks/\{id\}/[^/]+", "/webhooks/{id}/{token}", route)
            counts[f"{call.method} {route}"] = counts.get(f"{call.method} {route}", 0) + 1
    return {k: round(v / delivered, 2) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])} if delivered else {}


def per_thread(samples: list[dict[str, Any]], delivered: int) -> dict[str, float]:
    """CPU per picture by kind of thread (bench/botproc.py's samples), over the window."""
    with_cpu = [r["cpu"] for r in samples if "cpu" in r]
    if len(with_cpu) < 2 or not delivered:
        return {}
    first, last = with_cpu[0], with_cpu[-1]
    return {f"cpu_{kind}_per_job_s": (last[kind] - first.get(kind, 0.0)) / delivered for kind in ("loop", "fit", "other") if kind in last}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def load_run(
    relay_url: str, jobs: int, seconds: float, probe_every: float, warmup: float, relay_pid: int | None = None
) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="nb-bench-bot-"))
    async with TimedDouble() as dd:
        guild = dd.add_guild("Bench Guild")
        channel = dd.text_channels(guild)[0]
        load_members = [dd.add_member(guild, username=f"load-{i}") for i in range(jobs)]
        probe_count = int(seconds / probe_every) + 4
        probe_members = [dd.add_member(guild, username=f"probe-{i}") for i in range(probe_count)]
        bot = await start_bot(dd, relay_url, data_dir, NB_MAX_JOBS=str(jobs), NB_MAX_JOBS_PER_GUILD=str(jobs), NB_MAX_JOBS_PER_USER="1")
        try:
            await dd.wait_until_identified(timeout=60)
            await wait_ready(bot, 60)
            await dd.wait_for("PUT", r"^/applications/\d+/commands$", timeout=60)
            submitted = 0
            stop = asyncio.Event()

            async def imagine(member: dict[str, Any], prompt: str) -> dict[str, Any]:
                return await dd.interact(
                    dd.slash_interaction("imagine", channel=channel, user=member, options={"prompt": prompt, "size": "4K"})
                )

            async def load() -> None:
                # Keep about 2N jobs outstanding so N are always running (the per-member cap is 1).
                nonlocal submitted
                turn = 0
                while not stop.is_set():
                    if submitted - len(dd.delivered) < 2 * jobs:
                        await imagine(load_members[turn % jobs], f"load picture {turn}")
                        submitted += 1
                        turn += 1
                    else:
                        await asyncio.sleep(0.02)

            loader = asyncio.create_task(load())
            await asyncio.sleep(warmup)  # reach steady state: N jobs running
            cpu0, _ = proc_stat(bot.proc.pid)
            bench_cpu0 = time.process_time()
            relay0 = proc_stat(relay_pid)[0] if relay_pid else 0.0
            t0_wall, t0 = time.time(), time.monotonic()
            delivered0 = len(dd.delivered)
            probes: list[dict[str, Any]] = []
            for i in range(int(seconds / probe_every)):
                started = time.monotonic()
                probes.append(await imagine(probe_members[i], f"probe {i}"))
                submitted += 1
                await asyncio.sleep(max(0.0, probe_every - (time.monotonic() - started)))
            t1, t1_wall = time.monotonic(), time.time()
            cpu1, hwm = proc_stat(bot.proc.pid)
            bench_cpu1 = time.process_time()
            relay1 = proc_stat(relay_pid)[0] if relay_pid else 0.0
            delivered = sum(1 for t in dd.delivered if t0 <= t <= t1)
            stop.set()
            await loader
            await asyncio.sleep(1.0)  # let the last probes' acks arrive
            acks = ack_latencies(dd, probes)
            samples = [r for r in read_probe(bot.probe_file) if r["kind"] == "lag" and t0_wall <= r["t"] <= t1_wall]
            lags = [r["worst_ms"] for r in samples]
            rss = [r["rss_mb"] for r in samples if "rss_mb" in r]
            threads = per_thread(samples, delivered)
            window = t1 - t0
            return {
                "jobs": jobs,
                "probes": len(probes),
                "acked": len(acks),
                "ack_p50_ms": statistics.median(acks) if acks else float("nan"),
                "ack_p99_ms": pct(acks, 0.99),
                "ack_max_ms": max(acks) if acks else float("nan"),
                "worst_stall_ms": max(lags) if lags else float("nan"),
                "jobs_per_s": delivered / window,
                "cpu_per_job_s": (cpu1 - cpu0) / delivered if delivered else float("nan"),
                "peak_rss_mb": hwm,
                "rss_p50_mb": statistics.median(rss) if rss else float("nan"),
                "rss_samples_mb": [round(v) for v in rss[:: max(1, len(rss) // 15)]],
                **threads,
                # The relay double's own CPU (it shares the cores): what serving the answers costs.
                "relay_double_cpu_per_job_s": (relay1 - relay0) / delivered if delivered and relay_pid else float("nan"),
                # This process: the Discord double and the load (also on the same cores).
                "discord_double_cpu_per_job_s": (bench_cpu1 - bench_cpu0) / delivered if delivered else float("nan"),
                "rest_calls_per_job": rest_calls(dd, t0, t1, delivered),
                "delivered": delivered,
                "window_s": window,
                "delivered_before_window": delivered0,
            }
        finally:
            await bot.stop()


async def ready_run(relay_url: str, guilds: int) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="nb-bench-ready-"))
    async with TimedDouble() as dd:
        for i in range(guilds):
            dd.add_guild(f"Guild {i}")
        first = next(iter(dd.guilds.values()))
        channel = dd.text_channels(first)[0]
        member = dd.add_member(first, username="first-user")
        # A first start syncs commands and writes its stamp; time the second, as a restart.
        for _attempt in range(2):
            began = time.time()
            bot = await start_bot(dd, relay_url, data_dir)
            try:
                await dd.wait_until_identified(timeout=120)
                # A member's command as soon as the gateway is up: when is it first answered?
                interaction = await dd.interact(dd.slash_interaction("quota", channel=channel, user=member))
                ready = await wait_ready(bot, 300)
                callback = await dd.wait_for("POST", rf"^/interactions/{interaction['id']}/", timeout=60)
                first_answer = time.time() - (time.monotonic() - dd.arrived[callback.index])
                start = next(r for r in read_probe(bot.probe_file) if r["kind"] == "start")
                _, hwm = proc_stat(bot.proc.pid)
            finally:
                await bot.stop()
            bot.probe_file.unlink()
        return {
            "guilds": guilds,
            "start_to_ready_s": ready["t"] - start["t"],
            "spawn_to_ready_s": ready["t"] - began,
            "start_to_first_answer_s": first_answer - start["t"],
            "rss_mb": hwm,
        }


def fmt(v: float, unit: str = "ms") -> str:
    return f"{v:.1f} {unit}" if v < 100 else f"{v:.0f} {unit}"


def print_tables(load: list[dict[str, Any]], ready: list[dict[str, Any]]) -> None:
    print(f"Whole bot: python -m bot run (+ loop probe) vs the Discord double and the relay double, 4K answers. {os.cpu_count()} CPUs.")
    print()
    if load:
        print_load(load)
    print_ready(ready)
    print_goals(load, ready)


def print_load(load: list[dict[str, Any]]) -> None:
    print(
        "| jobs at once | probes acked | ack p50 | ack p99 | ack max | worst loop stall | pictures/s | CPU / picture"
        " | of which loop thread / fitting threads / others | peak RSS (VmHWM) | RSS median over the window |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    nan = float("nan")
    for r in load:
        split = " / ".join(f"{r.get(f'cpu_{kind}_per_job_s', nan):.3f}" for kind in ("loop", "fit", "other"))
        print(
            f"| {r['jobs']} | {r['acked']}/{r['probes']} | {fmt(r['ack_p50_ms'])} | {fmt(r['ack_p99_ms'])} | {fmt(r['ack_max_ms'])}"
            f" | {fmt(r['worst_stall_ms'])} | {r['jobs_per_s']:.2f} | {r['cpu_per_job_s']:.3f} s | {split} s"
            f" | {r['peak_rss_mb']:.0f} MB | {r.get('rss_p50_mb', nan):.0f} MB |"
        )


def print_ready(ready: list[dict[str, Any]]) -> None:
    if ready:
        print()
        print("| guilds | start -> ready (in process) | spawn -> ready | start -> first command answered | RSS at ready |")
        print("|---:|---:|---:|---:|---:|")
        for r in ready:
            print(
                f"| {r['guilds']:,} | {r['start_to_ready_s']:.2f} s | {r['spawn_to_ready_s']:.2f} s"
                f" | {r['start_to_first_answer_s']:.2f} s | {r['rss_mb']:.0f} MB |"
            )


def print_goals(load: list[dict[str, Any]], ready: list[dict[str, Any]]) -> None:
    print()
    top = max(load, key=lambda r: r["jobs"]) if load else None
    if top:
        ok = top["ack_p99_ms"] <= GOAL_ACK_P99_MS and top["ack_max_ms"] <= GOAL_ACK_MAX_MS
        print(
            f"Goal: ack p99 <= {GOAL_ACK_P99_MS:.0f} ms and max <= {GOAL_ACK_MAX_MS:.0f} ms at {top['jobs']} jobs: {relay_bench.verdict(ok)}"
        )
        best = max(r["jobs_per_s"] for r in load)
        print(f"Goal: >= {GOAL_JOBS_PER_S} 4K pictures/s: best {best:.2f} -> {relay_bench.verdict(best >= GOAL_JOBS_PER_S)}")
        cpu = statistics.median(r["cpu_per_job_s"] for r in load)
        print(f"Goal: CPU per 4K picture <= {GOAL_CPU_PER_JOB_S} s: median {cpu:.3f} s -> {relay_bench.verdict(cpu <= GOAL_CPU_PER_JOB_S)}")
        print(
            f"Goal: peak RSS <= {GOAL_RSS_MB:.0f} MB at {top['jobs']} jobs: {top['peak_rss_mb']:.0f} MB -> {relay_bench.verdict(top['peak_rss_mb'] <= GOAL_RSS_MB)}"
        )
    for r in ready:
        if r["guilds"] == 1000:
            print(
                f"Goal: start -> ready <= {GOAL_READY_S} s for 1,000 guilds: {r['start_to_ready_s']:.2f} s -> {relay_bench.verdict(r['start_to_ready_s'] <= GOAL_READY_S)}"
            )


async def run(args: argparse.Namespace) -> None:
    p = payload("4K")
    proc, url = relay_bench.start_double([p])
    try:
        relay_bench.set_default(url, p)
        load = []
        for n in args.jobs:
            r = await load_run(url, n, args.seconds, 0.25, args.warmup, proc.pid)
            print(
                f"  {n} jobs: {json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()})}",
                file=sys.stderr,
                flush=True,
            )
            load.append(r)
        ready = []
        for g in args.guilds:
            r = await ready_run(url, g)
            print(f"  {g} guilds: {r}", file=sys.stderr, flush=True)
            ready.append(r)
    finally:
        relay_bench.stop_double(proc)
    print_tables(load, ready)
    if args.json:
        args.json.write_text(json.dumps({"load": load, "ready": ready}, indent=2))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench bot", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", nargs="*", type=int, default=None, help="concurrent 4K jobs (default 1 4 8 16; none: skip)")
    parser.add_argument("--seconds", type=float, default=None, help="measured window per N (default 30; --quick 10)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of load before measuring (default 5)")
    parser.add_argument("--guilds", nargs="*", type=int, default=None, help="start -> ready for these guild counts (default 10 1000 10000)")
    parser.add_argument("--quick", action="store_true", help="4 and 16 jobs, 10 s windows, 10 and 1,000 guilds")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    args.jobs = args.jobs if args.jobs is not None else ([4, 16] if args.quick else [1, 4, 8, 16])
    args.seconds = args.seconds or (10.0 if args.quick else 30.0)
    args.warmup = args.warmup if args.warmup is not None else 5.0
    args.guilds = args.guilds if args.guilds is not None else ([10, 1000] if args.quick else [10, 1000, 10000])
    asyncio.run(run(args))
    return 0
