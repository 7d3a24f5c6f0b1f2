"""Real bot processes (``python -m bot run --role …``) against the doubles and one PostgreSQL.

Each process gets its own data dir (its log goes to ``<dir>/process.log``) and the same
``NB_SECRET_KEY``, database, ``DISCORD_API_BASE`` and default relay, as an operator would run
them. :meth:`Cluster.kill` is ``kill -9`` by pid; :meth:`Cluster.close` SIGTERMs what is left.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

REPO = Path(__file__).resolve().parent.parent
TOKEN = "test-bot-token"  # the Discord double's default
SECRET = "cluster-test-passphrase-0123456789"
START_S = 90.0  # a cold interpreter importing discord.py on 2 busy cores


@dataclass
class BotProcess:
    name: str
    role: str
    data_dir: Path
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        path = self.data_dir / "process.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]
    processes: list[BotProcess] = field(default_factory=list)

    def spawn(self, role: str, **extra: str) -> BotProcess:
        name = f"{role}{sum(p.role == role for p in self.processes) + 1}"
        data_dir = self.root / name
        data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "NB_DATA_DIR": str(data_dir), "NB_WORKER_ID": name, **extra}
        log = open(data_dir / "process.log", "wb")  # noqa: SIM115 - the child owns it until it exits
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "run", "--role", role], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        process = BotProcess(name, role, data_dir, proc)
        self.processes.append(process)
        return process

    def kill(self, process: BotProcess) -> None:
        os.kill(process.pid, signal.SIGKILL)
        process.proc.wait(timeout=10)

    def check_alive(self) -> None:
        for p in self.processes:
            code = p.proc.poll()
            if code is not None and code != -signal.SIGKILL:
                raise AssertionError(f"{p.name} exited with {code}:\n{p.log()[-3000:]}")

    async def close(self) -> None:
        for p in self.processes:
            if p.proc.poll() is None:
                p.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in self.processes:
            while p.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if p.proc.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.proc.wait(timeout=5)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} (pid {p.pid}) ---\n{p.log()[-4000:]}" for p in self.processes)


def cluster_env(*, database_url: str, api_base: str, relay_url: str, api_key: str, **extra: str) -> dict[str, str]:
    return {
        "NB_ENV_FILE": os.devnull,
        "DISCORD_TOKEN": TOKEN,
        "DISCORD_API_BASE": api_base,
        "NB_DATABASE_URL": database_url,
        "NB_SECRET_KEY": SECRET,
        "NB_RELAY_URL": relay_url,
        "NB_RELAY_FORMAT": "gemini",
        "NB_RELAY_AUTH": "x-goog-api-key",
        "NB_API_KEY": api_key,
        "NB_LOG_LEVEL": "INFO",
        **extra,
    }


async def until(cluster: Cluster, check: Callable[[], bool], what: str, timeout: float = START_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        cluster.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}\n{cluster.logs()}")
        await asyncio.sleep(0.05)


async def rows(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()
