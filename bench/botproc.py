"""The real bot process, with the benchmark's instruments: ``python -m bench.botproc`` runs
exactly what ``python -m bot run`` runs, plus

- a loop-lag probe (a task sleeping 1 ms; how late it wakes is the stall every other task on the
  loop sees), its worst value per 250 ms written as a line to ``NB_BENCH_PROBE_FILE``, with the
  process's RSS then and the CPU time used so far by the loop's thread, the fitting threads and
  the others;
- the moment discord.py dispatches ``ready`` (all shards' guilds received), written there too;
- ``NB_BENCH_ANSWER_SLOTS``: the answer gate's size (bot/relay/gate.py) for a comparison run,
  ``0`` for no gate;
- ``NB_BENCH_PROFILE``: a file for a cProfile of the event loop's thread, written at exit.

Nothing here changes how the bot behaves: the probe costs ~1000 wake-ups a second (measured
against a bare loop, below 1% of one core).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from typing import Any, TextIO

OUT: TextIO | None = None


def emit(**record: Any) -> None:
    if OUT is not None:
        OUT.write(json.dumps(record) + "\n")
        OUT.flush()


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def thread_cpu() -> dict[str, float]:
    """CPU seconds so far per kind of thread: the event loop's (the main thread), the Pillow
    fitting threads (``fit_*``), aiosqlite's, and the rest."""
    out: dict[str, float] = {}
    for thread in threading.enumerate():
        if thread.ident is None:
            continue
        try:
            cpu = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except (OSError, AttributeError):  # the thread just ended, or not Linux
            continue
        name = thread.name
        kind = (
            "loop"
            if thread is threading.main_thread()
            else "fit"
            if name.startswith("fit")
            else "intake"
            if name.startswith("intake")
            else "other"
        )
        out[kind] = out.get(kind, 0.0) + cpu
    return out


async def lag_probe() -> None:
    bucket_start = time.monotonic()
    worst = 0.0
    while True:
        before = time.monotonic()
        await asyncio.sleep(0.001)
        now = time.monotonic()
        worst = max(worst, now - before - 0.001)
        if now - bucket_start >= 0.25:
            # (threads that ended are missing from a sample: the fitting pool's threads live as
            # long as the process, so the figures of interest are whole)
            emit(kind="lag", t=time.time(), worst_ms=worst * 1000, rss_mb=rss_mb(), cpu=thread_cpu())
            bucket_start, worst = now, 0.0


class ProbedPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()
        loop.call_soon(lambda: loop.create_task(lag_probe(), name="bench-lag-probe"))
        return loop


def main() -> int:
    global OUT
    OUT = open(os.environ["NB_BENCH_PROBE_FILE"], "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    emit(kind="start", t=time.time())
    asyncio.set_event_loop_policy(ProbedPolicy())

    import discord

    original = discord.Client.dispatch

    def dispatch(self: discord.Client, event: str, /, *args: Any, **kwargs: Any) -> None:
        if event == "ready":
            emit(kind="ready", t=time.time())
        original(self, event, *args, **kwargs)

    discord.Client.dispatch = dispatch  # type: ignore[method-assign]

    slots = os.environ.get("NB_BENCH_ANSWER_SLOTS")
    if slots is not None:
        from bot.relay import gate

        gate.SLOTS = int(slots) or 1_000_000

    from bot.__main__ import main as bot_main

    profile = os.environ.get("NB_BENCH_PROFILE")
    if not profile:
        return bot_main(["run", *sys.argv[1:]])
    # The event loop's thread under cProfile (it sees that thread only), written when the bot
    # stops: where the loop's CPU goes under load. It slows the loop, so not for the tables.
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        return bot_main(["run", *sys.argv[1:]])
    finally:
        profiler.disable()
        profiler.dump_stats(profile)


if __name__ == "__main__":
    raise SystemExit(main())
