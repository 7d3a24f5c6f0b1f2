"""The bot as a process: stopped by signals mid-job, started again, and installed from its wheel.

Everything here runs the real entry points (``python -m bot run``, the ``nano-banana-bot``
console script) as subprocesses; only the environment points them at the Discord double and
the relay double on loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.doubles.discord_double import DiscordDouble
from tests.doubles.relay_double import Behaviour, RelayDouble
from tests.e2e import notice_paths

ROOT = Path(__file__).resolve().parent.parent
KEY = "life-key-123456"


def bot_env(data_dir: Path, dd: DiscordDouble, relay: RelayDouble, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NB_", "DISCORD_"))}
    env.update(
        {
            "NB_ENV_FILE": str(data_dir.parent / "absent.env"),
            "NB_DATA_DIR": str(data_dir),
            "DISCORD_TOKEN": dd.token,
            "DISCORD_API_BASE": dd.api_base,
            "NB_RELAY_URL": relay.url,
            "NB_RELAY_FORMAT": "gemini",
            "NB_API_KEY": KEY,
            **extra,
        }
    )
    return env


async def start(argv: list[str], env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv, cwd=str(cwd), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def gone(dd: DiscordDouble) -> None:
    """Until the double has noticed the old process's gateway socket close."""
    for _ in range(200):
        if not dd._live_sessions():
            return
        await asyncio.sleep(0.01)


async def first_start_serves_imagine(
    dd: DiscordDouble, relay: RelayDouble, proc: asyncio.subprocess.Process, channel: Any, user: Any
) -> bytes:
    """A bot process on its first start: commands synced, then one /imagine answered with the
    relay's picture. SIGTERM at the end, exit 0; returns its stderr."""
    try:
        await dd.wait_for("PUT", r"^/applications/\d+/commands$", timeout=60)
        await dd.wait_until_identified(timeout=30)
        mark = dd.mark()
        await dd.interact(dd.slash_interaction("imagine", channel=channel, user=user, options={"prompt": "a lighthouse"}))
        post = await dd.wait_for(
            "POST", rf"^/channels/{channel['id']}/messages$", since=mark, predicate=lambda c: bool(c.files), timeout=60
        )
        assert post.files[0].data == relay.images_served[-1]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"Traceback" not in err
    return err


def offers_retry(call: Any) -> bool:
    return call.status < 300 and "nb:retry:" in json.dumps(call.json)


async def test_sigterm_mid_job_20_times_exits_0_within_5_s_and_the_next_start_offers_retry(tmp_path: Path) -> None:
    with RelayDouble(api_key=KEY) as relay:
        # Every generation hangs until the client goes away: jobs are always running at SIGTERM.
        relay.default = Behaviour("hang")
        async with DiscordDouble() as dd:
            guild = dd.add_guild("Stop Guild")
            channel = dd.text_channels(guild)[0]
            members = [dd.add_member(guild, username=f"m{i}") for i in range(2)]
            env = bot_env(tmp_path / "data", dd, relay)
            timings: list[float] = []
            mark = dd.mark()
            for round_ in range(20):
                proc = await start([sys.executable, "-m", "bot", "run"], env, ROOT)
                try:
                    if round_ == 0:
                        await dd.wait_for("PUT", r"^/applications/\d+/commands$", since=mark, timeout=30)
                    else:
                        # The two jobs the last SIGTERM stopped come back as two Retry offers.
                        seen: set[str] = set()
                        while len(seen) < 2:
                            notice = await dd.wait_for("*", notice_paths(channel), since=mark, predicate=offers_retry, timeout=30)
                            mark = notice.index + 1
                            seen |= {
                                c["custom_id"]
                                for row in notice.json["components"]
                                for c in row["components"]
                                if c["custom_id"].startswith("nb:retry:")
                            }
                        assert len(seen) == 2, seen
                    await dd.wait_until_identified(timeout=30)
                    before = len(relay.requests)
                    for m in members:
                        await dd.interact(dd.slash_interaction("imagine", channel=channel, user=m, options={"prompt": f"round {round_}"}))
                    await asyncio.to_thread(relay.wait_for_requests, before + 2, 30)
                    mark = dd.mark()
                finally:
                    t0 = time.monotonic()
                    proc.send_signal(signal.SIGTERM if round_ % 4 else signal.SIGINT)
                    try:
                        _, err = await asyncio.wait_for(proc.communicate(), timeout=15)
                    finally:
                        if proc.returncode is None:
                            proc.kill()
                    timings.append(time.monotonic() - t0)
                assert proc.returncode == 0, (round_, err.decode()[-2000:])
                assert timings[-1] < 5.0, (round_, timings)
                assert b"Traceback" not in err and b"shutdown did not finish" not in err, err.decode()[-2000:]
                assert KEY.encode() not in err
                await gone(dd)
            print(f"stop times: max {max(timings):.2f} s, mean {sum(timings) / len(timings):.2f} s")


