"""`python -m bot health` (the Docker HEALTHCHECK) against the heartbeat a real bot writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bot import health
from tests.doubles.discord_double import DiscordDouble
from tests.doubles.relay_double import RelayDouble
from tests.test_lifecycle import ROOT, bot_env, start


def check(data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NB_", "DISCORD_"))}
    env.update({"NB_DATA_DIR": str(data_dir), "NB_ENV_FILE": str(data_dir / "absent.env")})
    return subprocess.run([sys.executable, "-m", "bot", "health"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_stale_missing_and_disconnected_heartbeats_are_unhealthy(tmp_path: Path) -> None:
    assert check(tmp_path).returncode == 1  # never started
    health.write(tmp_path, True)
    ok = check(tmp_path)
    assert ok.returncode == 0 and "connected" in ok.stdout
    (tmp_path / health.FILE).write_text(json.dumps({"connected": True, "at": time.time() - health.STALE_S - 5, "pid": 1}))
    stale = check(tmp_path)
    assert stale.returncode == 1 and "not running or is stuck" in stale.stderr
    health.write(tmp_path, False)
    assert check(tmp_path).returncode == 1


async def test_a_running_bot_is_healthy_and_unhealthy_after_it_stops(tmp_path: Path) -> None:
    import asyncio

    with RelayDouble(api_key="life-key-123456") as relay:
        async with DiscordDouble() as dd:
            dd.add_guild("Health Guild")
            data = tmp_path / "data"
            proc = await start([sys.executable, "-m", "bot", "run"], bot_env(data, dd, relay), ROOT)
            try:
                await dd.wait_until_identified(timeout=30)
                for _ in range(100):
                    result = await asyncio.to_thread(check, data)
                    if result.returncode == 0:
                        break
                    await asyncio.sleep(0.1)
                assert result.returncode == 0, result.stderr
            finally:
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proc.communicate(), timeout=15)
            after = await asyncio.to_thread(check, data)
            assert after.returncode == 1 and "not connected" in after.stderr