def _uv() -> str:
    """uv as ./scripts/test bootstrapped it (./.uv), or from PATH."""
    import shutil

    found = shutil.which("uv") or (str(ROOT / ".uv" / "bin" / "uv") if (ROOT / ".uv" / "bin" / "uv").is_file() else None)
    assert found, "uv not found: ./scripts/test installs it into ./.uv"
    return found


async def test_the_wheel_in_a_fresh_virtualenv_runs_from_another_directory(tmp_path: Path) -> None:
    """As an operator installs it: build the wheel, install it (with the locked dependencies)
    into a new virtualenv, start the `nano-banana-bot` console script from an unrelated folder.
    It finds its migrations inside the package, syncs the commands and serves /imagine."""
    import sqlite3

    uv = _uv()
    dist, venv, elsewhere = tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
    elsewhere.mkdir()
    quiet = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    quiet.pop("VIRTUAL_ENV", None)
    # From a copy of what the package is made of (as the Docker build context is), so
    # setuptools' scratch build/ and egg-info never land in the checkout.
    import shutil

    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("bot", "cogs", "migrations"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([uv, "build", "--wheel", "--out-dir", str(dist), str(source)], check=True, capture_output=True, env=quiet, timeout=300)
    wheel = next(dist.glob("nano_banana_bot-*.whl"))
    requirements = tmp_path / "requirements.txt"
    exported = subprocess.run(
        [uv, "export", "--locked", "--no-dev", "--no-hashes", "--no-emit-project", "--project", str(source)],
        check=True,
        capture_output=True,
        text=True,
        env=quiet,
        timeout=120,
    ).stdout
    requirements.write_text(exported)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    subprocess.run(
        [uv, "pip", "install", "--python", str(venv / "bin" / "python"), "-r", str(requirements), str(wheel)],
        check=True,
        capture_output=True,
        env=quiet,
        timeout=300,
    )
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import bot; print(bot.__file__)"], cwd=elsewhere, capture_output=True, text=True, check=True
    )
    assert where.stdout.startswith(str(venv)), where.stdout  # the installed copy, not the checkout

    with RelayDouble(api_key=KEY) as relay:
        async with DiscordDouble() as dd:
            guild = dd.add_guild("Wheel Guild")
            channel = dd.text_channels(guild)[0]
            alice = dd.add_member(guild, username="alice")
            data = tmp_path / "data"
            env = bot_env(data, dd, relay)
            proc = await start([str(venv / "bin" / "nano-banana-bot"), "run"], env, elsewhere)
            err = await first_start_serves_imagine(dd, relay, proc, channel, alice)
            assert b"voice will NOT be supported" not in err
    shipped = sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
    con = sqlite3.connect(data / "bot.sqlite3")
    applied = [row[0] for row in con.execute("SELECT version FROM schema_migrations ORDER BY version")]
    con.close()
    assert applied == [int(name[:4]) for name in shipped]
